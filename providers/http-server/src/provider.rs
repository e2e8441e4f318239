//! The provider: turns link puts and deletes into routes, and stops its listeners on shutdown.

use std::sync::{Arc, OnceLock};

use ferry_provider_sdk::{
    ErrorKind, HealthStatus, InvocationContext, LinkPut, Provider, ProviderContext, RpcError,
    http::{WIT_INTERFACE, WIT_NAMESPACE, WIT_PACKAGE},
};
use tracing::{info, warn};

use crate::{
    config::{RouteConfig, Settings},
    router::{Route, Router},
};

/// Serves HTTP for the components it is linked to.
#[derive(Default)]
pub(crate) struct HttpServerProvider {
    state: OnceLock<Result<(Settings, Arc<Router>), String>>,
}

impl HttpServerProvider {
    /// Settings and router, built from the start-up config on first use.
    fn state(&self, ctx: &ProviderContext) -> Result<(&Settings, &Arc<Router>), String> {
        let state = self.state.get_or_init(|| {
            let settings = Settings::from_config(ctx.config()).map_err(|e| format!("invalid provider config: {e}"))?;
            info!(address = %settings.address, timeout = ?settings.timeout, max_body = settings.max_body, "http-server settings");
            let router = Arc::new(Router::new(ctx.client().clone(), &settings));
            Ok((settings, router))
        });
        match state {
            Ok((settings, router)) => Ok((settings, router)),
            Err(err) => Err(err.clone()),
        }
    }
}

impl Provider for HttpServerProvider {
    /// Routes live in the router, which every link shares (listeners serve many links).
    type Link = ();

    async fn handle(&self, _ctx: InvocationContext, operation: &str, _payload: Vec<u8>) -> Result<Vec<u8>, RpcError> {
        Err(RpcError::new(
            ErrorKind::UnknownOperation,
            format!("the http-server provider exports nothing; got {operation:?}"),
        ))
    }

    async fn on_link_put(&self, ctx: &ProviderContext, put: &LinkPut) -> Result<(), String> {
        let link = &put.link;
        if link.source_id != ctx.provider_id() {
            return Err(format!(
                "the http-server provider serves links from itself to a component, not from {}",
                link.source_id
            ));
        }
        if link.wit_namespace != WIT_NAMESPACE
            || link.wit_package != WIT_PACKAGE
            || !link.interfaces.iter().any(|i| i == WIT_INTERFACE)
        {
            return Err(format!(
                "link to {} must be over {WIT_NAMESPACE}:{WIT_PACKAGE}/{WIT_INTERFACE}, not {}:{}/{}",
                link.target_id,
                link.wit_namespace,
                link.wit_package,
                link.interfaces.join(",")
            ));
        }
        let (settings, router) = self.state(ctx)?;
        let config = RouteConfig::from_link(&put.source_config, settings)?;
        router.put(Route { key: link.key(), config }).await
    }

    async fn on_link_del(&self, ctx: &ProviderContext, put: &LinkPut, _state: Arc<()>) {
        if let Ok((_, router)) = self.state(ctx) {
            router.del(&put.link.key()).await;
        }
    }

    async fn health(&self, ctx: &ProviderContext) -> HealthStatus {
        match self.state(ctx) {
            Ok(_) => HealthStatus::healthy(),
            Err(err) => HealthStatus::unhealthy(err),
        }
    }

    async fn on_shutdown(&self, ctx: &ProviderContext) {
        match self.state(ctx) {
            Ok((_, router)) => router.shutdown().await,
            Err(err) => warn!(cause = %err, "stopping with an invalid config"),
        }
    }
}
