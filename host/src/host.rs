//! [`HostBuilder`] builds a [`Host`]; [`Host::run`] starts its tasks and drains them on
//! shutdown.

use std::{collections::BTreeMap, future::Future, sync::Arc, time::Duration};

use ferry_lattice::replay::ReplayRecord;
use ferry_proto::{
    auth::{ClusterKey, ReplayGuard},
    event::{Event, HostStarted, HostStopped},
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::{info, warn};
use wasmtime::component::Linker;

use crate::{
    HostError, Limits,
    allowed::AllowedDirs,
    app::{AppStore, reconciler::Reconciler},
    capability,
    claims::ClaimsPolicy,
    components::{Components, Runtime, Sources},
    ctl::{self, CommandAuth, Services},
    engine,
    events::Events,
    health::{HealthConfig, HealthMonitor},
    identity::{Identity, VERSION},
    lattice::LatticeView,
    links::Links,
    rpc::{client::RpcClient, server::ServeContext},
    supervisor::{Supervisor, SupervisorConfig},
    workers::Workers,
};

/// Default timeout of a capability call from a component to a provider.
pub const DEFAULT_RPC_TIMEOUT: Duration = Duration::from_secs(10);
/// How long in-flight invocations may finish after shutdown starts.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// How long the reconciler waits for a host to carry out a command (a first start compiles).
const RECONCILER_TIMEOUT: Duration = Duration::from_secs(60);

/// Configures a [`Host`].
#[derive(Debug, Clone)]
pub struct HostBuilder {
    nats_url: String,
    lattice: String,
    cluster_seed: Option<String>,
    accepted_cluster_seeds: Vec<String>,
    nats_security: ferry_lattice::NatsSecurity,
    labels: BTreeMap<String, String>,
    rpc_timeout: Duration,
    limits: Limits,
    allowed_dirs: Vec<std::path::PathBuf>,
    registry: crate::oci::RegistrySettings,
    provider_nats_dir: Option<std::path::PathBuf>,
    log_format: Option<ferry_lattice::telemetry::LogFormat>,
    otlp_endpoint: Option<String>,
    metrics_listen: Option<std::net::SocketAddr>,
    health: HealthConfig,
    operators: Vec<String>,
    claims: ClaimsPolicy,
    workers: usize,
    replicas: usize,
    reconcile: bool,
    compilation: crate::compile::Compilation,
}

/// Workers a host runs unless told otherwise: one per core the process may use.
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

impl HostBuilder {
    /// A host joining `lattice` through the NATS server at `nats_url`.
    pub fn new(nats_url: impl Into<String>, lattice: impl Into<String>) -> Self {
        Self {
            nats_url: nats_url.into(),
            lattice: lattice.into(),
            cluster_seed: None,
            accepted_cluster_seeds: Vec::new(),
            nats_security: ferry_lattice::NatsSecurity::default(),
            labels: BTreeMap::new(),
            rpc_timeout: DEFAULT_RPC_TIMEOUT,
            limits: Limits::default(),
            allowed_dirs: Vec::new(),
            registry: crate::oci::RegistrySettings::default(),
            provider_nats_dir: None,
            log_format: None,
            otlp_endpoint: None,
            metrics_listen: None,
            health: HealthConfig::default(),
            operators: Vec::new(),
            claims: ClaimsPolicy::default(),
            workers: default_workers(),
            replicas: 1,
            reconcile: true,
            compilation: crate::compile::Compilation::default(),
        }
    }

    /// Whether this host competes to run the lattice's application reconciler (default yes;
    /// one host at a time runs it, under a lease in the lattice bucket).
    pub fn reconciler(mut self, reconcile: bool) -> Self {
        self.reconcile = reconcile;
        self
    }

    /// Threads that run invocations (default [`default_workers`], at least 1). Each has its own
    /// NATS connection and serves a share of every component's invocations, start to finish.
    pub fn workers(mut self, workers: usize) -> Self {
        self.workers = workers.max(1);
        self
    }

    /// An operator public key (`O…`, from `ferry keys operator`) whose signed commands this host
    /// obeys; repeatable. Given one, the host refuses every command not signed by one of them;
    /// given none, it obeys anyone who can publish on its control subjects.
    pub fn operator_key(mut self, public_key: impl Into<String>) -> Self {
        self.operators.push(public_key.into());
        self
    }

    /// Refuse components that carry no signed claims (`ferry claims sign`).
    pub fn require_signed(mut self, required: bool) -> Self {
        self.claims.require_signed = required;
        self
    }

    /// An account public key (`A…`) whose component claims this host accepts; repeatable. Given
    /// one, a signed component from any other issuer is refused; given none, any issuer whose
    /// signature verifies is accepted.
    pub fn allowed_issuer(mut self, public_key: impl Into<String>) -> Self {
        self.claims.allowed_issuers.push(public_key.into());
        self
    }

    /// The lattice's cluster seed (`SC…`); without one, a fresh key is generated, which only
    /// suits a lattice of one host.
    pub fn cluster_seed(mut self, seed: impl Into<String>) -> Self {
        self.cluster_seed = Some(seed.into());
        self
    }

    /// A further cluster seed whose messages this host accepts, for rotating the cluster key
    /// (docs/security.md); repeatable. It signs with [`HostBuilder::cluster_seed`] only, hands
    /// the providers it supervises credentials from every seed, and obeys the lattice operator
    /// each derives.
    pub fn accept_cluster_seed(mut self, seed: impl Into<String>) -> Self {
        self.accepted_cluster_seeds.push(seed.into());
        self
    }

    /// Credentials and TLS for the host's NATS connections (providers it supervises inherit
    /// its environment, [`ferry_lattice::NatsSecurity::from_env`]).
    pub fn nats_security(mut self, security: ferry_lattice::NatsSecurity) -> Self {
        self.nats_security = security;
        self
    }

    /// A label describing the host (`zone=a`).
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    /// Copies JetStream keeps of the lattice's own stores (links and configs, uploaded
    /// components, the replay record): 1 (the default) on a single server, 3 on a cluster so a
    /// node can die with nothing lost. Stores that exist with fewer are raised as the host starts.
    pub fn jetstream_replicas(mut self, replicas: usize) -> Self {
        self.replicas = replicas.max(1);
        self
    }

    /// Timeout of capability calls to providers.
    pub fn rpc_timeout(mut self, timeout: Duration) -> Self {
        self.rpc_timeout = timeout;
        self
    }

    /// How often the host checks the health of the providers it supervises and those its
    /// components link to (default 30 s), how long one check waits (default 5 s), and after
    /// how many failed checks in a row a supervised provider is restarted (default 3; 0:
    /// never).
    pub fn health_checks(mut self, interval: Duration, timeout: Duration, restart_after: u32) -> Self {
        self.health.interval = interval.max(Duration::from_millis(10));
        self.health.timeout = timeout;
        self.health.restart_after = restart_after;
        self
    }

    /// Time between `host_heartbeat` events (default 30 s).
    pub fn heartbeat_interval(mut self, interval: Duration) -> Self {
        self.health.heartbeat = interval.max(Duration::from_millis(10));
        self
    }

    /// A directory whose files commands may name (provider binaries, `file:` components);
    /// repeatable. Without one, the host starts no provider and runs only uploaded components.
    pub fn allow_file_dir(mut self, dir: impl Into<std::path::PathBuf>) -> Self {
        self.allowed_dirs.push(dir.into());
        self
    }

    /// A directory holding each supervised provider's own NATS identity, `{provider id}.creds`
    /// or `{provider id}.nk` (as `ferry nats-config` writes them): a provider then connects as
    /// itself, with only its own permissions, never with the host's credentials; one without a
    /// file there is not started.
    pub fn provider_nats_dir(mut self, dir: impl Into<std::path::PathBuf>) -> Self {
        self.provider_nats_dir = Some(dir.into());
        self
    }

    /// The log format this host's supervised providers write (theirs when not given): a host
    /// started with `--log-format json` gets JSON from its providers too.
    pub fn log_format(mut self, format: ferry_lattice::telemetry::LogFormat) -> Self {
        self.log_format = Some(format);
        self
    }

    /// How this host pulls components from OCI registries: its image cache, pull policy,
    /// plain-HTTP registries, credentials.
    pub fn registry(mut self, settings: crate::oci::RegistrySettings) -> Self {
        self.registry = settings;
        self
    }

    /// The OTLP collector this host's supervised providers export spans and metrics to, as
    /// the host does (`--otlp-endpoint`); without it they follow `OTEL_EXPORTER_OTLP_*`.
    pub fn otlp_endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.otlp_endpoint = Some(endpoint.into());
        self
    }

    /// Serve this host's metrics (Prometheus text, `GET /metrics`) on `address` while it runs.
    pub fn metrics_listen(mut self, address: std::net::SocketAddr) -> Self {
        self.metrics_listen = Some(address);
        self
    }

    /// Per-instance resource limits.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Where compiled components are kept and what compiles them (default: nothing kept,
    /// compiled in this process).
    pub fn compilation(mut self, compilation: crate::compile::Compilation) -> Self {
        self.compilation = compilation;
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
        for key in &self.operators {
            if !key.starts_with('O') || nkeys::KeyPair::from_public_key(key).is_err() {
                return Err(HostError::Invalid(format!("{key:?} is not an operator public key (O…)")));
            }
        }
        for key in &self.claims.allowed_issuers {
            if !key.starts_with('A') || nkeys::KeyPair::from_public_key(key).is_err() {
                return Err(HostError::Invalid(format!("{key:?} is not an account public key (A…)")));
            }
        }
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
        let accepted: Vec<ClusterKey> =
            self.accepted_cluster_seeds.iter().map(|seed| ClusterKey::from_seed(seed)).collect::<Result<_, _>>()?;
        let id = nkeys::KeyPair::new_server().public_key();
        let options =
            ferry_lattice::NatsOptions::new(&self.nats_url, format!("ferry-host-{id}")).secured(&self.nats_security);
        let connection = options.connect().await?;
        let (nats, reconnects) = (connection.client, connection.reconnects);
        ferry_lattice::storage::prepare_lattice_storage(&nats, &self.lattice, self.replicas).await?;
        let view = LatticeView::open(&nats, &self.lattice, reconnects).await?;
        let mut compilation = self.compilation;
        let cache = compilation.cache_dir.as_deref().and_then(|dir| {
            crate::compile::open_cache(dir)
                .inspect_err(|cause| warn!(%cause, "compiling every component anew, in this process"))
                .ok()
        });
        if cache.is_none() {
            compilation = crate::compile::Compilation::default();
        }
        let engine = engine::engine_with_cache(&self.limits, cache)?;
        let mut linker = Linker::new(&engine);
        capability::add_to_linker(&mut linker)?;
        let workers = Arc::new(Workers::start(self.workers, &options, &options.name).await?);
        let rpc = RpcClient::new(nats.clone(), &self.lattice, cluster, self.rpc_timeout)
            .accepting(accepted)
            .with_workers(workers.connections());
        let events = Events::new(nats.clone(), &self.lattice, &id);
        let tasks = TaskTracker::new();
        let stop = CancellationToken::new();
        let serve = ServeContext {
            lattice_name: self.lattice.clone(),
            lattice: view.clone(),
            rpc: rpc.clone(),
            guard: Arc::new(ReplayGuard::for_invocations()),
            tasks: tasks.clone(),
            workers: workers.clone(),
        };
        let runtime = Arc::new(Runtime::new(engine, linker, self.limits, compilation));
        let allowed = AllowedDirs::new(&self.allowed_dirs);
        let registry = Arc::new(crate::oci::Registry::new(self.registry.clone()));
        let sources = Sources {
            store: ferry_lattice::ComponentStore::open(&nats, &self.lattice).await?,
            allowed: allowed.clone(),
            policy: self.claims,
            registry: registry.clone(),
        };
        let components = Arc::new(Components::new(&id, runtime.clone(), serve, events.clone(), stop.clone(), sources));
        // Read when metrics are scraped or exported; nothing is kept up to date per call.
        let weak = Arc::downgrade(&components);
        ferry_lattice::metrics::register_collector(Box::new(move || {
            weak.upgrade().map(|components| components.readings()).unwrap_or_default()
        }));
        let links = Links::new(&id, &self.lattice, view.clone(), rpc.clone(), events.clone());
        let supervisor = SupervisorConfig {
            host_id: id.clone(),
            lattice: self.lattice.clone(),
            nats_url: self.nats_url.clone(),
            cluster_keys: rpc.cluster_keys().cloned().collect(),
            allowed_dirs: allowed,
            registry,
            provider_nats_dir: self.provider_nats_dir.clone(),
            log_format: self.log_format,
            otlp_endpoint: self.otlp_endpoint.clone(),
        };
        let providers = Arc::new(Supervisor::new(supervisor, events.clone()));
        // Hosts obey the lattice operator key their cluster key derives, as they obey the
        // operators they were given: the reconciler commands them with it.
        // While the cluster key is rotated, the operators of the old and the new key both.
        let lattice_operator = rpc.cluster().lattice_operator(&self.lattice)?;
        let lattice_operators: Vec<String> = rpc
            .cluster_keys()
            .map(|key| key.lattice_operator(&self.lattice).map(|op| op.public_key()))
            .collect::<Result<_, _>>()?;
        let mut operators = self.operators;
        if !operators.is_empty() {
            operators.extend(lattice_operators.iter().cloned());
        }
        let apps = AppStore::new(view.bucket().clone(), lattice_operator, lattice_operators);
        let auth = CommandAuth::new(operators, ReplayRecord::new(nats.clone(), &self.lattice));
        let starts_providers = providers.can_start();
        let services = Arc::new(Services {
            identity: Arc::new(Identity::new(id, self.lattice, self.labels, starts_providers)),
            components,
            providers,
            links,
            apps,
            events,
            auth,
            stop_requested: CancellationToken::new(),
            stop_request_id: std::sync::Mutex::default(),
        });
        let (health, reconcile, metrics_listen) = (self.health, self.reconcile, self.metrics_listen);
        Ok(Host {
            inner: Arc::new(HostInner {
                services,
                runtime,
                nats,
                workers,
                view,
                rpc,
                tasks,
                stop,
                health,
                reconcile,
                metrics_listen,
            }),
        })
    }
}

/// A built host, not yet serving. Cheap to clone.
#[derive(Clone)]
pub struct Host {
    inner: Arc<HostInner>,
}

struct HostInner {
    /// What the control interface drives.
    services: Arc<Services>,
    runtime: Arc<Runtime>,
    nats: async_nats::Client,
    /// The data plane's threads.
    workers: Arc<Workers>,
    view: LatticeView,
    rpc: RpcClient,
    /// In-flight invocations, drained on shutdown.
    tasks: TaskTracker,
    /// Cancelled when the host stops.
    stop: CancellationToken,
    health: HealthConfig,
    /// Whether this host competes to run the lattice's reconciler.
    reconcile: bool,
    /// Where to serve metrics, if anywhere.
    metrics_listen: Option<std::net::SocketAddr>,
}

impl HostInner {
    fn id(&self) -> &str {
        &self.services.identity.id
    }
}

impl Host {
    /// The host id (`N…`).
    pub fn id(&self) -> &str {
        self.inner.id()
    }

    /// The public key of the cluster key this host signs with.
    pub fn cluster_public_key(&self) -> &str {
        self.inner.rpc.cluster().public_key()
    }

    /// Serve until `shutdown` resolves or a `host.stop` command arrives, then stop
    /// components, drain in-flight invocations and the NATS connection.
    ///
    /// # Errors
    /// [`HostError`] when the bucket watch or control subscriptions cannot start.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), HostError> {
        let running = self.start().await?;
        tokio::select! {
            () = shutdown => {}
            () = running.stop_requested() => info!("host.stop received"),
        }
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
        let metrics = match inner.metrics_listen {
            Some(address) => Some(ferry_lattice::metrics::serve(address, inner.stop.clone()).await?.1),
            None => None,
        };
        let ticker = engine::spawn_epoch_ticker(inner.runtime.engine.clone(), inner.stop.clone());
        let watch = inner.view.watch(inner.stop.clone()).await?;
        // Before the control subscriptions, whose round trip through the server covers it too.
        let link_sync = crate::link_sync::serve(
            inner.nats.clone(),
            &inner.services.identity.lattice,
            inner.view.clone(),
            inner.rpc.clone(),
            inner.stop.clone(),
        )
        .await?;
        let control = ctl::serve(inner.nats.clone(), inner.services.clone(), inner.stop.clone()).await?;
        let services = &inner.services;
        let monitor = HealthMonitor {
            config: inner.health,
            identity: services.identity.clone(),
            rpc: inner.rpc.clone(),
            view: inner.view.clone(),
            components: services.components.clone(),
            providers: services.providers.clone(),
            events: services.events.clone(),
        }
        .spawn(inner.stop.clone());
        let reconciler = inner.reconcile.then(|| {
            let ctl = ferry_lattice::CtlClient::new(inner.nats.clone(), &services.identity.lattice, RECONCILER_TIMEOUT);
            let ctl = match inner.rpc.cluster().lattice_operator(&services.identity.lattice) {
                Ok(key) => ctl.with_operator(key),
                Err(_) => ctl,
            };
            let events = services.events.clone();
            Reconciler { host_id: services.identity.id.clone(), store: services.apps.clone(), ctl, events }
                .spawn(inner.stop.clone())
        });
        let identity = &inner.services.identity;
        if !inner.services.auth.required() {
            warn!("no operator key given: this host obeys anyone who can publish on its control subjects");
        }
        info!(host_id = %identity.id, lattice = %identity.lattice, cluster_key = %self.cluster_public_key(), "host ready");
        let started =
            HostStarted { host_id: identity.id.clone(), labels: identity.labels(), version: VERSION.to_owned() };
        inner.services.events.emit(&Event::HostStarted(started)).await;
        Ok(RunningHost { inner, ticker, watch, control, link_sync, monitor, reconciler, metrics })
    }
}

/// A host that serves; [`RunningHost::stop`] ends it.
pub struct RunningHost {
    inner: Arc<HostInner>,
    ticker: tokio::task::JoinHandle<()>,
    watch: tokio::task::JoinHandle<()>,
    control: tokio::task::JoinHandle<()>,
    link_sync: tokio::task::JoinHandle<()>,
    monitor: tokio::task::JoinHandle<()>,
    reconciler: Option<tokio::task::JoinHandle<()>>,
    metrics: Option<tokio::task::JoinHandle<()>>,
}

impl RunningHost {
    /// The host id (`N…`).
    pub fn id(&self) -> &str {
        self.inner.id()
    }

    /// Resolves when a `host.stop` command asks this host to stop.
    pub async fn stop_requested(&self) {
        self.inner.services.stop_requested.cancelled().await;
    }

    /// Stop components, let in-flight invocations finish (up to the grace period), and drain
    /// the NATS connection.
    pub async fn stop(self) {
        let inner = &self.inner;
        info!("host stopping");
        inner.stop.cancel();
        let _ = self.control.await;
        let _ = self.link_sync.await;
        let _ = self.monitor.await;
        if let Some(reconciler) = self.reconciler {
            let _ = reconciler.await;
        }
        if let Some(metrics) = self.metrics {
            let _ = metrics.await;
        }
        // Front to back: providers first (they may be calling in), then components.
        inner.services.providers.stop_all().await;
        inner.services.components.stop_all().await;
        inner.tasks.close();
        if tokio::time::timeout(SHUTDOWN_GRACE, inner.tasks.wait()).await.is_err() {
            warn!(grace = ?SHUTDOWN_GRACE, "in-flight invocations did not finish within the grace period");
        }
        let _ = self.watch.await;
        let _ = self.ticker.await;
        let request_id = inner.services.stop_request_id.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let stopped = HostStopped { request_id, host_id: inner.id().to_owned() };
        inner.services.events.emit(&Event::HostStopped(stopped)).await;
        inner.workers.stop().await;
        if let Err(err) = ferry_lattice::nats::close(&inner.nats).await {
            warn!(cause = %err, "failed to drain NATS connection");
        }
        info!("host stopped");
    }
}
