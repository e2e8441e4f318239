//! The key-value provider: a backend per link, chosen from the link's target config and held
//! by the SDK as the link's state; a watcher link (provider → component) also reports the
//! changes it selects to the component's `wasi:keyvalue/watcher`.

use std::{sync::Arc, time::Duration};

use ferry_provider_sdk::{
    ComponentStoreKind, ComponentStoreNames, HealthStatus, InvocationContext, LinkPut, Provider, ProviderContext,
    RpcError, async_nats,
    keyvalue::{self, KeyValue, KeyValuePair},
    redact,
};
use futures::StreamExt as _;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::{
    backend::{Backend, Changes, NatsBackend, RedisBackend},
    config::{BackendConfig, StoreNaming, WatchConfig},
};

/// Serves `wasi:keyvalue` for every link to it.
#[derive(Default)]
pub(crate) struct KeyValueProvider;

/// A link's state: its backend, built when the link arrives, and for a watcher link the task
/// that reports changes to the component (stopped when the state is dropped).
pub(crate) struct LinkBackend {
    backend: Arc<dyn Backend>,
    /// Held for its drop: the watch task stops with the link's state.
    _watching: Option<Watching>,
}

impl std::ops::Deref for LinkBackend {
    type Target = dyn Backend;

    fn deref(&self) -> &Self::Target {
        self.backend.as_ref()
    }
}

/// A watcher link's task.
struct Watching {
    stop: CancellationToken,
}

impl Drop for Watching {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

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
        let watcher = link.link.source_id == ctx.provider_id()
            && link.link.covers(keyvalue::WIT_NAMESPACE, keyvalue::WIT_PACKAGE, keyvalue::WATCHER_INTERFACE);
        if !watcher {
            let backend = open_backend(ctx, &link.target_config).await?;
            info!(source = %link.link.source_id, name = %link.link.name, backend = backend.1, "key-value link ready");
            return Ok(LinkBackend { backend: backend.0, _watching: None });
        }
        let (watch, config) = WatchConfig::split(&link.source_config);
        let (backend, kind) = open_backend(ctx, &config).await?;
        // The watch exists before the link is reported set: a change right after is seen.
        let changes = backend.watch(&watch.bucket, &watch.patterns).await?;
        let stop = CancellationToken::new();
        tokio::spawn(report_changes(
            ctx.clone(),
            backend.clone(),
            link.link.target_id.clone(),
            link.link.name.clone(),
            watch.clone(),
            changes,
            stop.clone(),
        ));
        info!(
            component = %link.link.target_id,
            name = %link.link.name,
            backend = kind,
            bucket = %watch.bucket,
            keys = %if watch.patterns.is_empty() { "all".to_owned() } else { watch.patterns.join(",") },
            "watcher link ready"
        );
        Ok(LinkBackend { backend, _watching: Some(Watching { stop }) })
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

/// The backend a link's config chooses, connected, and its kind for logs.
async fn open_backend(
    ctx: &ProviderContext,
    config: &std::collections::BTreeMap<String, String>,
) -> Result<(Arc<dyn Backend>, &'static str), String> {
    Ok(match BackendConfig::from_link(&crate::config::with_provider_defaults(config, ctx.config()))? {
        BackendConfig::Nats { nats, names, replicas, auto_create } => {
            let names = match names {
                StoreNaming::Lattice => ComponentStoreNames::lattice(ComponentStoreKind::KeyValue, ctx.lattice())
                    .map_err(|e| e.to_string())?,
                StoreNaming::Prefixed(prefix) => ComponentStoreNames::Prefixed(prefix),
                StoreNaming::Fixed(bucket) => ComponentStoreNames::Fixed(bucket),
            };
            let connection = nats.connect_store(ctx, "ferry-keyvalue-backend").await?;
            if nats.needs_own_connection() || nats.js_domain.is_some() {
                // Fail the link now if JetStream is off there, not on the first call.
                connection.jetstream().query_account().await.map_err(|e| {
                    let at = nats.servers.as_deref().map_or_else(|| "the lattice's NATS".into(), redact::url);
                    format!("JetStream unavailable at {at}: {e}")
                })?;
            }
            let backend = NatsBackend::new(connection, names, replicas, auto_create);
            backend.check_bucket().await?;
            (Arc::new(backend), "nats")
        }
        BackendConfig::Redis { url } => (Arc::new(RedisBackend::connect(&url).await?), "redis"),
    })
}

/// Report each change to the component, in order, until the link goes; a watch that ends (the
/// store restarted, the connection dropped) is opened again.
async fn report_changes(
    ctx: ProviderContext,
    backend: Arc<dyn Backend>,
    component: String,
    link_name: String,
    watch: WatchConfig,
    mut changes: Changes,
    stop: CancellationToken,
) {
    loop {
        loop {
            let change = tokio::select! {
                () = stop.cancelled() => return,
                change = changes.next() => change,
            };
            let change = match change {
                Some(Ok(change)) => change,
                Some(Err(err)) => {
                    warn!(%component, name = %link_name, cause = %err, "watch failed; opening it again");
                    break;
                }
                None => break,
            };
            let event = keyvalue::WatchEvent { bucket: watch.bucket.clone(), key: change.key, value: change.value };
            if let Err(err) = keyvalue::notify(ctx.client(), &component, &link_name, &event).await {
                warn!(%component, name = %link_name, key = %event.key, kind = ?err.kind, cause = %err.message, "change not delivered");
            }
        }
        changes = loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            match backend.watch(&watch.bucket, &watch.patterns).await {
                Ok(changes) => break changes,
                Err(err) => warn!(%component, name = %link_name, cause = %err, "cannot watch yet"),
            }
        };
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
