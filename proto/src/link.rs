//! Link definitions: who may call whom over which WIT interface, and the notifications that
//! carry them to providers.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{ProtoError, subject::validate_id};

/// The link name used when none is given.
pub const DEFAULT_LINK_NAME: &str = "default";

/// A link: `source_id` may call `target_id` over `wit_namespace:wit_package/{interfaces}`.
///
/// Component → provider for imports (key-value, blobstore, …), provider → component for exports
/// (`wasi:http/incoming-handler`). Identity is (source, target, namespace, package, name); a
/// put with the same identity and different interfaces or config is an update.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    /// The caller.
    pub source_id: String,
    /// The callee.
    pub target_id: String,
    /// Link name; a component selects a non-default one with `wasmcloud:bus/lattice`.
    #[serde(default = "default_name")]
    pub name: String,
    /// WIT namespace, `wasi`.
    pub wit_namespace: String,
    /// WIT package, `keyvalue`.
    pub wit_package: String,
    /// WIT interfaces covered, `["store", "atomics"]`.
    pub interfaces: Vec<String>,
    /// Names of configs given to the source side.
    #[serde(default)]
    pub source_config: Vec<String>,
    /// Names of configs given to the target side.
    #[serde(default)]
    pub target_config: Vec<String>,
}

fn default_name() -> String {
    DEFAULT_LINK_NAME.to_owned()
}

impl Link {
    /// A link with the default name and no config.
    pub fn new(
        source_id: impl Into<String>,
        target_id: impl Into<String>,
        wit_namespace: impl Into<String>,
        wit_package: impl Into<String>,
        interfaces: Vec<String>,
    ) -> Self {
        Self {
            source_id: source_id.into(),
            target_id: target_id.into(),
            name: default_name(),
            wit_namespace: wit_namespace.into(),
            wit_package: wit_package.into(),
            interfaces,
            source_config: Vec::new(),
            target_config: Vec::new(),
        }
    }

    /// Check every identifier of the link.
    ///
    /// # Errors
    /// [`ProtoError::InvalidId`] naming the first invalid part.
    pub fn validate(&self) -> Result<(), ProtoError> {
        validate_id("source id", &self.source_id)?;
        validate_id("target id", &self.target_id)?;
        validate_id("link name", &self.name)?;
        validate_id("wit namespace", &self.wit_namespace)?;
        validate_id("wit package", &self.wit_package)?;
        if self.interfaces.is_empty() {
            return Err(ProtoError::InvalidId {
                what: "interfaces",
                value: String::new(),
                reason: "a link names at least one interface",
            });
        }
        for interface in &self.interfaces {
            validate_id("wit interface", interface)?;
        }
        for name in self.source_config.iter().chain(&self.target_config) {
            validate_id("config name", name)?;
        }
        Ok(())
    }

    /// The identity of this link.
    pub fn key(&self) -> LinkKey {
        LinkKey {
            source_id: self.source_id.clone(),
            target_id: self.target_id.clone(),
            wit_namespace: self.wit_namespace.clone(),
            wit_package: self.wit_package.clone(),
            name: self.name.clone(),
        }
    }

    /// Interfaces of this link that a caller resolves by link name alone, so that two links
    /// of one name sharing one of them would be ambiguous (see [`fans_out`]).
    pub fn routed_interfaces(&self) -> impl Iterator<Item = &str> {
        self.interfaces.iter().map(String::as_str).filter(|i| !fans_out(&self.wit_namespace, &self.wit_package, i))
    }

    /// Whether this link covers `namespace:package/interface`: it lists the interface, or one
    /// that carries it ([`carried_by`]).
    pub fn covers(&self, namespace: &str, package: &str, interface: &str) -> bool {
        let carrier = carried_by(namespace, package, interface);
        self.wit_namespace == namespace
            && self.wit_package == package
            && self.interfaces.iter().any(|i| i == interface || carrier == Some(i.as_str()))
    }
}

/// The identity of a link: what a delete names.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct LinkKey {
    /// The caller.
    pub source_id: String,
    /// The callee.
    pub target_id: String,
    /// WIT namespace.
    pub wit_namespace: String,
    /// WIT package.
    pub wit_package: String,
    /// Link name.
    #[serde(default = "default_name")]
    pub name: String,
}

/// A link as a provider sees it: the definition, its configs resolved to values, and the bucket
/// revision it was read at (so a provider can tell a stale notification from a new one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkPut {
    /// The link.
    pub link: Link,
    /// The merged values of `link.source_config`, in order (later names win).
    pub source_config: BTreeMap<String, String>,
    /// The merged values of `link.target_config`, in order (later names win).
    pub target_config: BTreeMap<String, String>,
    /// KV revision of the link entry.
    pub revision: u64,
}

/// A provider's request for its links ([`crate::subject::link_sync`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkSyncRequest {
    /// The newest bucket revision the provider has seen: the answering host first waits
    /// (briefly) until its own view has reached it, so the answer is never older.
    pub seen_revision: u64,
}

/// The answer to a [`LinkSyncRequest`], sealed for the provider: every link with the provider
/// on either end, its config resolved as a link put would carry it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkSyncAnswer {
    /// The links.
    pub links: Vec<LinkPut>,
    /// The revision the answering host's view had reached.
    pub revision: u64,
}

/// A link deletion as a provider sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkDel {
    /// Which link.
    pub key: LinkKey,
    /// KV revision of the delete.
    pub revision: u64,
}

/// A provider instance's answer to a link put or delete. Each instance answers twice: at once
/// with `pending` set (it received the notification), then with its verdict, so the sender
/// learns which instances are running and waits for every one of them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkAck {
    /// The answering instance.
    pub instance_id: String,
    /// Whether the provider accepted the link.
    pub accepted: bool,
    /// Why it did not.
    pub error: Option<String>,
    /// Only a receipt: the verdict follows.
    #[serde(default)]
    pub pending: bool,
}

/// The interface whose link also carries calls of `namespace:package/interface`, as wasmCloud
/// routes them: a component calls `wasi:blobstore/container` methods on a container it got
/// from `wasi:blobstore/blobstore`, so a link that lists `blobstore` serves all of the package.
pub fn carried_by(namespace: &str, package: &str, interface: &str) -> Option<&'static str> {
    match (namespace, package, interface) {
        ("wasi", "blobstore", "container" | "types") => Some("blobstore"),
        _ => None,
    }
}

/// Whether links over `namespace:package/interface` go from a provider to many components under
/// one name, the provider choosing among them by its own config (the http-server by host and
/// path, messaging by subscription): exports the lattice invokes. Links over any other interface
/// are how a component's import finds its target, so only one link of a name may cover it.
pub fn fans_out(namespace: &str, package: &str, interface: &str) -> bool {
    matches!(
        (namespace, package, interface),
        ("wasi", "http", "incoming-handler") | ("wasmcloud", "messaging", "handler")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{decode, encode};

    fn sample() -> Link {
        let mut link = Link::new("comp", "kv", "wasi", "keyvalue", vec!["store".into(), "atomics".into()]);
        link.target_config = vec!["redis".into()];
        link
    }

    #[test]
    fn a_blobstore_link_carries_container_calls_as_in_wasmcloud() {
        let link = Link::new("comp", "blob", "wasi", "blobstore", vec!["blobstore".into()]);
        assert!(link.covers("wasi", "blobstore", "blobstore"));
        assert!(link.covers("wasi", "blobstore", "container"));
        assert!(link.covers("wasi", "blobstore", "types"));
        assert!(!link.covers("wasi", "keyvalue", "container"));
        let container_only = Link::new("comp", "blob", "wasi", "blobstore", vec!["container".into()]);
        assert!(!container_only.covers("wasi", "blobstore", "blobstore"));
        let kv = Link::new("comp", "kv", "wasi", "keyvalue", vec!["store".into()]);
        assert!(!kv.covers("wasi", "keyvalue", "atomics"));
    }

    #[test]
    fn link_messages_round_trip() {
        let put = LinkPut {
            link: sample(),
            source_config: BTreeMap::new(),
            target_config: BTreeMap::from([("url".to_owned(), "redis://x".to_owned())]),
            revision: 7,
        };
        assert_eq!(decode::<LinkPut>(&encode(&put).unwrap()).unwrap(), put);
        let del = LinkDel { key: sample().key(), revision: 8 };
        assert_eq!(decode::<LinkDel>(&encode(&del).unwrap()).unwrap(), del);
        let ack = LinkAck { instance_id: "i".into(), accepted: false, error: Some("bad url".into()), pending: false };
        assert_eq!(decode::<LinkAck>(&encode(&ack).unwrap()).unwrap(), ack);
    }

    #[test]
    fn garbage_does_not_decode() {
        for garbage in [&b""[..], b"\xc1", b"\x92\x01", b"\xde\xff\xff"] {
            assert!(decode::<LinkPut>(garbage).is_err());
            assert!(decode::<LinkDel>(garbage).is_err());
        }
    }

    #[test]
    fn validation_rejects_bad_parts() {
        assert!(sample().validate().is_ok());
        let mut bad = sample();
        bad.interfaces.clear();
        assert!(bad.validate().is_err());
        let mut bad = sample();
        bad.name = "a.b".into();
        assert!(bad.validate().is_err());
        assert!(sample().covers("wasi", "keyvalue", "atomics"));
        assert!(!sample().covers("wasi", "keyvalue", "batch"));
    }
}
