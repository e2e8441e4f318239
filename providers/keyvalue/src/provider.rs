//! The key-value provider: a backend per link, chosen from the link's target config.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
};

use ferry_provider_sdk::async_nats::jetstream;
use ferry_provider_sdk::{
    HealthStatus, InvocationContext, LinkKey, LinkPut, NatsOptions, Provider, ProviderContext, RpcError, async_nats,
    keyvalue::{self, KeyValue, KeyValuePair},
    redact,
};
use tracing::info;

use crate::{
    backend::{Backend, NatsBackend, RedisBackend},
    config::BackendConfig,
};

/// Serves `wasi:keyvalue` for every link to it.
#[derive(Default)]
pub(crate) struct KeyValueProvider {
    /// The backend of each link, built when the link arrives.
    backends: RwLock<HashMap<LinkKey, Arc<dyn Backend>>>,
}

impl KeyValueProvider {
    fn backend(&self, ctx: &InvocationContext) -> Result<Arc<dyn Backend>, RpcError> {
        let backends = self.backends.read().unwrap_or_else(|p| p.into_inner());
        backends
            .get(&ctx.link.link.key())
            .cloned()
            .ok_or_else(|| RpcError::not_linked("link has no backend (it was rejected or is being removed)"))
    }
}

impl Provider for KeyValueProvider {
    async fn handle(&self, ctx: InvocationContext, operation: &str, payload: Vec<u8>) -> Result<Vec<u8>, RpcError> {
        keyvalue::dispatch(self, &ctx, operation, &payload).await
    }

    async fn on_link_put(&self, ctx: &ProviderContext, link: &LinkPut) -> Result<(), String> {
        let config = BackendConfig::from_link(&link.target_config)?;
        let backend: Arc<dyn Backend> = match &config {
            BackendConfig::Nats { url: None, bucket_prefix } => {
                Arc::new(NatsBackend::new(ctx.nats().clone(), bucket_prefix.clone()))
            }
            BackendConfig::Nats { url: Some(url), bucket_prefix } => {
                let nats = NatsOptions::new(url, "ferry-keyvalue-backend")
                    .connect()
                    .await
                    .map_err(|e| format!("cannot connect to NATS at {}: {e}", redact::url(url)))?
                    .client;
                // Fail the link now if JetStream is off, not on the first call.
                jetstream::new(nats.clone())
                    .query_account()
                    .await
                    .map_err(|e| format!("JetStream unavailable at {}: {e}", redact::url(url)))?;
                Arc::new(NatsBackend::new(nats, bucket_prefix.clone()))
            }
            BackendConfig::Redis { url } => Arc::new(RedisBackend::connect(url).await?),
        };
        let kind = match config {
            BackendConfig::Nats { .. } => "nats",
            BackendConfig::Redis { .. } => "redis",
        };
        info!(source = %link.link.source_id, name = %link.link.name, backend = kind, "key-value link ready");
        self.backends.write().unwrap_or_else(|p| p.into_inner()).insert(link.link.key(), backend);
        Ok(())
    }

    async fn on_link_del(&self, _ctx: &ProviderContext, link: &LinkPut) {
        self.backends.write().unwrap_or_else(|p| p.into_inner()).remove(&link.link.key());
    }

    /// Healthy when the lattice connection is up and every link's backend answers a probe.
    async fn health(&self, ctx: &ProviderContext) -> HealthStatus {
        if let state @ (async_nats::connection::State::Disconnected | async_nats::connection::State::Pending) =
            ctx.nats().connection_state()
        {
            return HealthStatus::unhealthy(format!("lattice NATS connection is {state:?}"));
        }
        let backends: Vec<(LinkKey, Arc<dyn Backend>)> = self
            .backends
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(k, b)| (k.clone(), b.clone()))
            .collect();
        let mut failing = Vec::new();
        for (key, backend) in backends {
            if let Err(why) = backend.health().await {
                failing.push(format!("link {} → {} ({}): {why}", key.source_id, key.target_id, key.name));
            }
        }
        if failing.is_empty() { HealthStatus::healthy() } else { HealthStatus::unhealthy(failing.join("; ")) }
    }
}

impl KeyValue for KeyValueProvider {
    async fn open(&self, ctx: &InvocationContext, bucket: &str) -> Result<(), RpcError> {
        self.backend(ctx)?.open(bucket).await
    }

    async fn get(&self, ctx: &InvocationContext, bucket: &str, key: &str) -> Result<Option<Vec<u8>>, RpcError> {
        self.backend(ctx)?.get(bucket, key).await
    }

    async fn set(&self, ctx: &InvocationContext, bucket: &str, key: &str, value: Vec<u8>) -> Result<(), RpcError> {
        self.backend(ctx)?.set(bucket, key, value).await
    }

    async fn delete(&self, ctx: &InvocationContext, bucket: &str, key: &str) -> Result<(), RpcError> {
        self.backend(ctx)?.delete(bucket, key).await
    }

    async fn exists(&self, ctx: &InvocationContext, bucket: &str, key: &str) -> Result<bool, RpcError> {
        self.backend(ctx)?.exists(bucket, key).await
    }

    async fn list_keys(
        &self,
        ctx: &InvocationContext,
        bucket: &str,
        cursor: Option<u64>,
    ) -> Result<keyvalue::ListKeysResponse, RpcError> {
        let (keys, cursor) = self.backend(ctx)?.list_keys(bucket, cursor).await?;
        Ok(keyvalue::ListKeysResponse { keys, cursor })
    }

    async fn increment(&self, ctx: &InvocationContext, bucket: &str, key: &str, delta: u64) -> Result<u64, RpcError> {
        self.backend(ctx)?.increment(bucket, key, delta).await
    }

    async fn get_many(
        &self,
        ctx: &InvocationContext,
        bucket: &str,
        keys: Vec<String>,
    ) -> Result<Vec<Option<KeyValuePair>>, RpcError> {
        self.backend(ctx)?.get_many(bucket, keys).await
    }

    async fn set_many(&self, ctx: &InvocationContext, bucket: &str, items: Vec<KeyValuePair>) -> Result<(), RpcError> {
        self.backend(ctx)?.set_many(bucket, items).await
    }

    async fn delete_many(&self, ctx: &InvocationContext, bucket: &str, keys: Vec<String>) -> Result<(), RpcError> {
        self.backend(ctx)?.delete_many(bucket, keys).await
    }
}
