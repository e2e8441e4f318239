//! The key-value provider: a backend per link, chosen from the link's target config and held
//! by the SDK as the link's state.

use ferry_provider_sdk::{
    ComponentStoreKind, ComponentStoreNames, HealthStatus, InvocationContext, LinkPut, Provider, ProviderContext,
    RpcError, async_nats,
    keyvalue::{self, KeyValue, KeyValuePair},
    redact,
};
use tracing::info;

use crate::{
    backend::{Backend, NatsBackend, RedisBackend},
    config::{BackendConfig, StoreNaming},
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
        let (backend, kind): (LinkBackend, &str) = match config {
            BackendConfig::Nats { nats, names, replicas, auto_create } => {
                let names = match names {
                    StoreNaming::Lattice => ComponentStoreNames::lattice(ComponentStoreKind::KeyValue, ctx.lattice())
                        .map_err(|e| e.to_string())?,
                    StoreNaming::Prefixed(prefix) => ComponentStoreNames::Prefixed(prefix),
                    StoreNaming::Fixed(bucket) => ComponentStoreNames::Fixed(bucket),
                };
                let connection = nats.connect(ctx, "ferry-keyvalue-backend").await?;
                if nats.needs_own_connection() || nats.js_domain.is_some() {
                    // Fail the link now if JetStream is off there, not on the first call.
                    connection.jetstream().query_account().await.map_err(|e| {
                        let at = nats.servers.as_deref().map_or_else(|| "the lattice's NATS".into(), redact::url);
                        format!("JetStream unavailable at {at}: {e}")
                    })?;
                }
                let backend = NatsBackend::new(connection, names, replicas, auto_create);
                backend.check_bucket().await?;
                (Box::new(backend), "nats")
            }
            BackendConfig::Redis { url } => (Box::new(RedisBackend::connect(&url).await?), "redis"),
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
