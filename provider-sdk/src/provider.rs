//! What a provider author implements ([`Provider`]) and what the SDK hands it.

use std::{collections::BTreeMap, future::Future, sync::Arc};

use ferry_proto::{RpcError, link::LinkPut};

use crate::{LatticeClient, LinkStore};

/// A capability provider. Only [`Provider::handle`] is required; the hooks have sensible
/// defaults. Hooks run concurrently with invocations, and an error in a hook never ends the
/// provider.
pub trait Provider: Send + Sync + 'static {
    /// Carry out one invocation from a linked caller. `ctx.link` is the link it came over.
    ///
    /// Capability modules offer a dispatcher that decodes typed payloads, for example
    /// [`crate::keyvalue::dispatch`].
    fn handle(
        &self,
        ctx: InvocationContext,
        operation: &str,
        payload: Vec<u8>,
    ) -> impl Future<Output = Result<Vec<u8>, RpcError>> + Send;

    /// A link involving this provider was created or changed. Returning an error rejects it:
    /// the host reports `link_set_failed`, and calls over it fail with `not_linked`.
    fn on_link_put(&self, ctx: &ProviderContext, link: &LinkPut) -> impl Future<Output = Result<(), String>> + Send {
        let _ = (ctx, link);
        async { Ok(()) }
    }

    /// A link involving this provider was deleted.
    fn on_link_del(&self, ctx: &ProviderContext, link: &LinkPut) -> impl Future<Output = ()> + Send {
        let _ = (ctx, link);
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

    /// A client to invoke components (`handle_http`, …) as this provider.
    pub fn client(&self) -> &LatticeClient {
        &self.inner.client
    }

    /// The links this instance currently holds.
    pub fn links(&self) -> &LinkStore {
        &self.inner.links
    }
}

/// One invocation as the provider sees it: who calls, over which link.
#[derive(Clone, Debug)]
pub struct InvocationContext {
    /// The caller's id (a component id).
    pub origin: String,
    /// The link the call came over, with its resolved config.
    pub link: Arc<LinkPut>,
    /// W3C trace context of the caller.
    pub trace_context: BTreeMap<String, String>,
    /// The provider's context.
    pub provider: ProviderContext,
}
