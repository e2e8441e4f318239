//! Per-link backend choice, from the link's target config: `backend` (`fs`, the default, or
//! `nats`), `root` for the filesystem; for the NATS object store `bucket_prefix`, `replicas`,
//! the stores' settings and the connection settings. Keys are matched in any case; wasmCloud's
//! keys for its filesystem and NATS blobstore providers are accepted with their meaning
//! (README, "Coming from wasmCloud").

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use ferry_provider_sdk::{LINK_NATS_KEYS, LinkConfig, LinkNats, parse_replicas};

/// Root directory of the filesystem backend when neither the link nor the provider names one.
pub(crate) const DEFAULT_ROOT: &str = "ferry-blobstore";

/// Keys of the NATS backend only (`num_replicas` is wasmCloud's name for `replicas`).
const NATS_ONLY: &[&str] = &[
    "bucket_prefix",
    "replicas",
    "num_replicas",
    "cluster_uri",
    "nats_url",
    "max_age",
    "max_bytes",
    "storage_type",
    "compression",
    "max_write_wait",
];

/// Which backend serves a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BackendConfig {
    /// Directories and files under `root`.
    Fs { root: PathBuf },
    /// JetStream object stores, one per container, named `{bucket_prefix}{container}` when the
    /// link sets a prefix, scoped by lattice otherwise.
    Nats { nats: Box<LinkNats>, bucket_prefix: Option<String>, store: StoreSettings },
}

/// How the object stores a link creates are set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoreSettings {
    /// Copies JetStream keeps (1 unless the link says; 3 on a NATS cluster).
    pub(crate) replicas: usize,
    /// Objects older than this are removed by JetStream (`max_age`, seconds); `None` keeps them.
    pub(crate) max_age: Option<Duration>,
    /// Bytes a container may hold (`max_bytes`); `None` for no limit.
    pub(crate) max_bytes: Option<i64>,
    /// Kept in memory rather than on disk (`storage_type=memory`).
    pub(crate) memory: bool,
    /// Compressed on disk (`compression=true`).
    pub(crate) compression: bool,
    /// How long a write waits for JetStream to acknowledge a chunk (`max_write_wait`, seconds).
    pub(crate) write_wait: Option<Duration>,
}

impl Default for StoreSettings {
    fn default() -> Self {
        Self { replicas: 1, max_age: None, max_bytes: None, memory: false, compression: false, write_wait: None }
    }
}

impl BackendConfig {
    /// Read a link's target config; `provider` is the provider's start-up config (its `root`
    /// is the default root).
    pub(crate) fn from_link(
        config: &BTreeMap<String, String>,
        provider: &BTreeMap<String, String>,
    ) -> Result<Self, String> {
        let known: Vec<&str> = ["backend", "root"].iter().chain(NATS_ONLY).chain(LINK_NATS_KEYS).copied().collect();
        let config = LinkConfig::parse(config, &known)?;
        // A link written for wasmCloud's NATS blobstore provider names no backend but carries
        // its settings.
        let nats_keys = NATS_ONLY.iter().chain(LINK_NATS_KEYS).find(|k| config.has(k));
        // Otherwise the provider-wide `backend` (as a manifest's blobstore-nats image sets it).
        let provider_backend =
            provider.iter().find(|(k, _)| k.eq_ignore_ascii_case("backend")).map(|(_, v)| v.as_str());
        let default = if nats_keys.is_some() { "nats" } else { provider_backend.unwrap_or("fs") };
        match config.get("backend").unwrap_or(default) {
            "fs" => {
                if let Some(key) = nats_keys {
                    return Err(format!("`{key}` applies to backend=nats, not fs"));
                }
                let root =
                    config.get("root").or_else(|| provider.get("root").map(String::as_str)).unwrap_or(DEFAULT_ROOT);
                if root.trim().is_empty() {
                    return Err("`root` must not be empty".into());
                }
                Ok(Self::Fs { root: PathBuf::from(root) })
            }
            "nats" => {
                if config.has("root") {
                    return Err("`root` applies to backend=fs, not nats".into());
                }
                // An empty prefix, given on purpose, means names used verbatim.
                let bucket_prefix = config
                    .is_given("bucket_prefix")
                    .then(|| config.get("bucket_prefix").unwrap_or_default().to_owned());
                if let Some(prefix) = &bucket_prefix
                    && !prefix.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
                {
                    return Err(format!("invalid bucket_prefix {prefix:?} (letters, digits, _ and -)"));
                }
                let store = StoreSettings {
                    replicas: config.first(&["replicas", "num_replicas"]).map_or(Ok(1), parse_replicas)?,
                    max_age: seconds(&config, "max_age")?,
                    max_bytes: match config.get("max_bytes") {
                        None => None,
                        Some(v) => match v.parse::<i64>() {
                            Ok(-1) => None,
                            Ok(n) if n > 0 => Some(n),
                            _ => return Err(format!("invalid max_bytes {v:?} (bytes above 0, or -1 for no limit)")),
                        },
                    },
                    memory: match config.get("storage_type").map(str::to_ascii_lowercase).as_deref() {
                        None | Some("file" | "0") => false,
                        Some("memory" | "1") => true,
                        Some(other) => return Err(format!("invalid storage_type {other:?} (file or memory)")),
                    },
                    compression: config.flag("compression", false)?,
                    write_wait: seconds(&config, "max_write_wait")?,
                };
                let nats = LinkNats::from_config(&config, &["nats_url", "cluster_uri"])?;
                Ok(Self::Nats { nats: Box::new(nats), bucket_prefix, store })
            }
            other => Err(format!("unknown backend {other:?} (expected `fs` or `nats`)")),
        }
    }
}

/// A duration in whole seconds; 0 means none.
fn seconds(config: &LinkConfig, key: &str) -> Result<Option<Duration>, String> {
    match config.get(key) {
        None => Ok(None),
        Some(v) => match v.parse::<u64>() {
            Ok(0) => Ok(None),
            Ok(s) => Ok(Some(Duration::from_secs(s))),
            Err(_) => Err(format!("invalid {key} {v:?} (whole seconds)")),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    fn nats(replicas: usize) -> BackendConfig {
        BackendConfig::Nats {
            nats: Box::default(),
            bucket_prefix: None,
            store: StoreSettings { replicas, ..StoreSettings::default() },
        }
    }

    #[test]
    fn backend_is_chosen_per_link() {
        assert_eq!(
            BackendConfig::from_link(&cfg(&[]), &cfg(&[])).unwrap(),
            BackendConfig::Fs { root: DEFAULT_ROOT.into() }
        );
        assert_eq!(
            BackendConfig::from_link(&cfg(&[]), &cfg(&[("root", "/srv/blobs")])).unwrap(),
            BackendConfig::Fs { root: "/srv/blobs".into() }
        );
        assert_eq!(BackendConfig::from_link(&cfg(&[("backend", "nats")]), &cfg(&[])).unwrap(), nats(1));
        assert_eq!(
            BackendConfig::from_link(&cfg(&[("backend", "nats"), ("replicas", "3")]), &cfg(&[])).unwrap(),
            nats(3)
        );
        assert!(BackendConfig::from_link(&cfg(&[("backend", "nats"), ("replicas", "0")]), &cfg(&[])).is_err());
        assert!(BackendConfig::from_link(&cfg(&[("backend", "s3")]), &cfg(&[])).is_err());
        assert!(BackendConfig::from_link(&cfg(&[("bucket_prefix", "a.b"), ("backend", "nats")]), &cfg(&[])).is_err());
        let Ok(BackendConfig::Nats { bucket_prefix, .. }) =
            BackendConfig::from_link(&cfg(&[("bucket_prefix", ""), ("backend", "nats")]), &cfg(&[]))
        else {
            panic!("not nats")
        };
        assert_eq!(bucket_prefix.as_deref(), Some(""), "an empty prefix asks for verbatim names");
        assert!(BackendConfig::from_link(&cfg(&[("colour", "red")]), &cfg(&[])).is_err());
        assert_eq!(BackendConfig::from_link(&cfg(&[("replicas", "3")]), &cfg(&[])).unwrap(), nats(3));
        assert!(
            BackendConfig::from_link(&cfg(&[("backend", "fs"), ("replicas", "3")]), &cfg(&[]))
                .unwrap_err()
                .contains("backend=nats")
        );
    }

    #[test]
    fn wasmcloud_keys_keep_their_meaning() {
        // blobstore-fs: `ROOT`, in any case.
        assert_eq!(
            BackendConfig::from_link(&cfg(&[("ROOT", "/data")]), &cfg(&[])).unwrap(),
            BackendConfig::Fs { root: "/data".into() }
        );
        // blobstore-nats: its storage settings and its name for replicas.
        let config = cfg(&[
            ("num_replicas", "3"),
            ("max_age", "60"),
            ("storage_type", "Memory"),
            ("compression", "true"),
            ("max_write_wait", "10"),
            ("js_domain", "hub"),
        ]);
        let BackendConfig::Nats { nats, store, .. } = BackendConfig::from_link(&config, &cfg(&[])).unwrap() else {
            panic!("not nats")
        };
        assert_eq!(nats.js_domain.as_deref(), Some("hub"));
        assert_eq!(
            store,
            StoreSettings {
                replicas: 3,
                max_age: Some(Duration::from_secs(60)),
                max_bytes: None,
                memory: true,
                compression: true,
                write_wait: Some(Duration::from_secs(10)),
            }
        );
        assert!(BackendConfig::from_link(&cfg(&[("backend", "nats"), ("storage_type", "tape")]), &cfg(&[])).is_err());
    }
}
