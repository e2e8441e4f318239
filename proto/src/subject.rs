//! NATS subjects: the only place subject strings are built.
//!
//! Every identifier that goes into a subject is validated first ([`validate_id`]), so a stray
//! `.`, `*` or `>` can never widen a subscription or reach another lattice.

use crate::ProtoError;

/// Prefix shared by every Ferry subject.
pub const PREFIX: &str = "ferry";

/// Operation name of a link put carried in an envelope on [`link_put`].
pub const OP_LINK_PUT: &str = "ferry:link/put";
/// Operation name of a link delete carried in an envelope on [`link_del`].
pub const OP_LINK_DEL: &str = "ferry:link/del";
/// Operation name of a provider's request for its links, resolved, on [`link_sync`].
pub const OP_LINK_SYNC: &str = "ferry:link/sync";
/// Operation name of a health request carried in an envelope on [`health`].
pub const OP_HEALTH: &str = "ferry:provider/health";
/// Operation name of a shutdown request carried in an envelope on [`shutdown`].
pub const OP_SHUTDOWN: &str = "ferry:provider/shutdown";

/// Namespace of the operations that only control subjects carry.
const CONTROL_NAMESPACE: &str = "ferry:";

/// The kind of subject an envelope arrives on. Each kind accepts only its own operations, so a
/// captured invocation cannot be republished where it would mean something else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// [`rpc`]: data-plane operations (anything outside the `ferry:` namespace).
    Rpc,
    /// [`link_put`]: [`OP_LINK_PUT`] only.
    LinkPut,
    /// [`link_del`]: [`OP_LINK_DEL`] only.
    LinkDel,
    /// [`link_sync`]: [`OP_LINK_SYNC`] only.
    LinkSync,
    /// [`health`]: [`OP_HEALTH`] only.
    Health,
    /// [`shutdown`]: [`OP_SHUTDOWN`] only.
    Shutdown,
}

impl Channel {
    /// Whether `operation` may arrive on this kind of subject.
    pub fn admits(self, operation: &str) -> bool {
        match self {
            Channel::Rpc => !operation.starts_with(CONTROL_NAMESPACE),
            Channel::LinkPut => operation == OP_LINK_PUT,
            Channel::LinkDel => operation == OP_LINK_DEL,
            Channel::LinkSync => operation == OP_LINK_SYNC,
            Channel::Health => operation == OP_HEALTH,
            Channel::Shutdown => operation == OP_SHUTDOWN,
        }
    }

    /// The name used in errors and logs.
    pub fn name(self) -> &'static str {
        match self {
            Channel::Rpc => "rpc",
            Channel::LinkPut => "link put",
            Channel::LinkDel => "link del",
            Channel::LinkSync => "link sync",
            Channel::Health => "health",
            Channel::Shutdown => "shutdown",
        }
    }
}

/// Check that `value` can be used as an identifier of kind `what`: 1–128 characters from
/// `[A-Za-z0-9_-]`.
///
/// # Errors
/// [`ProtoError::InvalidId`] naming the offending value.
pub fn validate_id(what: &'static str, value: &str) -> Result<(), ProtoError> {
    let reason = if value.is_empty() {
        Some("must not be empty")
    } else if value.len() > 128 {
        Some("must be at most 128 characters")
    } else if !value.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        Some("may contain only letters, digits, '-' and '_'")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(ProtoError::InvalidId { what, value: value.to_owned(), reason }),
        None => Ok(()),
    }
}

/// `ferry.rpc.{lattice}.{target}`: invocations to a component or provider. Subscribers use the
/// queue group `{target}`.
///
/// # Errors
/// [`ProtoError::InvalidId`] if an identifier is not valid.
pub fn rpc(lattice: &str, target: &str) -> Result<String, ProtoError> {
    validate_id("lattice", lattice)?;
    validate_id("target id", target)?;
    Ok(format!("{PREFIX}.rpc.{lattice}.{target}"))
}

/// `ferry.link.{lattice}.{provider}.put`: link put notifications, to every instance.
///
/// # Errors
/// [`ProtoError::InvalidId`] if an identifier is not valid.
pub fn link_put(lattice: &str, provider: &str) -> Result<String, ProtoError> {
    link(lattice, provider, "put")
}

/// `ferry.link.{lattice}.{provider}.del`: link delete notifications, to every instance.
///
/// # Errors
/// [`ProtoError::InvalidId`] if an identifier is not valid.
pub fn link_del(lattice: &str, provider: &str) -> Result<String, ProtoError> {
    link(lattice, provider, "del")
}

/// `ferry.link.{lattice}.{provider}.sync`: a provider's request for its links with their
/// config resolved, answered (sealed for it) by one host. Providers never read config from the
/// lattice bucket: this and link put notifications are how it reaches them.
///
/// # Errors
/// [`ProtoError::InvalidId`] if an identifier is not valid.
pub fn link_sync(lattice: &str, provider: &str) -> Result<String, ProtoError> {
    link(lattice, provider, "sync")
}

/// `ferry.link.{lattice}.*.sync`: every provider's [`link_sync`] requests, for hosts.
///
/// # Errors
/// [`ProtoError::InvalidId`] if the lattice is not valid.
pub fn all_link_syncs(lattice: &str) -> Result<String, ProtoError> {
    validate_id("lattice", lattice)?;
    Ok(format!("{PREFIX}.link.{lattice}.*.sync"))
}

fn link(lattice: &str, provider: &str, verb: &str) -> Result<String, ProtoError> {
    validate_id("lattice", lattice)?;
    validate_id("provider id", provider)?;
    Ok(format!("{PREFIX}.link.{lattice}.{provider}.{verb}"))
}

/// `ferry.health.{lattice}.{provider}`: health requests, answered by every instance.
///
/// # Errors
/// [`ProtoError::InvalidId`] if an identifier is not valid.
pub fn health(lattice: &str, provider: &str) -> Result<String, ProtoError> {
    validate_id("lattice", lattice)?;
    validate_id("provider id", provider)?;
    Ok(format!("{PREFIX}.health.{lattice}.{provider}"))
}

/// `ferry.shutdown.{lattice}.{provider}[.{instance}]`: graceful stop of every instance, or of
/// one.
///
/// # Errors
/// [`ProtoError::InvalidId`] if an identifier is not valid.
pub fn shutdown(lattice: &str, provider: &str, instance: Option<&str>) -> Result<String, ProtoError> {
    validate_id("lattice", lattice)?;
    validate_id("provider id", provider)?;
    match instance {
        Some(instance) => {
            validate_id("instance id", instance)?;
            Ok(format!("{PREFIX}.shutdown.{lattice}.{provider}.{instance}"))
        }
        None => Ok(format!("{PREFIX}.shutdown.{lattice}.{provider}")),
    }
}

/// `_INBOX.ferry.{lattice}.{identity}`: the prefix of a provider's (or client's) reply
/// subjects. Each identity gets its own, so a NATS account can let it subscribe to its own
/// replies and no one else's ([`crate::permissions`]); it still falls under `_INBOX.>` for
/// servers that grant that.
///
/// # Errors
/// [`ProtoError::InvalidId`] if an identifier is not valid.
pub fn inbox_prefix(lattice: &str, identity: &str) -> Result<String, ProtoError> {
    validate_id("lattice", lattice)?;
    validate_id("identity", identity)?;
    Ok(format!("_INBOX.{PREFIX}.{lattice}.{identity}"))
}

/// `ferry.ctl.v1.{lattice}.{resource}.{verb}[.{host}]`: the control interface.
///
/// # Errors
/// [`ProtoError::InvalidId`] if an identifier is not valid.
pub fn ctl(lattice: &str, resource: &str, verb: &str, host: Option<&str>) -> Result<String, ProtoError> {
    validate_id("lattice", lattice)?;
    validate_id("resource", resource)?;
    validate_id("verb", verb)?;
    match host {
        Some(host) => {
            validate_id("host id", host)?;
            Ok(format!("{PREFIX}.ctl.v1.{lattice}.{resource}.{verb}.{host}"))
        }
        None => Ok(format!("{PREFIX}.ctl.v1.{lattice}.{resource}.{verb}")),
    }
}

/// `ferry.ctl.v1.{lattice}.*.*`: every command sent to the lattice without a host id (hosts
/// subscribe per command, each as its scope says; this wildcard is for tools that watch).
///
/// # Errors
/// [`ProtoError::InvalidId`] if the lattice is not valid.
pub fn ctl_shared(lattice: &str) -> Result<String, ProtoError> {
    validate_id("lattice", lattice)?;
    Ok(format!("{PREFIX}.ctl.v1.{lattice}.*.*"))
}

/// `ferry.ctl.v1.{lattice}.*.*.{host}`: commands addressed to one host.
///
/// # Errors
/// [`ProtoError::InvalidId`] if an identifier is not valid.
pub fn ctl_for_host(lattice: &str, host: &str) -> Result<String, ProtoError> {
    validate_id("lattice", lattice)?;
    validate_id("host id", host)?;
    Ok(format!("{PREFIX}.ctl.v1.{lattice}.*.*.{host}"))
}

/// Split a control subject into `(resource, verb, host)`; `None` if it is not one.
pub fn parse_ctl<'a>(lattice: &str, subject: &'a str) -> Option<(&'a str, &'a str, Option<&'a str>)> {
    let rest = subject.strip_prefix(PREFIX)?.strip_prefix(".ctl.v1.")?.strip_prefix(lattice)?.strip_prefix('.')?;
    let mut parts = rest.split('.');
    let resource = parts.next()?;
    let verb = parts.next()?;
    let host = parts.next();
    if parts.next().is_some() {
        return None;
    }
    Some((resource, verb, host))
}

/// `ferry.evt.{lattice}.{event}`: CloudEvents.
///
/// # Errors
/// [`ProtoError::InvalidId`] if an identifier is not valid.
pub fn event(lattice: &str, event: &str) -> Result<String, ProtoError> {
    validate_id("lattice", lattice)?;
    validate_id("event name", event)?;
    Ok(format!("{PREFIX}.evt.{lattice}.{event}"))
}

/// `ferry.evt.{lattice}.>`: every event of a lattice, for watchers.
///
/// # Errors
/// [`ProtoError::InvalidId`] if the lattice is not valid.
pub fn all_events(lattice: &str) -> Result<String, ProtoError> {
    validate_id("lattice", lattice)?;
    Ok(format!("{PREFIX}.evt.{lattice}.>"))
}

/// `ferry.stream.{lattice}.{stream}`: pulls of one chunked body (see [`crate::stream`]),
/// answered by the one process that offers it.
///
/// # Errors
/// [`ProtoError::InvalidId`] if an identifier is not valid.
pub fn stream(lattice: &str, stream: &str) -> Result<String, ProtoError> {
    validate_id("lattice", lattice)?;
    validate_id("stream id", stream)?;
    Ok(format!("{PREFIX}.stream.{lattice}.{stream}"))
}

/// `ferry.stream.{lattice}.*`: every chunked body of a lattice, for permissions.
///
/// # Errors
/// [`ProtoError::InvalidId`] if the lattice is not valid.
pub fn all_streams(lattice: &str) -> Result<String, ProtoError> {
    validate_id("lattice", lattice)?;
    Ok(format!("{PREFIX}.stream.{lattice}.*"))
}

/// `ferry.rpc.{lattice}.*`: invocations to every target of a lattice, for permissions.
///
/// # Errors
/// [`ProtoError::InvalidId`] if the lattice is not valid.
pub fn all_rpc(lattice: &str) -> Result<String, ProtoError> {
    validate_id("lattice", lattice)?;
    Ok(format!("{PREFIX}.rpc.{lattice}.*"))
}

/// `FERRY_{lattice}_DATA`: the lattice's JetStream KV bucket, the source of truth for links,
/// config and component references.
///
/// # Errors
/// [`ProtoError::InvalidId`] if the lattice is not valid.
pub fn data_bucket(lattice: &str) -> Result<String, ProtoError> {
    validate_id("lattice", lattice)?;
    Ok(format!("FERRY_{lattice}_DATA"))
}

/// `FERRY_{lattice}_COMPONENTS`: the lattice's JetStream object store of uploaded components,
/// each stored under the SHA-256 of its bytes (see [`crate::image`]).
///
/// # Errors
/// [`ProtoError::InvalidId`] if the lattice is not valid.
pub fn component_store(lattice: &str) -> Result<String, ProtoError> {
    validate_id("lattice", lattice)?;
    Ok(format!("FERRY_{lattice}_COMPONENTS"))
}

/// `FERRY_{lattice}_SEEN`: the lattice-wide record of state-changing invocations already
/// carried out, kept for twice the replay window.
///
/// # Errors
/// [`ProtoError::InvalidId`] if the lattice is not valid.
pub fn seen_bucket(lattice: &str) -> Result<String, ProtoError> {
    validate_id("lattice", lattice)?;
    Ok(format!("FERRY_{lattice}_SEEN"))
}

/// `ferry-kv-{n}-{lattice}-{bucket}`: the JetStream KV bucket that holds a component's
/// key-value bucket on the NATS backend when its link names no prefix of its own. `n` is the
/// length of the lattice name, so no two (lattice, bucket) pairs share a name even though both
/// may hold `-`; lattices on one NATS therefore never see each other's data. The provider checks
/// `bucket` against its backend's rules.
///
/// # Errors
/// [`ProtoError::InvalidId`] if the lattice is not valid.
pub fn component_kv_bucket(lattice: &str, bucket: &str) -> Result<String, ProtoError> {
    Ok(ComponentStoreNames::lattice(ComponentStoreKind::KeyValue, lattice)?.primary(bucket))
}

/// `ferry-blob-{n}-{lattice}-{container}`: the JetStream object store that holds a component's
/// blob container on the NATS backend when its link names no prefix of its own; named as
/// [`component_kv_bucket`] names key-value buckets.
///
/// # Errors
/// [`ProtoError::InvalidId`] if the lattice is not valid.
pub fn component_object_store(lattice: &str, container: &str) -> Result<String, ProtoError> {
    Ok(ComponentStoreNames::lattice(ComponentStoreKind::Blob, lattice)?.primary(container))
}

/// Which of a component's stores a provider keeps on NATS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ComponentStoreKind {
    /// A key-value bucket: a JetStream KV bucket ([`component_kv_bucket`]).
    KeyValue,
    /// A blob container: a JetStream object store ([`component_object_store`]).
    Blob,
}

impl ComponentStoreKind {
    /// The prefix every store of this kind had before stores were scoped by lattice (`kv-`,
    /// `blob_`); stores made then are still found under it, so no data disappears on upgrade.
    pub fn legacy_prefix(self) -> &'static str {
        match self {
            Self::KeyValue => "kv-",
            Self::Blob => "blob_",
        }
    }
}

/// How a provider names the JetStream store behind a component's bucket or container: the one
/// definition both the key-value and the blobstore provider use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ComponentStoreNames {
    /// `{prefix}{name}` verbatim: the link set `bucket_prefix`. Not scoped by lattice, so an
    /// operator can share or move data on purpose.
    Prefixed(String),
    /// One store the link names (`bucket`, as wasmCloud's NATS key-value provider reads it),
    /// verbatim: every bucket a component opens over the link is this store.
    Fixed(String),
    /// Scoped by lattice ([`component_kv_bucket`], [`component_object_store`]); a store from
    /// before scoping, `{legacy prefix}{name}`, is used while no scoped one exists.
    Lattice {
        /// Key-value bucket or blob container.
        kind: ComponentStoreKind,
        /// The lattice, already validated.
        lattice: String,
    },
}

impl ComponentStoreNames {
    /// Lattice-scoped names for `lattice`.
    ///
    /// # Errors
    /// [`ProtoError::InvalidId`] if the lattice is not valid.
    pub fn lattice(kind: ComponentStoreKind, lattice: &str) -> Result<Self, ProtoError> {
        validate_id("lattice", lattice)?;
        Ok(Self::Lattice { kind, lattice: lattice.to_owned() })
    }

    /// The name `name` is created under.
    pub fn primary(&self, name: &str) -> String {
        match self {
            Self::Prefixed(prefix) => format!("{prefix}{name}"),
            Self::Fixed(store) => store.clone(),
            Self::Lattice { kind: ComponentStoreKind::KeyValue, lattice } => {
                format!("ferry-kv-{}-{lattice}-{name}", lattice.len())
            }
            Self::Lattice { kind: ComponentStoreKind::Blob, lattice } => {
                format!("ferry-blob-{}-{lattice}-{name}", lattice.len())
            }
        }
    }

    /// The name a store from before lattice scoping had, looked up when no primary one exists.
    /// Legacy names never take the primary names' shape, so no component can reach another
    /// lattice's data through one.
    pub fn legacy(&self, name: &str) -> Option<String> {
        match self {
            Self::Prefixed(_) | Self::Fixed(_) => None,
            Self::Lattice { kind, .. } => Some(format!("{}{name}", kind.legacy_prefix())),
        }
    }
}

/// The JetStream stream behind KV bucket `bucket` (`KV_{bucket}`).
pub fn kv_stream(bucket: &str) -> String {
    format!("KV_{bucket}")
}

/// The JetStream stream behind object store `store` (`OBJ_{store}`).
pub fn object_stream(store: &str) -> String {
    format!("OBJ_{store}")
}

/// Prefixes of JetStream names that belong to the lattice or to JetStream itself: the lattice's
/// buckets (`FERRY_…`, in any case) and the streams behind every KV bucket (`KV_…`) and object
/// store (`OBJ_…`).
pub const RESERVED_STORE_PREFIXES: [&str; 3] = ["FERRY_", "KV_", "OBJ_"];

/// Whether `name`, a JetStream bucket or stream name a provider would use on a component's
/// behalf, belongs to the lattice or to JetStream. Providers refuse such names with `denied`,
/// so a component can never read or write the lattice's links, config or records.
pub fn is_reserved_store_name(name: &str) -> bool {
    RESERVED_STORE_PREFIXES
        .iter()
        .any(|prefix| name.len() >= prefix.len() && name[..prefix.len()].eq_ignore_ascii_case(prefix))
        || name.starts_with('$')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_have_the_documented_shape() {
        assert_eq!(rpc("prod", "c1").unwrap(), "ferry.rpc.prod.c1");
        assert_eq!(link_put("prod", "kv").unwrap(), "ferry.link.prod.kv.put");
        assert_eq!(link_del("prod", "kv").unwrap(), "ferry.link.prod.kv.del");
        assert_eq!(health("prod", "kv").unwrap(), "ferry.health.prod.kv");
        assert_eq!(shutdown("prod", "kv", Some("i1")).unwrap(), "ferry.shutdown.prod.kv.i1");
        assert_eq!(ctl("prod", "link", "put", None).unwrap(), "ferry.ctl.v1.prod.link.put");
        assert_eq!(event("prod", "link_set").unwrap(), "ferry.evt.prod.link_set");
        assert_eq!(data_bucket("prod").unwrap(), "FERRY_prod_DATA");
        assert_eq!(seen_bucket("prod").unwrap(), "FERRY_prod_SEEN");
        assert_eq!(stream("prod", "s1").unwrap(), "ferry.stream.prod.s1");
    }

    #[test]
    fn wildcards_and_dots_are_rejected() {
        for bad in ["", "a.b", "*", ">", "a b", "ä"] {
            assert!(rpc("prod", bad).is_err(), "{bad:?} accepted");
            assert!(rpc(bad, "x").is_err(), "{bad:?} accepted as lattice");
        }
    }

    #[test]
    fn lattice_store_names_are_reserved_in_any_case() {
        for name in
            [&data_bucket("prod").unwrap()[..], "ferry_x", "Ferry_Other_DATA", "KV_b", "kv_FERRY", "OBJ_x", "obj_"]
        {
            assert!(is_reserved_store_name(name), "{name}");
        }
        for name in ["kv-cart", "blob_photos", "ferryboat", "objects", "kvstore", "cart"] {
            assert!(!is_reserved_store_name(name), "{name}");
        }
    }

    #[test]
    fn components_stores_are_scoped_by_lattice_unambiguously() {
        assert_eq!(component_kv_bucket("default", "cart").unwrap(), "ferry-kv-7-default-cart");
        assert_eq!(component_object_store("prod", "box").unwrap(), "ferry-blob-4-prod-box");
        // `-` in both names cannot make two pairs meet.
        assert_ne!(component_kv_bucket("a-b", "c").unwrap(), component_kv_bucket("a", "b-c").unwrap());
        assert!(component_kv_bucket("a.b", "c").is_err());
        for name in [component_kv_bucket("FERRY", "x").unwrap(), component_object_store("KV", "x").unwrap()] {
            assert!(!is_reserved_store_name(&name), "{name}");
        }
        let names = ComponentStoreNames::lattice(ComponentStoreKind::KeyValue, "default").unwrap();
        assert_eq!(names.legacy("cart").as_deref(), Some("kv-cart"));
        assert_eq!(ComponentStoreNames::Prefixed("team-".into()).primary("cart"), "team-cart");
        assert_eq!(ComponentStoreNames::Prefixed("team-".into()).legacy("cart"), None);
        assert_eq!(ComponentStoreNames::Fixed("shared".into()).primary("cart"), "shared");
        assert_eq!(ComponentStoreNames::Fixed("shared".into()).legacy("cart"), None);
        // No legacy name is any lattice's primary name.
        for kind in [ComponentStoreKind::KeyValue, ComponentStoreKind::Blob] {
            assert!(!kind.legacy_prefix().starts_with("ferry-"));
        }
    }

    #[test]
    fn ctl_subjects_parse_back() {
        let s = ctl("prod", "component", "start", Some("NABC")).unwrap();
        assert_eq!(parse_ctl("prod", &s), Some(("component", "start", Some("NABC"))));
        let s = ctl("prod", "link", "get", None).unwrap();
        assert_eq!(parse_ctl("prod", &s), Some(("link", "get", None)));
        assert_eq!(parse_ctl("other", &s), None);
    }
}
