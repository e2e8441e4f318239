//! Listeners and routes: one listener per address, as many routes on it as links name it; a
//! request goes to the most specific route that matches its host and path.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, RwLock},
    time::Duration,
};

use ferry_provider_sdk::{LatticeClient, LinkKey};
use tokio::{net::TcpListener, sync::Semaphore, task::JoinSet};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::{
    config::{RouteConfig, Settings, TlsFiles, under_prefix},
    serve::{self, Shared},
};

/// Time a client gets to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Where one link's requests go.
#[derive(Debug, Clone)]
pub(crate) struct Route {
    pub(crate) key: LinkKey,
    pub(crate) config: RouteConfig,
}

impl Route {
    /// The component invoked.
    pub(crate) fn component(&self) -> &str {
        &self.key.target_id
    }

    /// The link name invocations go out under.
    pub(crate) fn link_name(&self) -> &str {
        &self.key.name
    }
}

/// The routes of one listener, read on every request.
pub(crate) type RouteTable = Arc<RwLock<Vec<Arc<Route>>>>;

/// Pick the route for a request to `host` (normalized, if known) and `path`: a route naming
/// the host beats one that does not, then the longest path prefix wins.
pub(crate) fn select(routes: &[Arc<Route>], host: Option<&str>, path: &str) -> Option<Arc<Route>> {
    routes
        .iter()
        .filter(|r| r.config.host.as_deref().is_none_or(|h| Some(h) == host))
        .filter(|r| under_prefix(path, &r.config.path))
        .max_by_key(|r| (r.config.host.is_some(), r.config.path.len()))
        .cloned()
}

struct Listener {
    routes: RouteTable,
    /// The certificate it serves HTTPS with; `None` for plain HTTP.
    tls: Option<TlsFiles>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

/// Every listener of the provider.
pub(crate) struct Router {
    listeners: tokio::sync::Mutex<HashMap<SocketAddr, Listener>>,
    client: LatticeClient,
    drain: Duration,
    /// One permit per open connection, across every listener: [`Settings::max_connections`].
    connections: Arc<Semaphore>,
    body_idle: Duration,
}

impl Router {
    pub(crate) fn new(client: LatticeClient, settings: &Settings) -> Self {
        Self {
            listeners: tokio::sync::Mutex::new(HashMap::new()),
            client,
            drain: settings.drain,
            connections: Arc::new(Semaphore::new(settings.max_connections)),
            body_idle: settings.body_idle,
        }
    }

    /// Add (or replace) the route of a link, opening its listener if needed.
    pub(crate) async fn put(&self, route: Route) -> Result<(), String> {
        let mut listeners = self.listeners.lock().await;
        // A re-put of the same link replaces its route, wherever it was.
        let address = route.config.address;
        if let Some((old_address, old)) = remove_route(&mut listeners, &route.key) {
            if old_address == address {
                listeners.insert(old_address, old);
            } else {
                self.close(old_address, old);
            }
        }
        if let Some(listener) = listeners.get(&address) {
            if listener.tls != route.config.tls {
                let has = |tls: &Option<TlsFiles>| {
                    tls.as_ref().map_or_else(|| "plain HTTP".to_owned(), |t| format!("HTTPS with {}", t.cert.display()))
                };
                return Err(format!(
                    "{address} serves {} for other links; this link asks for {}",
                    has(&listener.tls),
                    has(&route.config.tls)
                ));
            }
            let routes = listener.routes.read().unwrap_or_else(|p| p.into_inner());
            if let Some(other) =
                routes.iter().find(|r| r.config.host == route.config.host && r.config.path == route.config.path)
            {
                return Err(format!(
                    "{address} host {:?} path {} is already routed to {} by link {:?}",
                    route.config.host.as_deref().unwrap_or("*"),
                    route.config.path,
                    other.component(),
                    other.key.name
                ));
            }
        }
        let listener = match listeners.get(&address) {
            Some(listener) => listener,
            None => {
                let listener = self.open(address, route.config.tls.clone()).await?;
                listeners.entry(address).or_insert(listener)
            }
        };
        info!(
            address = %address,
            host = route.config.host.as_deref().unwrap_or("*"),
            path = %route.config.path,
            component = %route.component(),
            "route added"
        );
        listener.routes.write().unwrap_or_else(|p| p.into_inner()).push(Arc::new(route));
        Ok(())
    }

    /// Remove a link's route; its listener closes when it has no routes left.
    pub(crate) async fn del(&self, key: &LinkKey) {
        let mut listeners = self.listeners.lock().await;
        if let Some((address, listener)) = remove_route(&mut listeners, key) {
            self.close(address, listener);
        }
    }

    /// Close every listener and wait for in-flight requests (up to the drain time).
    pub(crate) async fn shutdown(&self) {
        let listeners: Vec<_> = self.listeners.lock().await.drain().collect();
        for (_, listener) in &listeners {
            listener.stop.cancel();
        }
        for (address, listener) in listeners {
            if let Err(err) = listener.task.await {
                warn!(address = %address, cause = %err, "listener task failed");
            }
        }
    }

    async fn open(&self, address: SocketAddr, tls: Option<TlsFiles>) -> Result<Listener, String> {
        let acceptor = tls.as_ref().map(crate::tls::acceptor).transpose()?;
        let tcp = TcpListener::bind(address).await.map_err(|e| format!("cannot listen on {address}: {e}"))?;
        let routes: RouteTable = Arc::default();
        let stop = CancellationToken::new();
        let shared = Arc::new(Shared {
            routes: routes.clone(),
            client: self.client.clone(),
            body_idle: self.body_idle,
            https: acceptor.is_some(),
        });
        let task = tokio::spawn(accept_loop(
            tcp,
            acceptor,
            address,
            shared,
            self.connections.clone(),
            stop.clone(),
            self.drain,
        ));
        info!(address = %address, https = tls.is_some(), "listening");
        Ok(Listener { routes, tls, stop, task })
    }

    fn close(&self, address: SocketAddr, listener: Listener) {
        info!(address = %address, "closing listener: no routes left");
        listener.stop.cancel();
        // The listener drains on its own task; nothing waits for it here.
        drop(listener.task);
    }
}

/// Take `key`'s route out of whichever listener has it; returns that listener when it is left
/// empty (and so removed from the map).
fn remove_route(listeners: &mut HashMap<SocketAddr, Listener>, key: &LinkKey) -> Option<(SocketAddr, Listener)> {
    let mut emptied = None;
    for (address, listener) in listeners.iter() {
        let mut routes = listener.routes.write().unwrap_or_else(|p| p.into_inner());
        let before = routes.len();
        routes.retain(|r| r.key != *key);
        if routes.len() != before {
            info!(address = %address, component = %key.target_id, name = %key.name, "route removed");
            if routes.is_empty() {
                emptied = Some(*address);
            }
            break;
        }
    }
    emptied.and_then(|address| listeners.remove(&address).map(|l| (address, l)))
}

async fn accept_loop(
    tcp: TcpListener,
    tls: Option<TlsAcceptor>,
    address: SocketAddr,
    shared: Arc<Shared>,
    slots: Arc<Semaphore>,
    stop: CancellationToken,
    drain: Duration,
) {
    let mut connections = JoinSet::new();
    let mut refused: u64 = 0;
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = tcp.accept() => match accepted {
                Ok((stream, peer)) => {
                    // Latency matters more than packet count for request/response traffic.
                    let _ = stream.set_nodelay(true);
                    let Ok(slot) = slots.clone().try_acquire_owned() else {
                        refused += 1;
                        if refused.is_power_of_two() || refused.is_multiple_of(1000) {
                            warn!(address = %address, refused_total = refused, "connection limit reached: answering 503");
                        }
                        connections.spawn(serve::refuse(stream));
                        continue;
                    };
                    let (shared, stop, tls) = (shared.clone(), stop.clone(), tls.clone());
                    connections.spawn(async move {
                        let _slot = slot;
                        match tls {
                            None => serve::connection(stream, peer, shared, stop).await,
                            Some(tls) => match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(stream)).await {
                                Ok(Ok(stream)) => serve::connection(stream, peer, shared, stop).await,
                                Ok(Err(err)) => debug!(peer = %peer, cause = %err, "TLS handshake failed"),
                                Err(_) => debug!(peer = %peer, "TLS handshake timed out"),
                            },
                        }
                    });
                }
                Err(err) => {
                    // Out of file descriptors or similar: back off instead of spinning.
                    warn!(address = %address, cause = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    drop(tcp);
    let in_flight = connections.len();
    if in_flight > 0 {
        info!(address = %address, connections = in_flight, "draining");
    }
    let drained = tokio::time::timeout(drain, async { while connections.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        warn!(address = %address, left = connections.len(), "connections still open after {drain:?}: closing them");
        connections.abort_all();
    }
    info!(address = %address, "listener closed");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;

    fn route(target: &str, pairs: &[(&str, &str)]) -> Arc<Route> {
        let config: std::collections::BTreeMap<String, String> =
            pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        let defaults = Settings::from_config(&Default::default()).unwrap();
        Arc::new(Route {
            key: LinkKey {
                source_id: "http".into(),
                target_id: target.into(),
                wit_namespace: "wasi".into(),
                wit_package: "http".into(),
                name: "default".into(),
            },
            config: RouteConfig::from_link(&config, &defaults).unwrap(),
        })
    }

    #[test]
    fn the_most_specific_route_wins() {
        let routes = vec![
            route("root", &[]),
            route("api", &[("path", "/api")]),
            route("api-v2", &[("path", "/api/v2")]),
            route("shop", &[("host", "shop.example")]),
            route("shop-api", &[("host", "shop.example"), ("path", "/api")]),
        ];
        let pick = |host: Option<&str>, path| select(&routes, host, path).map(|r| r.component().to_owned());
        assert_eq!(pick(None, "/").as_deref(), Some("root"));
        assert_eq!(pick(Some("other"), "/api/x").as_deref(), Some("api"));
        assert_eq!(pick(None, "/api/v2/x").as_deref(), Some("api-v2"));
        assert_eq!(pick(None, "/apix").as_deref(), Some("root"));
        assert_eq!(pick(Some("shop.example"), "/").as_deref(), Some("shop"));
        assert_eq!(pick(Some("shop.example"), "/api/v2").as_deref(), Some("shop-api"));
        let only_api = vec![route("api", &[("path", "/api")])];
        assert!(select(&only_api, None, "/other").is_none());
    }
}
