//! Redis backend: keys live verbatim in the link's Redis database; the bucket identifier is
//! not part of the key (choose a database per link with the URL's `/db`).

use ferry_provider_sdk::{RpcError, keyvalue::KeyValuePair};
use redis::{AsyncCommands as _, aio::ConnectionManager};

use futures::StreamExt as _;

use super::{Backend, Change, Changes, HEALTH_TIMEOUT, PAGE_SIZE};

pub(crate) struct RedisBackend {
    client: redis::Client,
    conn: ConnectionManager,
}

/// The keyspace events a watch needs: key-space channels (`K`), string commands (`$`: SET,
/// INCRBY, …), generic ones (`g`: DEL, …), expiry (`x`) and eviction (`e`).
const WATCH_EVENTS: &str = "K$gxe";

impl RedisBackend {
    /// Connect to `url`; the connection manager reconnects on its own after failures.
    pub(crate) async fn connect(url: &str) -> Result<Self, String> {
        let client = redis::Client::open(url).map_err(|e| format!("invalid Redis url: {e}"))?;
        let conn = ConnectionManager::new(client.clone()).await.map_err(|e| format!("cannot connect to Redis: {e}"))?;
        Ok(Self { client, conn })
    }

    /// Make the server publish the keyspace events a watch needs, keeping those it already does.
    async fn enable_keyspace_events(&self) -> Result<(), String> {
        let mut conn = self.conn.clone();
        let (_, current): (String, String) = redis::cmd("CONFIG")
            .arg("GET")
            .arg("notify-keyspace-events")
            .query_async(&mut conn)
            .await
            .map_err(|e| format!("cannot read notify-keyspace-events: {e}"))?;
        // `A` stands for every class of event (`$gxe` among them), not for `K`.
        let covered = |c: char| current.contains(c) || (c != 'K' && current.contains('A'));
        let missing: String = WATCH_EVENTS.chars().filter(|c| !covered(*c)).collect();
        if missing.is_empty() {
            return Ok(());
        }
        redis::cmd("CONFIG")
            .arg("SET")
            .arg("notify-keyspace-events")
            .arg(format!("{current}{missing}"))
            .query_async::<()>(&mut conn)
            .await
            .map_err(|e| {
                format!("cannot enable keyspace events (set notify-keyspace-events {WATCH_EVENTS} on the server): {e}")
            })
    }
}

fn backend_err(what: &str, err: redis::RedisError) -> RpcError {
    RpcError::provider(format!("Redis {what} failed: {err}"))
}

#[async_trait::async_trait]
impl Backend for RedisBackend {
    async fn health(&self) -> Result<(), String> {
        let mut conn = self.conn.clone();
        match tokio::time::timeout(HEALTH_TIMEOUT, redis::cmd("PING").query_async::<String>(&mut conn)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(err)) => Err(format!("Redis does not answer: {err}")),
            Err(_) => Err(format!("Redis did not answer within {HEALTH_TIMEOUT:?}")),
        }
    }

    async fn watch(&self, _bucket: &str, patterns: &[String]) -> Result<Changes, String> {
        self.enable_keyspace_events().await?;
        let db = self.client.get_connection_info().redis.db;
        let prefix = format!("__keyspace@{db}__:");
        let mut pubsub = self.client.get_async_pubsub().await.map_err(|e| format!("cannot subscribe: {e}"))?;
        let all = ["*".to_owned()];
        for pattern in if patterns.is_empty() { &all[..] } else { patterns } {
            pubsub.psubscribe(format!("{prefix}{pattern}")).await.map_err(|e| format!("cannot subscribe: {e}"))?;
        }
        let conn = self.conn.clone();
        let changes = pubsub.into_on_message().filter_map(move |msg| {
            let (mut conn, prefix) = (conn.clone(), prefix.clone());
            async move {
                let key = msg.get_channel_name().strip_prefix(&prefix)?.to_owned();
                let event: String = msg.get_payload().ok()?;
                match event.as_str() {
                    "del" | "expired" | "evicted" | "unlink" => Some(Ok(Change { key, value: None })),
                    // Every write of a string value: read what it is now.
                    "set" | "setrange" | "append" | "incrby" | "incrbyfloat" | "decrby" | "getset" | "mset"
                    | "msetnx" => match conn.get::<_, Option<Vec<u8>>>(&key).await {
                        Ok(Some(value)) => Some(Ok(Change { key, value: Some(value) })),
                        Ok(None) => Some(Ok(Change { key, value: None })),
                        Err(err) => Some(Err(format!("cannot read {key:?} after {event}: {err}"))),
                    },
                    _ => None,
                }
            }
        });
        Ok(changes.boxed())
    }

    async fn get(&self, _bucket: &str, key: &str) -> Result<Option<Vec<u8>>, RpcError> {
        self.conn.clone().get(key).await.map_err(|e| backend_err("GET", e))
    }

    async fn set(&self, _bucket: &str, key: &str, value: Vec<u8>) -> Result<(), RpcError> {
        self.conn.clone().set(key, value).await.map_err(|e| backend_err("SET", e))
    }

    async fn delete(&self, _bucket: &str, key: &str) -> Result<(), RpcError> {
        self.conn.clone().del(key).await.map_err(|e| backend_err("DEL", e))
    }

    async fn exists(&self, _bucket: &str, key: &str) -> Result<bool, RpcError> {
        self.conn.clone().exists(key).await.map_err(|e| backend_err("EXISTS", e))
    }

    async fn list_keys(&self, _bucket: &str, cursor: Option<u64>) -> Result<(Vec<String>, Option<u64>), RpcError> {
        let mut conn = self.conn.clone();
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor.unwrap_or(0))
            .arg("COUNT")
            .arg(PAGE_SIZE)
            .query_async(&mut conn)
            .await
            .map_err(|e| backend_err("SCAN", e))?;
        Ok((keys, (next != 0).then_some(next)))
    }

    async fn increment(&self, _bucket: &str, key: &str, delta: u64) -> Result<u64, RpcError> {
        let delta = i64::try_from(delta).map_err(|_| RpcError::bad_request("Redis counters hold at most i64::MAX"))?;
        let value: i64 = self.conn.clone().incr(key, delta).await.map_err(|e| backend_err("INCRBY", e))?;
        u64::try_from(value).map_err(|_| RpcError::bad_request(format!("value of {key:?} is negative")))
    }

    async fn get_many(&self, _bucket: &str, keys: Vec<String>) -> Result<Vec<Option<KeyValuePair>>, RpcError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let values: Vec<Option<Vec<u8>>> = redis::cmd("MGET")
            .arg(&keys)
            .query_async(&mut self.conn.clone())
            .await
            .map_err(|e| backend_err("MGET", e))?;
        Ok(keys.into_iter().zip(values).map(|(key, value)| value.map(|value| KeyValuePair { key, value })).collect())
    }

    async fn set_many(&self, _bucket: &str, items: Vec<KeyValuePair>) -> Result<(), RpcError> {
        if items.is_empty() {
            return Ok(());
        }
        let mut cmd = redis::cmd("MSET");
        for item in &items {
            cmd.arg(&item.key).arg(&item.value);
        }
        cmd.query_async::<()>(&mut self.conn.clone()).await.map_err(|e| backend_err("MSET", e))
    }

    async fn delete_many(&self, _bucket: &str, keys: Vec<String>) -> Result<(), RpcError> {
        if keys.is_empty() {
            return Ok(());
        }
        self.conn.clone().del(keys).await.map_err(|e| backend_err("DEL", e))
    }
}
