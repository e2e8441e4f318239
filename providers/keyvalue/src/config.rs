//! Per-link configuration of the key-value provider, read from the link's target config.

use std::collections::BTreeMap;

/// Which backend serves a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BackendConfig {
    /// JetStream KV on the lattice's NATS (or `nats_url`). Buckets are created on first use,
    /// named `{bucket_prefix}{bucket}` when the link sets a prefix, scoped by lattice otherwise.
    Nats { url: Option<String>, bucket_prefix: Option<String> },
    /// A Redis server at `url`.
    Redis { url: String },
}

impl BackendConfig {
    /// Parse the link's target config: `backend` (`nats` or `redis`), `url`, `bucket_prefix`.
    pub(crate) fn from_link(config: &BTreeMap<String, String>) -> Result<Self, String> {
        let url = config.get("url").cloned();
        let backend = match config.get("backend") {
            Some(b) => b.as_str(),
            None if url.as_deref().is_some_and(|u| u.starts_with("redis")) => "redis",
            None => "nats",
        };
        match backend {
            "nats" => {
                let bucket_prefix = config.get("bucket_prefix").cloned();
                if let Some(prefix) = &bucket_prefix
                    && !prefix.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                {
                    return Err(format!("invalid bucket_prefix {prefix:?} (letters, digits, _ and -)"));
                }
                Ok(BackendConfig::Nats { url: config.get("nats_url").cloned(), bucket_prefix })
            }
            "redis" => {
                let url = url.ok_or("backend=redis needs a `url` (redis://host:port/db)")?;
                if !(url.starts_with("redis://") || url.starts_with("rediss://") || url.starts_with("unix://")) {
                    return Err(format!("`url` must be redis://, rediss:// or unix://, got {url:?}"));
                }
                Ok(BackendConfig::Redis { url })
            }
            other => Err(format!("unknown backend {other:?} (expected `nats` or `redis`)")),
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
    fn backend_is_chosen_from_link_config() {
        assert_eq!(
            BackendConfig::from_link(&cfg(&[])).unwrap(),
            BackendConfig::Nats { url: None, bucket_prefix: None }
        );
        assert_eq!(
            BackendConfig::from_link(&cfg(&[("bucket_prefix", "")])).unwrap(),
            BackendConfig::Nats { url: None, bucket_prefix: Some(String::new()) }
        );
        assert!(BackendConfig::from_link(&cfg(&[("bucket_prefix", "a.b")])).is_err());
        assert_eq!(
            BackendConfig::from_link(&cfg(&[("url", "redis://127.0.0.1:6379")])).unwrap(),
            BackendConfig::Redis { url: "redis://127.0.0.1:6379".into() }
        );
        assert!(BackendConfig::from_link(&cfg(&[("backend", "redis")])).is_err());
        assert!(BackendConfig::from_link(&cfg(&[("backend", "etcd")])).is_err());
        assert!(BackendConfig::from_link(&cfg(&[("backend", "redis"), ("url", "http://x")])).is_err());
    }
}
