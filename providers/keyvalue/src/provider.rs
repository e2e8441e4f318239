//! The key-value provider: a backend per link, chosen from the link's target config and held
//! by the SDK as the link's state.

use ferry_provider_sdk::async_nats::jetstream;
use ferry_provider_sdk::{
    ComponentStoreKind, ComponentStoreNames, HealthStatus, InvocationContext, LinkPut, NatsOptions, Provider,
    ProviderContext, RpcError, async_nats,
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
pub(crate) struct KeyValueProvider;

/// A link's state: its backend, built when the link arrives.
type LinkBackend = Box<dyn Backend>;

impl Provider for KeyValueProvider {
    type Link = LinkBackend;

    async fn handle(
        &self,
        ctx: InvocationContext<LinkBackend>,
        operation: &str,
        payload: Vec<u8>,
    ) -> Result<Vec<u8>, RpcError> {
        keyvalue::dispatch(self, &ctx, operation, &payload).await
    }

    async fn on_link_put(&self, ctx: &ProviderContext, link: &LinkPut) -> Result<LinkBackend, String> {
        let config = BackendConfig::from_link(&link.target_config)?;
        let names = |prefix: &Option<String>| match prefix {
            Some(prefix) => Ok(ComponentStoreNames::Prefixed(prefix.clone())),
            None => {
                ComponentStoreNames::lattice(ComponentStoreKind::KeyValue, ctx.lattice()).map_err(|e| e.to_string())
            }
        };
        let backend: LinkBackend = match &config {
            BackendConfig::Nats { url: None, bucket_prefix, replicas } => {
                Box::new(NatsBackend::new(ctx.nats().clone(), names(bucket_prefix)?, *replicas))
            }
            BackendConfig::Nats { url: Some(url), bucket_prefix, replicas } => {
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
                Box::new(NatsBackend::new(nats, names(bucket_prefix)?, *replicas))
            }
            BackendConfig::Redis { url } => Box::new(RedisBackend::connect(url).await?),
        };
        let kind = match config {
            BackendConfig::Nats { .. } => "nats",
            BackendConfig::Redis { .. } => "redis",
        };
        info!(source = %link.link.source_id, name = %link.link.name, backend = kind, "key-value link ready");
        Ok(backend)
    }

    /// Healthy when the lattice connection is up and every link's backend answers a probe.
    async fn health(&self, ctx: &ProviderContext) -> HealthStatus {
        if let state @ (async_nats::connection::State::Disconnected | async_nats::connection::State::Pending) =
            ctx.nats().connection_state()
        {
            return HealthStatus::unhealthy(format!("lattice NATS connection is {state:?}"));
        }
        let mut failing = Vec::new();
        for (put, backend) in ctx.links().states::<LinkBackend>() {
            if let Err(why) = backend.health().await {
                let link = &put.link;
                failing.push(format!("link {} → {} ({}): {why}", link.source_id, link.target_id, link.name));
            }
        }
        if failing.is_empty() { HealthStatus::healthy() } else { HealthStatus::unhealthy(failing.join("; ")) }
    }
}

impl KeyValue for KeyValueProvider {
    async fn get(
        &self,
        ctx: &InvocationContext<LinkBackend>,
        bucket: &str,
        key: &str,
    ) -> Result<Option<Vec<u8>>, RpcError> {
        ctx.state.get(bucket, key).await
    }

    async fn set(
        &self,
        ctx: &InvocationContext<LinkBackend>,
        bucket: &str,
        key: &str,
        value: Vec<u8>,
    ) -> Result<(), RpcError> {
        ctx.state.set(bucket, key, value).await
    }

    async fn delete(&self, ctx: &InvocationContext<LinkBackend>, bucket: &str, key: &str) -> Result<(), RpcError> {
        ctx.state.delete(bucket, key).await
    }

    async fn exists(&self, ctx: &InvocationContext<LinkBackend>, bucket: &str, key: &str) -> Result<bool, RpcError> {
        ctx.state.exists(bucket, key).await
    }

    async fn list_keys(
        &self,
        ctx: &InvocationContext<LinkBackend>,
        bucket: &str,
        cursor: Option<u64>,
    ) -> Result<keyvalue::ListKeysResponse, RpcError> {
        let (keys, cursor) = ctx.state.list_keys(bucket, cursor).await?;
        Ok(keyvalue::ListKeysResponse { keys, cursor })
    }

    async fn increment(
        &self,
        ctx: &InvocationContext<LinkBackend>,
        bucket: &str,
        key: &str,
        delta: u64,
    ) -> Result<u64, RpcError> {
        ctx.state.increment(bucket, key, delta).await
    }

    async fn get_many(
        &self,
        ctx: &InvocationContext<LinkBackend>,
        bucket: &str,
        keys: Vec<String>,
    ) -> Result<Vec<Option<KeyValuePair>>, RpcError> {
        ctx.state.get_many(bucket, keys).await
    }

    async fn set_many(
        &self,
        ctx: &InvocationContext<LinkBackend>,
        bucket: &str,
        items: Vec<KeyValuePair>,
    ) -> Result<(), RpcError> {
        ctx.state.set_many(bucket, items).await
    }

    async fn delete_many(
        &self,
        ctx: &InvocationContext<LinkBackend>,
        bucket: &str,
        keys: Vec<String>,
    ) -> Result<(), RpcError> {
        ctx.state.delete_many(bucket, keys).await
    }
}
