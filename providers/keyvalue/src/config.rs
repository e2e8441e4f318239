//! Per-link configuration of the key-value provider, read from the link's target config. Keys
//! are matched in any case; wasmCloud's keys for its NATS and Redis key-value providers are
//! accepted with their meaning (README, "Coming from wasmCloud").

use std::collections::BTreeMap;

use ferry_provider_sdk::{LINK_NATS_KEYS, LinkConfig, LinkNats, parse_replicas};

/// Keys of the NATS backend only.
const NATS_ONLY: &[&str] =
    &["nats_url", "cluster_uri", "bucket_prefix", "bucket", "enable_bucket_auto_create", "replicas"];

/// Which backend serves a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BackendConfig {
    /// JetStream KV on the lattice's NATS, or the NATS the link names.
    Nats {
        /// Where: the lattice's connection or the link's own.
        nats: LinkNats,
        /// How a component's bucket identifier becomes a JetStream bucket.
        names: StoreNaming,
        /// Copies JetStream keeps of the buckets this link creates (1 unless the link says; 3
        /// on a NATS cluster).
        replicas: usize,
        /// Whether a missing bucket is created on first use (`enable_bucket_auto_create`); when
        /// not, it must exist.
        auto_create: bool,
    },
    /// A Redis server at `url`.
    Redis { url: String },
}

/// How a component's bucket identifier names a JetStream bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StoreNaming {
    /// Scoped by lattice (the default).
    Lattice,
    /// `{bucket_prefix}{identifier}`, verbatim.
    Prefixed(String),
    /// The one bucket the link names (`bucket`), whatever the identifier.
    Fixed(String),
}

impl BackendConfig {
    /// Parse the link's target config: `backend` (`nats` or `redis`), `url`; for NATS
    /// `nats_url` (or `cluster_uri`), `bucket` or `bucket_prefix`, `enable_bucket_auto_create`,
    /// `replicas` and the connection settings of [`LinkNats`].
    pub(crate) fn from_link(config: &BTreeMap<String, String>) -> Result<Self, String> {
        let known: Vec<&str> = ["backend", "url"].iter().chain(NATS_ONLY).chain(LINK_NATS_KEYS).copied().collect();
        let config = LinkConfig::parse(config, &known)?;
        let url = config.get("url");
        let backend = match config.get("backend") {
            Some(b) => b,
            None if url.is_some_and(|u| u.starts_with("redis") || u.starts_with("unix")) => "redis",
            None => "nats",
        };
        match backend {
            "nats" => {
                if url.is_some() {
                    return Err("`url` names a Redis server (backend=redis); a NATS server is `nats_url`".into());
                }
                let names = match (config.get("bucket"), config.get("bucket_prefix")) {
                    (Some(_), Some(_)) => return Err("set `bucket` or `bucket_prefix`, not both".into()),
                    (Some(bucket), None) => {
                        check_name("bucket", bucket, false)?;
                        StoreNaming::Fixed(bucket.to_owned())
                    }
                    (None, Some(prefix)) => {
                        check_name("bucket_prefix", prefix, true)?;
                        StoreNaming::Prefixed(prefix.to_owned())
                    }
                    // An empty prefix, set on purpose, means names used verbatim.
                    (None, None) if config.is_given("bucket_prefix") => StoreNaming::Prefixed(String::new()),
                    (None, None) => StoreNaming::Lattice,
                };
                // wasmCloud opens a named bucket only when it exists unless told to create it.
                let auto_create = config.flag("enable_bucket_auto_create", !matches!(names, StoreNaming::Fixed(_)))?;
                let replicas = config.get("replicas").map_or(Ok(1), parse_replicas)?;
                let nats = LinkNats::from_config(&config, &["nats_url", "cluster_uri"])?;
                Ok(BackendConfig::Nats { nats, names, replicas, auto_create })
            }
            "redis" => {
                if let Some(key) = NATS_ONLY.iter().chain(LINK_NATS_KEYS).find(|k| config.has(k)) {
                    return Err(format!("`{key}` applies to backend=nats, not redis"));
                }
                let url = url.ok_or("backend=redis needs a `url` (redis://host:port/db)")?;
                if !(url.starts_with("redis://") || url.starts_with("rediss://") || url.starts_with("unix://")) {
                    return Err(format!("`url` must be redis://, rediss:// or unix://, got {url:?}"));
                }
                Ok(BackendConfig::Redis { url: url.to_owned() })
            }
            other => Err(format!("unknown backend {other:?} (expected `nats` or `redis`)")),
        }
    }
}

/// The link's config with the provider-wide defaults under it: `backend` and `url` from the
/// provider's start-up config (as wasmCloud's Redis provider takes a default `URL`) apply to a
/// link that chooses no backend of its own, and `url` to a Redis link that names none.
pub(crate) fn with_provider_defaults(
    link: &BTreeMap<String, String>,
    provider: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let find = |map: &BTreeMap<String, String>, key: &str| {
        map.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v.clone())
    };
    let mut merged = link.clone();
    let link_backend = find(link, "backend");
    let chooses = link_backend.is_some()
        || find(link, "url").is_some()
        || NATS_ONLY.iter().chain(LINK_NATS_KEYS).any(|k| find(link, k).is_some());
    let default_backend = find(provider, "backend");
    let redis = match (&link_backend, chooses) {
        (Some(b), _) => b.eq_ignore_ascii_case("redis"),
        (None, true) => false,
        (None, false) => default_backend.as_deref().is_some_and(|b| b.eq_ignore_ascii_case("redis")),
    };
    if !chooses && let Some(backend) = default_backend {
        merged.insert("backend".into(), backend);
    }
    if redis
        && find(link, "url").is_none()
        && let Some(url) = find(provider, "url")
    {
        merged.insert("url".into(), url);
    }
    merged
}

/// What a watcher link (provider → component over `wasi:keyvalue/watcher`, source config)
/// watches: `watch_bucket`, the identifier the component would open (default `default`), and
/// `watch_keys`, comma-separated key patterns in the backend's syntax (NATS: `*` one token,
/// `>` the rest; Redis: glob), every key when absent. The other keys choose the backend as for
/// a store link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WatchConfig {
    pub(crate) bucket: String,
    pub(crate) patterns: Vec<String>,
}

impl WatchConfig {
    /// Split a watcher link's source config into its watch settings and its backend's.
    pub(crate) fn split(config: &BTreeMap<String, String>) -> (Self, BTreeMap<String, String>) {
        let mut rest = config.clone();
        let mut take = |name: &str| {
            let key = rest.keys().find(|k| k.eq_ignore_ascii_case(name)).cloned()?;
            rest.remove(&key)
        };
        let bucket = take("watch_bucket").map(|b| b.trim().to_owned()).filter(|b| !b.is_empty());
        let patterns = take("watch_keys")
            .map(|p| p.split(',').map(str::trim).filter(|p| !p.is_empty()).map(str::to_owned).collect())
            .unwrap_or_default();
        (Self { bucket: bucket.unwrap_or_else(|| "default".to_owned()), patterns }, rest)
    }
}

/// A JetStream bucket name, or a prefix of one (`empty_ok`).
fn check_name(key: &str, name: &str, empty_ok: bool) -> Result<(), String> {
    if (name.is_empty() && !empty_ok) || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        return Err(format!("invalid {key} {name:?} (letters, digits, _ and -)"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    fn nats(names: StoreNaming, replicas: usize, auto_create: bool) -> BackendConfig {
        BackendConfig::Nats { nats: LinkNats::default(), names, replicas, auto_create }
    }

    #[test]
    fn provider_defaults_apply_to_links_that_choose_nothing() {
        let redis = cfg(&[("backend", "redis"), ("URL", "redis://10.0.0.1:6379")]);
        let merged = with_provider_defaults(&cfg(&[]), &redis);
        assert_eq!(
            BackendConfig::from_link(&merged).unwrap(),
            BackendConfig::Redis { url: "redis://10.0.0.1:6379".into() }
        );
        let own = with_provider_defaults(&cfg(&[("url", "redis://own:6379")]), &redis);
        assert_eq!(BackendConfig::from_link(&own).unwrap(), BackendConfig::Redis { url: "redis://own:6379".into() });
        let nats_link = with_provider_defaults(&cfg(&[("bucket", "b")]), &redis);
        assert!(matches!(BackendConfig::from_link(&nats_link).unwrap(), BackendConfig::Nats { .. }));
        let named = with_provider_defaults(&cfg(&[("backend", "redis")]), &redis);
        assert_eq!(
            BackendConfig::from_link(&named).unwrap(),
            BackendConfig::Redis { url: "redis://10.0.0.1:6379".into() }
        );
        assert_eq!(with_provider_defaults(&cfg(&[]), &cfg(&[])), cfg(&[]));
    }

    #[test]
    fn backend_is_chosen_from_link_config() {
        assert_eq!(BackendConfig::from_link(&cfg(&[])).unwrap(), nats(StoreNaming::Lattice, 1, true));
        assert_eq!(BackendConfig::from_link(&cfg(&[("replicas", "3")])).unwrap(), nats(StoreNaming::Lattice, 3, true));
        assert!(BackendConfig::from_link(&cfg(&[("replicas", "7")])).is_err());
        assert_eq!(
            BackendConfig::from_link(&cfg(&[("bucket_prefix", "")])).unwrap(),
            nats(StoreNaming::Prefixed(String::new()), 1, true)
        );
        assert!(BackendConfig::from_link(&cfg(&[("bucket_prefix", "a.b")])).is_err());
        assert_eq!(
            BackendConfig::from_link(&cfg(&[("url", "redis://127.0.0.1:6379")])).unwrap(),
            BackendConfig::Redis { url: "redis://127.0.0.1:6379".into() }
        );
        assert!(BackendConfig::from_link(&cfg(&[("backend", "redis")])).is_err());
        assert!(BackendConfig::from_link(&cfg(&[("backend", "etcd")])).is_err());
        assert!(BackendConfig::from_link(&cfg(&[("backend", "redis"), ("url", "http://x")])).is_err());
        assert!(BackendConfig::from_link(&cfg(&[("colour", "blue")])).unwrap_err().contains("colour"));
    }

    #[test]
    fn a_watcher_link_names_what_it_watches_beside_its_backend() {
        let (watch, rest) = WatchConfig::split(&cfg(&[("WATCH_KEYS", "user.*, order.>"), ("url", "redis://h")]));
        assert_eq!(watch, WatchConfig { bucket: "default".into(), patterns: vec!["user.*".into(), "order.>".into()] });
        assert_eq!(rest, cfg(&[("url", "redis://h")]));
        let (watch, _) = WatchConfig::split(&cfg(&[("watch_bucket", "cart")]));
        assert_eq!(watch, WatchConfig { bucket: "cart".into(), patterns: vec![] });
    }

    #[test]
    fn wasmcloud_keys_keep_their_meaning() {
        // wasmCloud's NATS key-value link: one named bucket, opened only if it exists unless
        // auto-creation is asked for.
        assert_eq!(
            BackendConfig::from_link(&cfg(&[("bucket", "wasmbus"), ("enable_bucket_auto_create", "true")])).unwrap(),
            nats(StoreNaming::Fixed("wasmbus".into()), 1, true)
        );
        assert_eq!(
            BackendConfig::from_link(&cfg(&[("bucket", "wasmbus")])).unwrap(),
            nats(StoreNaming::Fixed("wasmbus".into()), 1, false)
        );
        assert!(BackendConfig::from_link(&cfg(&[("bucket", "a"), ("bucket_prefix", "b")])).is_err());
        let Ok(BackendConfig::Nats { nats, .. }) =
            BackendConfig::from_link(&cfg(&[("cluster_uri", "nats://elsewhere:4222"), ("js_domain", "hub")]))
        else {
            panic!("not nats")
        };
        assert_eq!(nats.servers.as_deref(), Some("nats://elsewhere:4222"));
        assert_eq!(nats.js_domain.as_deref(), Some("hub"));
        // wasmCloud's Redis key-value link: `URL`, in capitals.
        assert_eq!(
            BackendConfig::from_link(&cfg(&[("URL", "redis://127.0.0.1:6379/1")])).unwrap(),
            BackendConfig::Redis { url: "redis://127.0.0.1:6379/1".into() }
        );
        assert!(
            BackendConfig::from_link(&cfg(&[("url", "redis://h"), ("bucket", "b")])).unwrap_err().contains("bucket")
        );
    }
}
