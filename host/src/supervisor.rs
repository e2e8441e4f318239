//! The provider supervisor: providers a host runs as its own children.
//!
//! Each provider gets a task that starts the binary with its start-up data on stdin (a fresh
//! credential each time), keeps stdin open while it should live — a host-spawned provider stops
//! when its stdin closes, so the providers go with the host even when the host is killed —,
//! restarts it with capped exponential backoff when it exits uninvited, and stops it by closing
//! stdin, then SIGKILL after a grace period. Every start and end is an event. A provider's
//! binary is a file under an allowed directory or an image from a registry, pulled into the
//! image cache and checked against its digest before each start.

use std::{
    collections::{BTreeMap, HashMap},
    path::PathBuf,
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use ferry_proto::{
    auth::{ClusterKey, CredentialSet},
    ctl::{ProviderDescription, ProviderStart},
    event::{Event, ProviderStartFailed, ProviderStarted, ProviderStopped},
    startup::{ProviderStartup, STARTUP_VERSION},
    subject::validate_id,
};
use tokio::{io::AsyncWriteExt as _, process::Command};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::{
    allowed::AllowedDirs,
    events::Events,
    oci::{ProviderBinary, Registry},
};

/// First wait before a restart; doubled after each crash that follows a short run.
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// Longest wait before a restart.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A run this long resets the backoff: the provider was healthy, the crash is news.
const STABLE_RUN: Duration = Duration::from_secs(60);
/// How long a provider has to stop after its stdin closes before it is killed.
pub(crate) const PROVIDER_STOP_GRACE: Duration = Duration::from_secs(10);
/// Hours a credential handed to a supervised provider is valid.
const CREDENTIAL_HOURS: u32 = 24 * 7;

/// Why a provider command failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SupervisorError {
    /// The command is invalid, or names a binary outside the allowed directories.
    #[error("{0}")]
    Invalid(String),
    /// The provider is already supervised here.
    #[error("provider {provider} already runs on host {host}")]
    AlreadyRunning { provider: String, host: String },
    /// It is not.
    #[error("provider {provider} does not run on host {host}")]
    NotRunning { provider: String, host: String },
    /// Its process could not be started.
    #[error("cannot start provider {provider}: {reason}")]
    Spawn { provider: String, reason: String },
}

/// Where supervised providers connect and how they are identified.
#[derive(Clone)]
pub(crate) struct SupervisorConfig {
    pub(crate) host_id: String,
    pub(crate) lattice: String,
    pub(crate) nats_url: String,
    /// The cluster keys: supervised providers get a credential from each, the signing one first.
    pub(crate) cluster_keys: Vec<ClusterKey>,
    /// Directories provider binaries may come from.
    pub(crate) allowed_dirs: AllowedDirs,
    /// Registries provider images may come from (as far as the registry settings allow them).
    pub(crate) registry: Arc<Registry>,
    /// Where each provider's own NATS identity is (`{id}.creds` or `{id}.nk`); `None`: providers
    /// connect as the host does.
    pub(crate) provider_nats_dir: Option<PathBuf>,
    /// The log format handed to providers; `None`: theirs (or the environment's).
    pub(crate) log_format: Option<ferry_lattice::telemetry::LogFormat>,
    /// The OTLP collector handed to providers; `None`: the environment's.
    pub(crate) otlp_endpoint: Option<String>,
}

/// The variables by which a process finds its NATS credentials ([`ferry_lattice::NatsSecurity`]):
/// a supervised provider with an identity of its own must not inherit the host's.
const NATS_CREDENTIAL_VARS: [&str; 8] = [
    "FERRY_NATS_CREDS",
    "FERRY_NATS_NKEY",
    "FERRY_NATS_NKEY_FILE",
    "FERRY_NATS_USER",
    "FERRY_NATS_PASSWORD",
    "FERRY_NATS_TOKEN",
    "FERRY_STORE_NATS_CREDS",
    "FERRY_STORE_NATS_NKEY_FILE",
];

/// The provider's identity for components' data in JetStream, when it has one in `dir`
/// (`{id}.store.creds` or `{id}.store.nk`).
fn store_identity(dir: &std::path::Path, id: &str) -> Option<(&'static str, PathBuf)> {
    let creds = dir.join(format!("{id}.store.creds"));
    if creds.is_file() {
        return Some(("FERRY_STORE_NATS_CREDS", creds));
    }
    let seed = dir.join(format!("{id}.store.nk"));
    seed.is_file().then_some(("FERRY_STORE_NATS_NKEY_FILE", seed))
}

/// The variable and file that give provider `id` its own NATS identity from `dir`: its
/// `.creds` file, else its nkey seed file (`ferry nats-config` writes these).
fn provider_identity(dir: &std::path::Path, id: &str) -> Result<(&'static str, PathBuf), String> {
    let creds = dir.join(format!("{id}.creds"));
    if creds.is_file() {
        return Ok(("FERRY_NATS_CREDS", creds));
    }
    let seed = dir.join(format!("{id}.nk"));
    if seed.is_file() {
        return Ok(("FERRY_NATS_NKEY_FILE", seed));
    }
    Err(format!("no NATS identity for it in {} ({id}.creds or {id}.nk; see ferry nats-config)", dir.display()))
}

/// Where a provider's executable is.
#[derive(Clone)]
enum Source {
    /// A file under an allowed directory.
    File(PathBuf),
    /// An image from a registry, in the image cache.
    Image(ProviderBinary),
}

impl Source {
    /// What `provider.list` shows: the file, or the image pinned to its digest.
    fn describe(&self) -> String {
        match self {
            Self::File(path) => path.display().to_string(),
            Self::Image(binary) => binary.image.to_string(),
        }
    }
}

/// A provider's process and its stdin, held apart: tokio closes a child's stdin when it is
/// waited on, and a host-spawned provider takes a closed stdin as its host's end.
struct Child {
    process: tokio::process::Child,
    stdin: Option<tokio::process::ChildStdin>,
}

/// One supervised provider, as the task that runs it reports.
struct Supervised {
    binary: String,
    /// [`ferry_proto::ctl::config_digest`] of its start-up config.
    config_digest: String,
    pid: Option<u32>,
    restarts: u32,
    stop: CancellationToken,
    /// The request id of the `provider.stop` that ends it.
    stop_request: String,
    /// Asks the task to kill the running process and start it again, and says why.
    restart: Arc<tokio::sync::Notify>,
    restart_reason: String,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// The providers one host supervises.
pub(crate) struct Supervisor {
    config: SupervisorConfig,
    events: Events,
    providers: Arc<Mutex<HashMap<String, Supervised>>>,
}

impl Supervisor {
    pub(crate) fn new(config: SupervisorConfig, events: Events) -> Self {
        Self { config, events, providers: Arc::default() }
    }

    /// Whether this host may start providers at all (it allows a directory or provider images).
    pub(crate) fn can_start(&self) -> bool {
        !self.config.allowed_dirs.is_empty() || self.config.registry.runs_providers()
    }

    /// How many providers are supervised.
    pub(crate) fn count(&self) -> usize {
        lock(&self.providers).len()
    }

    /// What is supervised, sorted by id.
    pub(crate) fn list(&self) -> Vec<ProviderDescription> {
        let mut list: Vec<_> = lock(&self.providers)
            .iter()
            .map(|(id, s)| ProviderDescription {
                provider_id: id.clone(),
                binary: s.binary.clone(),
                pid: s.pid,
                restarts: s.restarts,
                config_digest: s.config_digest.clone(),
            })
            .collect();
        list.sort_by(|a, b| a.provider_id.cmp(&b.provider_id));
        list
    }

    /// Start `cmd.provider_id` and supervise it; returns once its first process runs.
    pub(crate) async fn start(&self, cmd: &ProviderStart) -> Result<ProviderDescription, SupervisorError> {
        let result = self.try_start(cmd).await;
        if let Err(err) = &result {
            let failed = ProviderStartFailed {
                request_id: cmd.request_id.clone(),
                host_id: self.config.host_id.clone(),
                provider_id: cmd.provider_id.clone(),
                error: err.to_string(),
            };
            self.events.emit(&Event::ProviderStartFailed(failed)).await;
        }
        result
    }

    async fn try_start(&self, cmd: &ProviderStart) -> Result<ProviderDescription, SupervisorError> {
        validate_id("provider id", &cmd.provider_id).map_err(|e| SupervisorError::Invalid(e.to_string()))?;
        let running =
            || SupervisorError::AlreadyRunning { provider: cmd.provider_id.clone(), host: self.config.host_id.clone() };
        // Before a pull that may take a while.
        if lock(&self.providers).contains_key(&cmd.provider_id) {
            return Err(running());
        }
        let binary = self.binary(cmd).await?;
        let stop = CancellationToken::new();
        let restart = Arc::new(tokio::sync::Notify::new());
        {
            let mut providers = lock(&self.providers);
            if providers.contains_key(&cmd.provider_id) {
                return Err(running());
            }
            let entry = Supervised {
                binary: binary.describe(),
                config_digest: ferry_proto::ctl::config_digest(&cmd.config),
                pid: None,
                restarts: 0,
                stop: stop.clone(),
                stop_request: String::new(),
                restart: restart.clone(),
                restart_reason: String::new(),
                task: None,
            };
            providers.insert(cmd.provider_id.clone(), entry);
        }
        let run = Run {
            config: self.config.clone(),
            events: self.events.clone(),
            providers: self.providers.clone(),
            provider_id: cmd.provider_id.clone(),
            request_id: cmd.request_id.clone(),
            binary,
            provider_config: cmd.config.clone(),
            stop,
            restart,
        };
        // The first start is the command's answer; later ones are the task's business.
        let child = match run.spawn(0).await {
            Ok(child) => child,
            Err(err) => {
                lock(&self.providers).remove(&cmd.provider_id);
                return Err(err);
            }
        };
        let description = ProviderDescription {
            provider_id: cmd.provider_id.clone(),
            binary: run.binary.describe(),
            pid: child.process.id(),
            restarts: 0,
            config_digest: ferry_proto::ctl::config_digest(&cmd.config),
        };
        let task = tokio::spawn(run.supervise(child));
        if let Some(entry) = lock(&self.providers).get_mut(&cmd.provider_id) {
            entry.task = Some(task);
        }
        Ok(description)
    }

    /// Stop a supervised provider and wait until its process is gone.
    pub(crate) async fn stop(&self, request_id: &str, provider_id: &str) -> Result<(), SupervisorError> {
        let task = {
            let mut providers = lock(&self.providers);
            let entry = providers.get_mut(provider_id).ok_or_else(|| SupervisorError::NotRunning {
                provider: provider_id.to_owned(),
                host: self.config.host_id.clone(),
            })?;
            entry.stop_request = request_id.to_owned();
            entry.stop.cancel();
            entry.task.take()
        };
        if let Some(task) = task {
            let _ = task.await;
        }
        lock(&self.providers).remove(provider_id);
        Ok(())
    }

    /// Kill a supervised provider's process so that it starts again (after the usual backoff),
    /// for `reason`; false when it is not supervised here or is not running.
    pub(crate) fn restart(&self, provider_id: &str, reason: String) -> bool {
        let mut providers = lock(&self.providers);
        // One waiting to be restarted already is being restarted.
        let Some(entry) = providers.get_mut(provider_id).filter(|e| e.pid.is_some()) else { return false };
        entry.restart_reason = reason;
        entry.restart.notify_one();
        true
    }

    /// Stop every supervised provider (the host is stopping).
    pub(crate) async fn stop_all(&self) {
        let ids: Vec<String> = lock(&self.providers).keys().cloned().collect();
        for id in ids {
            let _ = self.stop("", &id).await;
        }
    }

    /// The executable `cmd` names: a file resolved under an allowed directory, or an image
    /// pulled (or found in the cache) from a repository this host runs providers from.
    async fn binary(&self, cmd: &ProviderStart) -> Result<Source, SupervisorError> {
        match cmd.image().map_err(|e| SupervisorError::Invalid(e.to_string()))? {
            Some(image) => match self.config.registry.fetch_provider(&image).await {
                Ok(binary) => {
                    info!(provider = %cmd.provider_id, image = %binary.image, "provider binary from the image cache");
                    Ok(Source::Image(binary))
                }
                Err(err @ crate::oci::RegistryError::Refused(_)) => Err(SupervisorError::Invalid(err.to_string())),
                Err(err) => Err(SupervisorError::Spawn { provider: cmd.provider_id.clone(), reason: err.to_string() }),
            },
            None => {
                let path = self.config.allowed_dirs.find("provider binary", &cmd.binary, &self.config.host_id);
                path.map(Source::File).map_err(SupervisorError::Invalid)
            }
        }
    }
}

/// What one provider's supervising task needs.
struct Run {
    config: SupervisorConfig,
    events: Events,
    providers: Arc<Mutex<HashMap<String, Supervised>>>,
    provider_id: String,
    request_id: String,
    binary: Source,
    provider_config: BTreeMap<String, String>,
    stop: CancellationToken,
    restart: Arc<tokio::sync::Notify>,
}

impl Run {
    /// The provider's credentials: one from each cluster key, valid [`CREDENTIAL_HOURS`] from now.
    fn credentials(&self) -> Result<CredentialSet, ferry_proto::ProtoError> {
        let now = ferry_proto::time::now_ms();
        let (lattice, id) = (&self.config.lattice, &self.provider_id);
        CredentialSet::new(
            self.config
                .cluster_keys
                .iter()
                .map(|key| key.issue_credential(lattice, id, now, CREDENTIAL_HOURS))
                .collect(),
        )
    }

    /// Start the provider's process with its start-up data on stdin (left open).
    async fn spawn(&self, restarts: u32) -> Result<Child, SupervisorError> {
        let failed = |reason: String| SupervisorError::Spawn { provider: self.provider_id.clone(), reason };
        let startup = ProviderStartup {
            version: STARTUP_VERSION,
            lattice: self.config.lattice.clone(),
            provider_id: self.provider_id.clone(),
            nats_url: self.config.nats_url.clone(),
            credential: self.credentials().map_err(|e| failed(e.to_string()))?.encode(),
            rpc_timeout_ms: None,
            log_level: None,
            log_format: self.config.log_format.map(|f| f.to_string()),
            config: self.provider_config.clone(),
        };
        let line = startup.to_json().map_err(|e| failed(e.to_string()))?;
        let binary = match &self.binary {
            Source::File(path) => path.clone(),
            // Checked again before every start: a cache entry changed since is pulled again.
            Source::Image(binary) => match self.config.registry.verify_provider(binary).await {
                Some(path) => path,
                None => {
                    self.config.registry.fetch_provider(&binary.image).await.map_err(|e| failed(e.to_string()))?.path
                }
            },
        };
        // Its own process group: a terminal's Ctrl-C reaches the host, which stops its providers
        // in order, and not the providers behind its back (they would look crashed).
        let mut command = Command::new(&binary);
        // The host's own metrics address is not the provider's to bind.
        command.env_remove("FERRY_METRICS_LISTEN");
        if let Some(endpoint) = &self.config.otlp_endpoint {
            command.env("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint);
        }
        if let Some(dir) = &self.config.provider_nats_dir {
            let (var, path) = provider_identity(dir, &self.provider_id).map_err(failed)?;
            for inherited in NATS_CREDENTIAL_VARS {
                command.env_remove(inherited);
            }
            command.env(var, path);
            if let Some((var, path)) = store_identity(dir, &self.provider_id) {
                command.env(var, path);
            }
        }
        let mut child = command
            .stdin(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| failed(format!("{}: {e}", binary.display())))?;
        let mut stdin = child.stdin.take();
        if let Some(stdin) = stdin.as_mut() {
            let written = async {
                stdin.write_all(line.as_bytes()).await?;
                stdin.write_all(b"\n").await?;
                stdin.flush().await
            };
            if let Err(err) = written.await {
                // It died before reading: the supervising loop sees the exit and backs off.
                warn!(provider = %self.provider_id, cause = %err, "failed to hand start-up data to the provider");
            }
        }
        let pid = child.id();
        if let Some(entry) = lock(&self.providers).get_mut(&self.provider_id) {
            entry.pid = pid;
            entry.restarts = restarts;
        }
        info!(provider = %self.provider_id, pid = ?pid, restarts, "provider started");
        let started = ProviderStarted {
            request_id: self.request_id.clone(),
            host_id: self.config.host_id.clone(),
            provider_id: self.provider_id.clone(),
            pid: pid.unwrap_or_default(),
            restarts,
        };
        self.events.emit(&Event::ProviderStarted(started)).await;
        Ok(Child { process: child, stdin })
    }

    /// Watch the process until asked to stop: restart it after each exit, waiting longer each
    /// time it crashes soon after a start.
    async fn supervise(self, mut child: Child) {
        let mut restarts = 0u32;
        let mut backoff = FIRST_BACKOFF;
        loop {
            let started = tokio::time::Instant::now();
            let reason = tokio::select! {
                status = child.process.wait() => match status {
                    Ok(status) => describe(status),
                    Err(err) => format!("cannot wait for it: {err}"),
                },
                () = self.stop.cancelled() => {
                    self.stop_child(&mut child).await;
                    return;
                }
                () = self.restart.notified() => {
                    // It does not answer: SIGKILL, which a stopped (SIGSTOP) process obeys too.
                    let _ = child.process.kill().await;
                    lock(&self.providers).get(&self.provider_id).map(|e| e.restart_reason.clone()).unwrap_or_default()
                }
            };
            child.stdin = None;
            if let Some(entry) = lock(&self.providers).get_mut(&self.provider_id) {
                entry.pid = None;
            }
            if started.elapsed() >= STABLE_RUN {
                backoff = FIRST_BACKOFF;
            }
            warn!(provider = %self.provider_id, %reason, restart_in = ?backoff, restarts, "provider ended; restarting");
            self.stopped(&self.request_id, &reason, true).await;
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                () = self.stop.cancelled() => {
                    return;
                }
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
            restarts += 1;
            child = loop {
                match self.spawn(restarts).await {
                    Ok(child) => break child,
                    Err(err) => {
                        warn!(provider = %self.provider_id, cause = %err, retry_in = ?backoff, "provider restart failed");
                        tokio::select! {
                            () = tokio::time::sleep(backoff) => {}
                            () = self.stop.cancelled() => return,
                        }
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                }
            };
        }
    }

    /// Close stdin (the provider stops on its own), then kill it after the grace period.
    async fn stop_child(&self, child: &mut Child) {
        child.stdin = None;
        let reason = match tokio::time::timeout(PROVIDER_STOP_GRACE, child.process.wait()).await {
            Ok(Ok(status)) => format!("stopped ({})", describe(status)),
            Ok(Err(err)) => format!("stopped (cannot wait for it: {err})"),
            Err(_) => {
                let _ = child.process.kill().await;
                format!("killed after {PROVIDER_STOP_GRACE:?}")
            }
        };
        info!(provider = %self.provider_id, %reason, "provider stopped");
        let request_id =
            lock(&self.providers).get(&self.provider_id).map(|e| e.stop_request.clone()).unwrap_or_default();
        self.stopped(&request_id, &reason, false).await;
    }

    async fn stopped(&self, request_id: &str, reason: &str, restarting: bool) {
        let stopped = ProviderStopped {
            request_id: request_id.to_owned(),
            host_id: self.config.host_id.clone(),
            provider_id: self.provider_id.clone(),
            reason: reason.to_owned(),
            restarting,
        };
        self.events.emit(&Event::ProviderStopped(stopped)).await;
    }
}

/// How a process ended, for people.
fn describe(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt as _;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited: code {code}"),
        (None, Some(signal)) => format!("killed: signal {signal}"),
        _ => status.to_string(),
    }
}

fn lock(providers: &Mutex<HashMap<String, Supervised>>) -> std::sync::MutexGuard<'_, HashMap<String, Supervised>> {
    providers.lock().unwrap_or_else(|p| p.into_inner())
}
