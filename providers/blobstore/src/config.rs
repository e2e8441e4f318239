//! Per-link backend choice, from the link's target config: `backend` (`fs`, the default, or
//! `nats`), `root` for the filesystem, `bucket_prefix` and `replicas` for the NATS object store.

use std::{collections::BTreeMap, path::PathBuf};

use ferry_provider_sdk::parse_replicas;

/// Root directory of the filesystem backend when neither the link nor the provider names one.
pub(crate) const DEFAULT_ROOT: &str = "ferry-blobstore";

/// Which backend serves a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BackendConfig {
    /// Directories and files under `root`.
    Fs { root: PathBuf },
    /// JetStream object stores on the lattice's NATS, one per container, named
    /// `{bucket_prefix}{container}` when the link sets a prefix, scoped by lattice otherwise,
    /// created with `replicas` copies (1 unless the link says; 3 on a NATS cluster).
    Nats { bucket_prefix: Option<String>, replicas: usize },
}

impl BackendConfig {
    /// Read a link's target config; `provider` is the provider's start-up config (its `root`
    /// is the default root).
    pub(crate) fn from_link(
        config: &BTreeMap<String, String>,
        provider: &BTreeMap<String, String>,
    ) -> Result<Self, String> {
        let known = ["backend", "root", "bucket_prefix", "replicas"];
        if let Some(unknown) = config.keys().find(|k| !known.contains(&k.as_str())) {
            return Err(format!("unknown link setting {unknown:?} (known: {})", known.join(", ")));
        }
        match config.get("backend").map_or("fs", String::as_str) {
            "fs" => {
                let root = config.get("root").or_else(|| provider.get("root")).map_or(DEFAULT_ROOT, String::as_str);
                if root.trim().is_empty() {
                    return Err("`root` must not be empty".into());
                }
                Ok(Self::Fs { root: PathBuf::from(root) })
            }
            "nats" => {
                let bucket_prefix = config.get("bucket_prefix").cloned();
                if let Some(prefix) = &bucket_prefix
                    && !prefix.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
                {
                    return Err(format!("invalid bucket_prefix {prefix:?} (letters, digits, _ and -)"));
                }
                let replicas = config.get("replicas").map_or(Ok(1), |r| parse_replicas(r))?;
                Ok(Self::Nats { bucket_prefix, replicas })
            }
            other => Err(format!("unknown backend {other:?} (expected `fs` or `nats`)")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
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
        assert_eq!(
            BackendConfig::from_link(&cfg(&[("backend", "nats")]), &cfg(&[])).unwrap(),
            BackendConfig::Nats { bucket_prefix: None, replicas: 1 }
        );
        assert_eq!(
            BackendConfig::from_link(&cfg(&[("backend", "nats"), ("replicas", "3")]), &cfg(&[])).unwrap(),
            BackendConfig::Nats { bucket_prefix: None, replicas: 3 }
        );
        assert!(BackendConfig::from_link(&cfg(&[("backend", "nats"), ("replicas", "0")]), &cfg(&[])).is_err());
        assert!(BackendConfig::from_link(&cfg(&[("backend", "s3")]), &cfg(&[])).is_err());
        assert!(BackendConfig::from_link(&cfg(&[("bucket_prefix", "a.b"), ("backend", "nats")]), &cfg(&[])).is_err());
        assert!(BackendConfig::from_link(&cfg(&[("colour", "red")]), &cfg(&[])).is_err());
    }
}
