//! The narrow interface every key-value backend implements; a new backend is a new file.

mod nats;
mod redis;

use ferry_provider_sdk::{RpcError, keyvalue::KeyValuePair};

pub(crate) use self::{nats::NatsBackend, redis::RedisBackend};

/// Keys returned per `list-keys` page.
pub(crate) const PAGE_SIZE: usize = 100;
/// Longest wait for a backend's answer to a health probe.
pub(crate) const HEALTH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// One change a watch saw: the new value of `key`, or `None` when it was deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Change {
    pub(crate) key: String,
    pub(crate) value: Option<Vec<u8>>,
}

/// The changes a watch reports, until the store goes away (then an error) or it is dropped.
pub(crate) type Changes = futures::stream::BoxStream<'static, Result<Change, String>>;

/// A key-value store behind one link.
#[async_trait::async_trait]
pub(crate) trait Backend: Send + Sync {
    async fn get(&self, bucket: &str, key: &str) -> Result<Option<Vec<u8>>, RpcError>;
    async fn set(&self, bucket: &str, key: &str, value: Vec<u8>) -> Result<(), RpcError>;
    async fn delete(&self, bucket: &str, key: &str) -> Result<(), RpcError>;
    async fn exists(&self, bucket: &str, key: &str) -> Result<bool, RpcError>;
    /// A page of keys from `cursor` and the next cursor (`None` at the end).
    async fn list_keys(&self, bucket: &str, cursor: Option<u64>) -> Result<(Vec<String>, Option<u64>), RpcError>;
    async fn increment(&self, bucket: &str, key: &str, delta: u64) -> Result<u64, RpcError>;
    /// Whether the store answers now (one cheap round trip); why not, when it does not.
    async fn health(&self) -> Result<(), String>;
    /// Every later change in `bucket` to a key matching one of `patterns` (the backend's own
    /// pattern syntax; empty for every key).
    async fn watch(&self, bucket: &str, patterns: &[String]) -> Result<Changes, String>;

    async fn get_many(&self, bucket: &str, keys: Vec<String>) -> Result<Vec<Option<KeyValuePair>>, RpcError> {
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            let value = self.get(bucket, &key).await?;
            out.push(value.map(|value| KeyValuePair { key, value }));
        }
        Ok(out)
    }

    async fn set_many(&self, bucket: &str, items: Vec<KeyValuePair>) -> Result<(), RpcError> {
        for item in items {
            self.set(bucket, &item.key, item.value).await?;
        }
        Ok(())
    }

    async fn delete_many(&self, bucket: &str, keys: Vec<String>) -> Result<(), RpcError> {
        for key in keys {
            self.delete(bucket, &key).await?;
        }
        Ok(())
    }
}

/// Parse a stored counter: decimal text, as both backends write it.
pub(crate) fn parse_counter(key: &str, bytes: &[u8]) -> Result<u64, RpcError> {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .ok_or_else(|| RpcError::bad_request(format!("value of {key:?} is not a decimal unsigned integer")))
}
