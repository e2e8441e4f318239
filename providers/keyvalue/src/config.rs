//! Per-link configuration of the key-value provider, read from the link's target config.

use std::collections::BTreeMap;

use ferry_provider_sdk::parse_replicas;

/// Which backend serves a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BackendConfig {
    /// JetStream KV on the lattice's NATS (or `nats_url`). Buckets are created on first use,
    /// named `{bucket_prefix}{bucket}` when the link sets a prefix, scoped by lattice otherwise,
    /// with `replicas` copies (1 unless the link says; 3 on a NATS cluster).
    Nats { url: Option<String>, bucket_prefix: Option<String>, replicas: usize },
    /// A Redis server at `url`.
    Redis { url: String },
}

impl BackendConfig {
    /// Parse the link's target config: `backend` (`nats` or `redis`), `url`, `bucket_prefix`,
    /// `replicas`.
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
                let replicas = config.get("replicas").map_or(Ok(1), |r| parse_replicas(r))?;
                Ok(BackendConfig::Nats { url: config.get("nats_url").cloned(), bucket_prefix, replicas })
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
            BackendConfig::Nats { url: None, bucket_prefix: None, replicas: 1 }
        );
        assert_eq!(
            BackendConfig::from_link(&cfg(&[("replicas", "3")])).unwrap(),
            BackendConfig::Nats { url: None, bucket_prefix: None, replicas: 3 }
        );
        assert!(BackendConfig::from_link(&cfg(&[("replicas", "7")])).is_err());
        assert_eq!(
            BackendConfig::from_link(&cfg(&[("bucket_prefix", "")])).unwrap(),
            BackendConfig::Nats { url: None, bucket_prefix: Some(String::new()), replicas: 1 }
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
