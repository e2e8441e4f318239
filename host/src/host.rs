//! [`HostBuilder`] builds a [`Host`]; [`Host::run`] starts its tasks and drains them on
//! shutdown.

use std::{
    collections::{BTreeMap, HashMap},
    future::Future,
    sync::{Arc, Mutex},
    time::Duration,
};

use ferry_proto::auth::{ClusterKey, ReplayGuard};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::{info, warn};
use wasmtime::{
    Engine,
    component::{Component, Linker},
};

use crate::{
    HostError, Limits,
    budget::Budget,
    capability,
    component::RunningComponent,
    ctl, engine,
    events::Events,
    lattice::LatticeView,
    rpc::{client::RpcClient, server::ServeContext},
    state::HostState,
};

/// Default timeout of a capability call from a component to a provider.
pub const DEFAULT_RPC_TIMEOUT: Duration = Duration::from_secs(10);
/// How long in-flight invocations may finish after shutdown starts.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Configures a [`Host`].
#[derive(Debug, Clone)]
pub struct HostBuilder {
    nats_url: String,
    lattice: String,
    cluster_seed: Option<String>,
    labels: BTreeMap<String, String>,
    rpc_timeout: Duration,
    limits: Limits,
}

impl HostBuilder {
    /// A host joining `lattice` through the NATS server at `nats_url`.
    pub fn new(nats_url: impl Into<String>, lattice: impl Into<String>) -> Self {
        Self {
            nats_url: nats_url.into(),
            lattice: lattice.into(),
            cluster_seed: None,
            labels: BTreeMap::new(),
            rpc_timeout: DEFAULT_RPC_TIMEOUT,
            limits: Limits::default(),
        }
    }

    /// The lattice's cluster seed (`SC…`); without one, a fresh key is generated, which only
    /// suits a lattice of one host.
    pub fn cluster_seed(mut self, seed: impl Into<String>) -> Self {
        self.cluster_seed = Some(seed.into());
        self
    }

    /// A label describing the host (`zone=a`).
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    /// Timeout of capability calls to providers.
    pub fn rpc_timeout(mut self, timeout: Duration) -> Self {
        self.rpc_timeout = timeout;
        self
    }

    /// Per-instance resource limits.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Connect to NATS, open the lattice bucket and prepare wasmtime. Nothing is served until
    /// [`Host::run`].
    ///
    /// # Errors
    /// [`HostError`] when the seed is invalid, NATS or JetStream is unreachable, or wasmtime
    /// rejects the configuration.
    pub async fn build(self) -> Result<Host, HostError> {
        ferry_proto::subject::validate_id("lattice", &self.lattice)?;
        let cluster = match &self.cluster_seed {
            Some(seed) => ClusterKey::from_seed(seed)?,
            None => {
                let (key, _seed) = ClusterKey::generate()?;
                warn!(
                    cluster_key = key.public_key(),
                    "no cluster seed given: generated one; providers need credentials from it"
                );
                key
            }
        };
        let id = nkeys::KeyPair::new_server().public_key();
        let connection = ferry_lattice::NatsOptions::new(&self.nats_url, format!("ferry-host-{id}")).connect().await?;
        let (nats, reconnects) = (connection.client, connection.reconnects);
        let view = LatticeView::open(&nats, &self.lattice, reconnects).await?;
        let engine = engine::new_engine(&self.limits)?;
        let mut linker = Linker::new(&engine);
        capability::add_to_linker(&mut linker)?;
        let rpc = RpcClient::new(nats.clone(), &self.lattice, cluster, self.rpc_timeout);
        let events = Events::new(nats.clone(), &self.lattice, &id);
        Ok(Host {
            inner: Arc::new(HostInner {
                identity: Identity { id, lattice: self.lattice, labels: self.labels },
                runtime: Runtime {
                    engine,
                    linker,
                    host_memory: Budget::new(self.limits.host_memory_bytes),
                    limits: self.limits,
                    compiled: Mutex::default(),
                },
                nats,
                view,
                rpc,
                events,
                guard: Arc::new(ReplayGuard::default()),
                components: Mutex::default(),
                tasks: TaskTracker::new(),
                stop: CancellationToken::new(),
            }),
        })
    }
}

/// A running host. Cheap to clone.
#[derive(Clone)]
pub struct Host {
    pub(crate) inner: Arc<HostInner>,
}

/// Who the host is.
pub(crate) struct Identity {
    /// The host id: a fresh `N…` public key per start.
    pub(crate) id: String,
    pub(crate) lattice: String,
    pub(crate) labels: BTreeMap<String, String>,
}

/// wasmtime pieces shared by every component.
pub(crate) struct Runtime {
    pub(crate) engine: Engine,
    pub(crate) linker: Linker<HostState>,
    pub(crate) limits: Limits,
    /// Linear memory of every instance on this host ([`Limits::host_memory_bytes`]).
    pub(crate) host_memory: Arc<Budget>,
    /// Compiled components by SHA-256 of their bytes, so a restart does not compile again.
    pub(crate) compiled: Mutex<HashMap<[u8; 32], Component>>,
}

/// A component this host runs, with what stops it.
pub(crate) struct ComponentHandle {
    pub(crate) component: Arc<RunningComponent>,
    pub(crate) stop: CancellationToken,
    pub(crate) server: tokio::task::JoinHandle<()>,
}

pub(crate) struct HostInner {
    pub(crate) identity: Identity,
    pub(crate) runtime: Runtime,
    pub(crate) nats: async_nats::Client,
    pub(crate) view: LatticeView,
    pub(crate) rpc: RpcClient,
    pub(crate) events: Events,
    /// Replay protection for every invocation this host receives.
    pub(crate) guard: Arc<ReplayGuard>,
    pub(crate) components: Mutex<HashMap<String, ComponentHandle>>,
    /// In-flight invocations, drained on shutdown.
    pub(crate) tasks: TaskTracker,
    /// Cancelled when the host stops.
    pub(crate) stop: CancellationToken,
}

impl HostInner {
    pub(crate) fn serve_context(&self) -> ServeContext {
        ServeContext {
            nats: self.nats.clone(),
            lattice_name: self.identity.lattice.clone(),
            lattice: self.view.clone(),
            rpc: self.rpc.clone(),
            guard: self.guard.clone(),
            tasks: self.tasks.clone(),
        }
    }
}

impl Host {
    /// The host id (`N…`).
    pub fn id(&self) -> &str {
        &self.inner.identity.id
    }

    /// The public key of the cluster key this host signs with.
    pub fn cluster_public_key(&self) -> &str {
        self.inner.rpc.cluster().public_key()
    }

    /// Serve until `shutdown` resolves, then stop components, drain in-flight invocations and
    /// the NATS connection.
    ///
    /// # Errors
    /// [`HostError`] when the bucket watch or control subscriptions cannot start.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), HostError> {
        let running = self.start().await?;
        shutdown.await;
        running.stop().await;
        Ok(())
    }

    /// Start serving and return once the host answers control commands: its view of the lattice
    /// is loaded and its subscriptions are live at the server. Whoever starts a host and then
    /// sends it commands (`ferry up`, tests) waits for this, not for a log line.
    ///
    /// # Errors
    /// [`HostError`] when the bucket watch or control subscriptions cannot start.
    pub async fn start(self) -> Result<RunningHost, HostError> {
        let inner = self.inner.clone();
        let ticker = engine::spawn_epoch_ticker(inner.runtime.engine.clone(), inner.stop.clone());
        let watch = inner.view.watch(inner.stop.clone()).await?;
        let control = ctl::serve(inner.clone(), inner.stop.clone()).await?;
        info!(host_id = %inner.identity.id, lattice = %inner.identity.lattice, cluster_key = %self.cluster_public_key(), "host ready");
        inner
            .events
            .emit("host_started", serde_json::json!({ "host_id": inner.identity.id, "labels": inner.identity.labels }))
            .await;
        Ok(RunningHost { inner, ticker, watch, control })
    }
}

/// A host that serves; [`RunningHost::stop`] ends it.
pub struct RunningHost {
    inner: Arc<HostInner>,
    ticker: tokio::task::JoinHandle<()>,
    watch: tokio::task::JoinHandle<()>,
    control: tokio::task::JoinHandle<()>,
}

impl RunningHost {
    /// The host id (`N…`).
    pub fn id(&self) -> &str {
        &self.inner.identity.id
    }

    /// Stop components, let in-flight invocations finish (up to the grace period), and drain
    /// the NATS connection.
    pub async fn stop(self) {
        let inner = &self.inner;
        info!("host stopping");
        inner.stop.cancel();
        let _ = self.control.await;
        let handles: Vec<ComponentHandle> =
            inner.components.lock().unwrap_or_else(|p| p.into_inner()).drain().map(|(_, h)| h).collect();
        for handle in handles {
            handle.stop.cancel();
            let _ = handle.server.await;
        }
        inner.tasks.close();
        if tokio::time::timeout(SHUTDOWN_GRACE, inner.tasks.wait()).await.is_err() {
            warn!(grace = ?SHUTDOWN_GRACE, "in-flight invocations did not finish within the grace period");
        }
        let _ = self.watch.await;
        let _ = self.ticker.await;
        inner.events.emit("host_stopped", serde_json::json!({ "host_id": inner.identity.id })).await;
        if let Err(err) = inner.nats.drain().await {
            warn!(cause = %err, "failed to drain NATS connection");
        }
        info!("host stopped");
    }
}
