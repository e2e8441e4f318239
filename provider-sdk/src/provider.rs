//! What a provider author implements ([`Provider`]) and what the SDK hands it.

use std::{collections::BTreeMap, future::Future, sync::Arc};

use ferry_proto::{RpcError, link::LinkPut};

use ferry_proto::{auth::MacKey, stream::DEFAULT_CHUNK_SIZE};

use ferry_lattice::{
    body::{INLINE_WAIT, LatticeBody},
    stream::{self, ByteStream},
};

use crate::{LatticeClient, LinkStore};

/// A capability provider: [`Provider::handle`] and [`Provider::on_link_put`] are required,
/// the other hooks have sensible defaults. Hooks run concurrently with invocations, and an
/// error in a hook never ends the provider.
pub trait Provider: Send + Sync + 'static {
    /// What the provider keeps for each link it accepts — a backend connection, subscriptions;
    /// `()` for nothing. The SDK holds it with the link and hands it to every invocation over
    /// the link ([`InvocationContext::state`]), so a provider keeps no link map of its own.
    type Link: Send + Sync + 'static;

    /// Carry out one invocation from a linked caller. `ctx.link` is the link it came over,
    /// `ctx.state` what [`Provider::on_link_put`] built for it.
    ///
    /// Capability modules offer a dispatcher that decodes typed payloads, for example
    /// [`crate::keyvalue::dispatch`].
    fn handle(
        &self,
        ctx: InvocationContext<Self::Link>,
        operation: &str,
        payload: Vec<u8>,
    ) -> impl Future<Output = Result<Vec<u8>, RpcError>> + Send;

    /// The provider joined the lattice: its subscriptions are live and the links the bucket
    /// holds are about to be applied. Start background work that needs the context here (it
    /// is the same context every hook gets); the default does nothing.
    fn on_start(&self, ctx: &ProviderContext) -> impl Future<Output = ()> + Send {
        let _ = ctx;
        async {}
    }

    /// A link involving this provider was created or changed: check it and build its state.
    /// Returning an error rejects it: the host reports `link_set_failed`, and calls over it fail
    /// with `not_linked`. Calls over a changed link meet the new state once this returns.
    fn on_link_put(
        &self,
        ctx: &ProviderContext,
        link: &LinkPut,
    ) -> impl Future<Output = Result<Self::Link, String>> + Send;

    /// A link's state is no longer in use: the link was deleted, or replaced by a changed one,
    /// or the change was rejected. Release what `on_link_put` built (stop subscriptions); the
    /// default drops it.
    fn on_link_del(
        &self,
        ctx: &ProviderContext,
        link: &LinkPut,
        state: Arc<Self::Link>,
    ) -> impl Future<Output = ()> + Send {
        let _ = (ctx, link, state);
        async {}
    }

    /// Answer a health check.
    fn health(&self, ctx: &ProviderContext) -> impl Future<Output = HealthStatus> + Send {
        let _ = ctx;
        async { HealthStatus::healthy() }
    }

    /// The provider is about to stop: release backend connections.
    fn on_shutdown(&self, ctx: &ProviderContext) -> impl Future<Output = ()> + Send {
        let _ = ctx;
        async {}
    }
}

/// A provider's health as its hook reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthStatus {
    /// Whether the provider can serve.
    pub healthy: bool,
    /// Detail for operators.
    pub message: String,
}

impl HealthStatus {
    /// Healthy, with no detail.
    pub fn healthy() -> Self {
        Self { healthy: true, message: "ok".into() }
    }

    /// Unhealthy, with a reason.
    pub fn unhealthy(message: impl Into<String>) -> Self {
        Self { healthy: false, message: message.into() }
    }
}

/// What a provider instance knows about itself, handed to every hook.
#[derive(Clone, Debug)]
pub struct ProviderContext {
    pub(crate) inner: Arc<ContextInner>,
}

#[derive(Debug)]
pub(crate) struct ContextInner {
    pub(crate) instance_id: String,
    pub(crate) config: BTreeMap<String, String>,
    pub(crate) nats_url: String,
    pub(crate) client: LatticeClient,
    pub(crate) links: LinkStore,
    /// The connection for components' data in JetStream, made on first use when the provider
    /// has a store identity of its own ([`ferry_lattice::nats::store_auth_from_env`]).
    pub(crate) store: tokio::sync::OnceCell<async_nats::Client>,
}

impl ProviderContext {
    /// The provider id.
    pub fn provider_id(&self) -> &str {
        self.inner.client.origin()
    }

    /// This process's instance id.
    pub fn instance_id(&self) -> &str {
        &self.inner.instance_id
    }

    /// The lattice.
    pub fn lattice(&self) -> &str {
        self.inner.client.lattice()
    }

    /// Provider-wide config from the start-up data.
    pub fn config(&self) -> &BTreeMap<String, String> {
        &self.inner.config
    }

    /// The URL of the lattice's NATS, for a provider that needs connections of its own there
    /// (e.g. with settings of its own).
    pub fn nats_url(&self) -> &str {
        &self.inner.nats_url
    }

    /// The NATS connection of the lattice, for backends that want it (JetStream KV, …).
    pub fn nats(&self) -> &async_nats::Client {
        self.inner.client.nats()
    }

    /// The connection to keep components' data in JetStream with: the lattice's, unless the
    /// provider was given a store identity of its own (`FERRY_STORE_NATS_*`, as `ferry
    /// nats-config` writes for providers granted `jetstream`), which then connects once, to the
    /// lattice's servers, and is shared by every link.
    ///
    /// # Errors
    /// A description when the store identity is unusable or its server does not answer.
    pub async fn store_nats(&self) -> Result<async_nats::Client, String> {
        let Some(auth) = ferry_lattice::nats::store_auth_from_env().map_err(|e| e.to_string())? else {
            return Ok(self.nats().clone());
        };
        self.inner
            .store
            .get_or_try_init(|| async {
                let security = ferry_lattice::NatsSecurity::from_env().map_err(|e| e.to_string())?;
                let options =
                    ferry_lattice::NatsOptions::new(self.nats_url(), format!("ferry-store-{}", self.provider_id()))
                        .secured(&security)
                        .with_auth(auth);
                let connection = options.connect().await.map_err(|e| {
                    format!(
                        "cannot connect to NATS at {} for component data: {e}",
                        ferry_proto::redact::url(self.nats_url())
                    )
                })?;
                Ok(connection.client)
            })
            .await
            .cloned()
    }

    /// A client to invoke components (`handle_http`, …) as this provider.
    pub fn client(&self) -> &LatticeClient {
        &self.inner.client
    }

    /// The links this instance currently holds, with their states
    /// ([`LinkStore::states`]).
    pub fn links(&self) -> &LinkStore {
        &self.inner.links
    }
}

/// One invocation as the provider sees it: who calls, over which link, and the state the
/// provider built for that link (`L`, its [`Provider::Link`]).
#[derive(Debug)]
pub struct InvocationContext<L = ()> {
    /// The caller's id (a component id).
    pub origin: String,
    /// The link the call came over, with its resolved config.
    pub link: Arc<LinkPut>,
    /// What [`Provider::on_link_put`] built for the link.
    pub state: Arc<L>,
    /// W3C trace context for the work this call leads to: when the call is traced, its
    /// `traceparent` names this provider's span for it (a child of the caller's), which
    /// requests the provider makes on the call's behalf carry ([`Self::traceparent`]).
    pub trace_context: BTreeMap<String, String>,
    /// The provider's context.
    pub provider: ProviderContext,
    /// When the caller stops waiting, if it said: work past it is wasted, and work the
    /// provider hands on (to a backend, another process) should carry it.
    pub deadline: Option<tokio::time::Instant>,
    /// The invocation's MAC key: streams that belong to it are signed with it.
    pub(crate) key: MacKey,
}

impl<L> Clone for InvocationContext<L> {
    fn clone(&self) -> Self {
        Self {
            origin: self.origin.clone(),
            link: self.link.clone(),
            state: self.state.clone(),
            trace_context: self.trace_context.clone(),
            provider: self.provider.clone(),
            deadline: self.deadline,
            key: self.key.clone(),
        }
    }
}

impl<L> InvocationContext<L> {
    /// The `traceparent` requests made on this call's behalf carry (an outgoing HTTP request's
    /// header, say), when the call is traced.
    pub fn traceparent(&self) -> Option<ferry_proto::trace::TraceParent> {
        ferry_proto::trace::TraceParent::of(&self.trace_context)
    }

    /// The body a payload names: its inline part, then the stream the caller offered (if
    /// any), pulled as it is read.
    ///
    /// # Errors
    /// [`ferry_proto::ErrorKind::BadRequest`] for an invalid stream id.
    pub fn pull_body(&self, inline: Vec<u8>, stream: Option<&str>) -> Result<LatticeBody, RpcError> {
        let client = self.provider.client();
        LatticeBody::from_payload(client.nats(), client.lattice(), inline, stream, &self.key, client.timeout())
    }

    /// Send `body` back to the caller: its first part (up to a chunk) to put inline in the
    /// answer, and the id of a stream offering the rest when there is more.
    ///
    /// # Errors
    /// The body's own error while reading its first part, or [`ferry_proto::ErrorKind::Unavailable`]
    /// when the stream cannot be offered.
    pub async fn offer_body(&self, body: ByteStream) -> Result<(Vec<u8>, Option<String>), RpcError> {
        let (inline, rest) = stream::split_inline(body, DEFAULT_CHUNK_SIZE, INLINE_WAIT).await?;
        let Some(rest) = rest else { return Ok((inline.to_vec(), None)) };
        let client = self.provider.client();
        let id = stream::new_stream_id();
        stream::offer(
            client.nats(),
            client.lattice(),
            &id,
            self.key.clone(),
            rest,
            DEFAULT_CHUNK_SIZE,
            client.timeout(),
        )
        .await?;
        Ok((inline.to_vec(), Some(id)))
    }
}
