//! Per-link settings: a consumer link's target config (`cluster_uris` and the NATS connection
//! settings) and a handler link's source config (`subscriptions`, `queue_group`,
//! `cluster_uris`, `max_concurrency`, `timeout_ms` and the connection settings). Keys are
//! matched in any case; wasmCloud's keys for its NATS messaging provider keep their meaning.

use std::{collections::BTreeMap, time::Duration};

use ferry_provider_sdk::{LINK_NATS_KEYS, LinkConfig, LinkNats};

/// Messages of one handler link delivered at once when the link does not say.
pub(crate) const DEFAULT_MAX_CONCURRENCY: usize = 64;
/// Messages a subscription buffers while every delivery slot is busy.
pub(crate) const SUBSCRIPTION_CAPACITY: usize = 256;

/// The connection keys a messaging link takes: wasmCloud's messaging provider reads all of
/// [`LINK_NATS_KEYS`] but the JetStream domain, which core NATS messaging has no use for.
fn connection_keys() -> impl Iterator<Item = &'static str> {
    ["cluster_uris"].into_iter().chain(LINK_NATS_KEYS.iter().copied().filter(|k| *k != "js_domain"))
}

/// Where a component's publishes and requests go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ConsumerConfig {
    /// The lattice's NATS, or the one (and credentials) the link names.
    pub(crate) nats: LinkNats,
}

impl ConsumerConfig {
    /// Read a consumer link's target config. `subscriptions` is accepted and unused, as in
    /// wasmCloud, where one named config often serves both sides of a messaging provider.
    pub(crate) fn from_link(config: &BTreeMap<String, String>) -> Result<Self, String> {
        let known: Vec<&str> = connection_keys().chain(["subscriptions"]).collect();
        let config = LinkConfig::parse(config, &known)?;
        if config.has("subscriptions") {
            tracing::info!("a consumer link's `subscriptions` are not used: subscriptions belong to handler links");
        }
        Ok(Self { nats: LinkNats::from_config(&config, &["cluster_uris"])? })
    }
}

/// What a handler link subscribes to and how it delivers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HandlerConfig {
    pub(crate) subscriptions: Vec<String>,
    pub(crate) queue_group: Option<String>,
    /// The lattice's NATS, or the one (and credentials) the link names.
    pub(crate) nats: LinkNats,
    pub(crate) max_concurrency: usize,
    pub(crate) timeout: Option<Duration>,
}

impl HandlerConfig {
    pub(crate) fn from_link(config: &BTreeMap<String, String>) -> Result<Self, String> {
        let known: Vec<&str> =
            connection_keys().chain(["subscriptions", "queue_group", "max_concurrency", "timeout_ms"]).collect();
        let config = LinkConfig::parse(config, &known)?;
        let subscriptions: Vec<String> = config
            .get("subscriptions")
            .map(|s| s.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect())
            .unwrap_or_default();
        if subscriptions.is_empty() {
            return Err("`subscriptions` must list at least one subject (a.b,c.>)".into());
        }
        for subject in &subscriptions {
            validate_subject(subject, true)?;
        }
        let queue_group = config.get("queue_group").map(str::to_owned);
        if let Some(group) = &queue_group
            && group.contains(char::is_whitespace)
        {
            return Err(format!("invalid queue_group {group:?}"));
        }
        let max_concurrency = match config.get("max_concurrency") {
            Some(v) => match v.parse::<usize>() {
                Ok(n) if n > 0 => n,
                _ => return Err(format!("invalid max_concurrency {v:?} (a number above 0)")),
            },
            None => DEFAULT_MAX_CONCURRENCY,
        };
        let timeout = match config.get("timeout_ms") {
            Some(v) => match v.parse::<u64>() {
                Ok(ms) if ms > 0 => Some(Duration::from_millis(ms)),
                _ => return Err(format!("invalid timeout_ms {v:?}")),
            },
            None => None,
        };
        Ok(Self {
            subscriptions,
            queue_group,
            nats: LinkNats::from_config(&config, &["cluster_uris"])?,
            max_concurrency,
            timeout,
        })
    }
}

/// Check a subject (or, with `wildcards`, a subscription pattern): non-empty tokens, no
/// whitespace, `>` only last.
pub(crate) fn validate_subject(subject: &str, wildcards: bool) -> Result<(), String> {
    let tokens: Vec<&str> = subject.split('.').collect();
    let bad = subject.is_empty()
        || subject.len() > 1024
        || subject.contains(char::is_whitespace)
        || tokens.iter().any(|t| t.is_empty())
        || tokens.iter().enumerate().any(|(i, t)| {
            let wildcard = *t == "*" || *t == ">";
            (wildcard && !wildcards) || (*t == ">" && i + 1 != tokens.len()) || (!wildcard && t.contains(['*', '>']))
        });
    if bad {
        return Err(format!("invalid subject {subject:?}"));
    }
    Ok(())
}

/// Whether a subject (or pattern) may touch the lattice's own traffic: Ferry's subjects, the
/// JetStream and system APIs, or everything. Components get none of those on the lattice's NATS.
pub(crate) fn reserved_on_lattice(subject: &str) -> bool {
    let first = subject.split('.').next().unwrap_or_default();
    matches!(first, "ferry" | ">" | "*") || first.starts_with('$')
}

/// Whether a subscription pattern may not be used on the lattice's NATS: the reserved subjects,
/// and every reply inbox (`_INBOX.…`), where it would see the answers to everyone's requests.
pub(crate) fn reserved_subscription_on_lattice(pattern: &str) -> bool {
    reserved_on_lattice(pattern) || pattern.split('.').next() == Some("_INBOX")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn handler_settings_are_read_and_checked() {
        let c = HandlerConfig::from_link(&cfg(&[("subscriptions", "a.b, c.>"), ("queue_group", "g")])).unwrap();
        assert_eq!(c.subscriptions, ["a.b", "c.>"]);
        assert_eq!(c.queue_group.as_deref(), Some("g"));
        assert_eq!(c.max_concurrency, DEFAULT_MAX_CONCURRENCY);
        for bad in [
            cfg(&[]),
            cfg(&[("subscriptions", "a..b")]),
            cfg(&[("subscriptions", "a.>.b")]),
            cfg(&[("subscriptions", "a b")]),
            cfg(&[("subscriptions", "a"), ("max_concurrency", "0")]),
            cfg(&[("subscriptions", "a"), ("colour", "red")]),
        ] {
            assert!(HandlerConfig::from_link(&bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(ConsumerConfig::from_link(&cfg(&[])).unwrap().nats.servers, None);
    }

    #[test]
    fn wasmcloud_keys_keep_their_meaning() {
        // One named config on both sides of the provider, as wasmCloud manifests often have it.
        let consumer = ConsumerConfig::from_link(&cfg(&[("subscriptions", "a.b"), ("cluster_uris", "nats://x:4222")]));
        assert_eq!(consumer.unwrap().nats.servers.as_deref(), Some("nats://x:4222"));
        let handler = HandlerConfig::from_link(&cfg(&[
            ("SUBSCRIPTIONS", "a.b"),
            ("client_jwt", "eyJ"),
            ("client_seed", "SUA"),
            ("custom_inbox_prefix", "_MINE"),
        ]))
        .unwrap();
        assert_eq!(handler.subscriptions, ["a.b"]);
        assert!(handler.nats.needs_own_connection());
        assert!(HandlerConfig::from_link(&cfg(&[("subscriptions", "a"), ("js_domain", "hub")])).is_err());
    }

    #[test]
    fn lattice_subjects_are_reserved() {
        for reserved in ["ferry.rpc.x.y", "$JS.API.STREAM.DELETE.KV_x", "$KV.b.k", ">", "*.x"] {
            assert!(reserved_on_lattice(reserved), "{reserved}");
        }
        for free in ["orders.new", "_INBOX.abc", "ferryboat.x"] {
            assert!(!reserved_on_lattice(free), "{free}");
        }
        for reserved in ["_INBOX.>", "_INBOX.*.*", "_INBOX.abc", "ferry.>"] {
            assert!(reserved_subscription_on_lattice(reserved), "{reserved}");
        }
        assert!(!reserved_subscription_on_lattice("orders.>"));
        assert!(validate_subject("a.b", false).is_ok());
        assert!(validate_subject("a.*", false).is_err());
        assert!(validate_subject("a.*", true).is_ok());
    }
}
