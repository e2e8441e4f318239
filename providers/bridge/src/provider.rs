//! The bridge as a Ferry provider: links, health and shutdown go to the foreign process's
//! `Provider` service, invocations to the capability service their operation names.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};

use ferry_provider_sdk::{
    ErrorKind, HealthStatus, InvocationContext, LinkPut, Provider, ProviderContext, RpcError, blobstore, keyvalue,
    messaging,
};
use tempfile::TempDir;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::{error, info, warn};

use crate::{
    config::{Address, BridgeArgs},
    foreign::Foreign,
    links::{BridgeLink, Verdict},
    supervise::{self, Exec},
};

/// The link config key that bounds calls over a link, in milliseconds, when the caller set no
/// deadline of its own. The bridge reads it; every other key is the foreign provider's.
pub(crate) const TIMEOUT_KEY: &str = "timeout_ms";

/// The provider the lattice sees.
pub(crate) struct Bridge {
    /// Where the foreign process is, from the flags; from the start-up config when the bridge
    /// was started by a host without them.
    target: Mutex<Option<Target>>,
    health_interval: Duration,
    wait: Duration,
    stop_grace: Duration,
    /// Set by `on_start` (a channel needs the runtime), or why the bridge cannot run.
    running: OnceLock<Result<Running, String>>,
}

/// Where the foreign process listens, where it reaches the bridge's `Lattice` service, and
/// what starts it.
struct Target {
    address: Address,
    /// `None`: no `Lattice` service.
    lattice: Option<Address>,
    /// The private directory of the default sockets, removed when the bridge ends.
    socket_dir: Option<TempDir>,
    exec: Vec<String>,
}

impl Target {
    /// `None` when neither `connect` nor `exec` says anything. A process the bridge starts
    /// gets its sockets in a private directory unless told otherwise.
    fn resolve(connect: Option<Address>, lattice: Option<Address>, exec: Vec<String>) -> Result<Option<Self>, String> {
        if connect.is_none() && exec.is_empty() {
            return Ok(None);
        }
        let socket_dir = if exec.is_empty() || (connect.is_some() && lattice.is_some()) {
            None
        } else {
            Some(
                tempfile::Builder::new()
                    .prefix("ferry-bridge-")
                    .tempdir()
                    .map_err(|e| format!("cannot make a directory for the sockets: {e}"))?,
            )
        };
        let in_dir = |name: &str| socket_dir.as_ref().map(|dir| Address::Unix(dir.path().join(name)));
        let Some(address) = connect.or_else(|| in_dir("provider.sock")) else { return Ok(None) };
        let lattice = lattice.or_else(|| in_dir("lattice.sock"));
        Ok(Some(Self { address, lattice, socket_dir, exec }))
    }

    /// From a host's start-up config: `connect` (an address), `lattice_listen` (an address)
    /// and `exec` (a command line, split on whitespace, or a JSON array of words).
    fn from_config(config: &BTreeMap<String, String>) -> Result<Self, String> {
        let address = |key: &str| config.get(key).map(|a| a.parse::<Address>()).transpose();
        let (connect, lattice) = (address("connect")?, address("lattice_listen")?);
        let exec = match config.get("exec").map(|e| e.trim()) {
            None => Vec::new(),
            Some(words) if words.starts_with('[') => serde_json::from_str::<Vec<String>>(words)
                .map_err(|e| format!("config `exec` is not a JSON array of strings: {e}"))?,
            Some(line) => line.split_whitespace().map(str::to_owned).collect(),
        };
        Self::resolve(connect, lattice, exec)?.ok_or_else(|| NO_TARGET.to_owned())
    }
}

const NO_TARGET: &str =
    "say where the foreign provider listens (--connect unix:PATH or HOST:PORT), or start it with --exec CMD …";

/// What runs once the bridge has joined the lattice.
struct Running {
    foreign: Arc<Foreign>,
    /// Ends the monitor and the supervisor.
    stop: CancellationToken,
    tasks: TaskTracker,
    _socket_dir: Option<TempDir>,
}

impl Bridge {
    /// # Errors
    /// A bridge started on its own (a provider id in its flags) needs `--connect` or `--exec`;
    /// one started by a host may have them in its start-up config instead.
    pub(crate) fn new(args: &BridgeArgs) -> anyhow::Result<Self> {
        let target = Target::resolve(args.connect.clone(), args.lattice_listen.clone(), args.exec.clone())
            .map_err(anyhow::Error::msg)?;
        if target.is_none() && args.startup.provider_id.is_some() {
            anyhow::bail!(NO_TARGET);
        }
        Ok(Self {
            target: Mutex::new(target),
            health_interval: args.health_interval(),
            wait: Duration::from_millis(args.wait_ms),
            stop_grace: Duration::from_millis(args.stop_grace_ms),
            running: OnceLock::new(),
        })
    }

    pub(crate) fn foreign(&self) -> Result<&Foreign, RpcError> {
        match self.running.get() {
            Some(Ok(running)) => Ok(running.foreign.as_ref()),
            Some(Err(why)) => Err(RpcError::new(ErrorKind::Unavailable, format!("the bridge cannot run: {why}"))),
            None => Err(RpcError::new(ErrorKind::Unavailable, "the bridge is not connected yet")),
        }
    }

    /// The foreign process is reachable and took the call's link; the call's time limit and
    /// trace, which the forwarded request carries.
    pub(crate) fn admit(&self, ctx: &InvocationContext<BridgeLink>) -> Result<(&Foreign, Forwarded), RpcError> {
        let foreign = self.foreign()?;
        foreign.ready()?;
        ctx.state.check()?;
        let limit = match ctx.deadline {
            Some(deadline) => deadline.saturating_duration_since(tokio::time::Instant::now()),
            None => ctx
                .link
                .target_config
                .get(TIMEOUT_KEY)
                .and_then(|ms| ms.parse().ok())
                .map_or_else(|| ctx.provider.client().timeout(), Duration::from_millis),
        };
        Ok((foreign, Forwarded { limit, trace: ctx.traceparent() }))
    }
}

/// What a request forwarded to the foreign process carries besides its message: the time the
/// caller still waits (gRPC's deadline) and the call's trace (`traceparent` metadata, naming
/// the bridge's span for the call), so the foreign process can continue it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Forwarded {
    pub(crate) limit: Duration,
    pub(crate) trace: Option<ferry_provider_sdk::trace::TraceParent>,
}

impl Bridge {
    /// Make the channel, start the process (`--exec`) and the monitor, and wait for the
    /// process to answer.
    async fn start(&self, ctx: &ProviderContext) -> Result<Running, String> {
        let flagged = self.target.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        let target = match flagged {
            Some(target) => target,
            None => Target::from_config(ctx.config())?,
        };
        let address = target.address.clone();
        let foreign = Arc::new(Foreign::new(address.clone()));
        let (stop, tasks) = (CancellationToken::new(), TaskTracker::new());
        if let Some(lattice) = &target.lattice {
            let listener = crate::lattice::bind(lattice).await?;
            info!(address = %lattice, "serving the Lattice service");
            tasks.spawn(crate::lattice::serve(listener, ctx.clone(), stop.clone()));
        }
        if !target.exec.is_empty() {
            let mut env = vec![
                ("FERRY_BRIDGE_LISTEN".to_owned(), address.to_string()),
                ("FERRY_BRIDGE_EXEC".to_owned(), "1".to_owned()),
                ("FERRY_PROVIDER_ID".to_owned(), ctx.provider_id().to_owned()),
                ("FERRY_LATTICE".to_owned(), ctx.lattice().to_owned()),
            ];
            if let Some(lattice) = &target.lattice {
                env.push(("FERRY_BRIDGE_LATTICE".to_owned(), lattice.to_string()));
            }
            let exec = Exec { command: target.exec, env, grace: self.stop_grace };
            tasks.spawn(supervise::supervise(exec, foreign.clone(), stop.clone()));
        }
        tasks.spawn(foreign.clone().monitor(ctx.clone(), self.health_interval, stop.clone()));
        if foreign.wait_up(self.wait).await {
            info!(%address, "bridged provider reached");
        } else {
            warn!(%address, wait = ?self.wait, "bridged provider not reached yet; calls fail with `unavailable` until it is");
        }
        Ok(Running { foreign, stop, tasks, _socket_dir: target.socket_dir })
    }
}

impl Provider for Bridge {
    type Link = BridgeLink;

    async fn handle(
        &self,
        ctx: InvocationContext<BridgeLink>,
        operation: &str,
        payload: Vec<u8>,
    ) -> Result<Vec<u8>, RpcError> {
        if operation.starts_with("wasi:keyvalue/") {
            return keyvalue::dispatch(self, &ctx, operation, &payload).await;
        }
        if operation.starts_with("wasi:blobstore/") {
            return blobstore::dispatch(self, &ctx, operation, &payload).await;
        }
        if operation.starts_with("wasmcloud:messaging/consumer.") {
            return messaging::dispatch(self, &ctx, operation, &payload).await;
        }
        Err(RpcError::new(ErrorKind::UnknownOperation, format!("the bridge does not forward {operation:?}")))
    }

    async fn on_start(&self, ctx: &ProviderContext) {
        let running = self.start(ctx).await;
        if let Err(why) = &running {
            error!(cause = %why, "the bridge cannot reach a foreign provider; every call fails with `unavailable`");
        }
        let _ = self.running.set(running);
    }

    async fn on_link_put(&self, _ctx: &ProviderContext, link: &LinkPut) -> Result<BridgeLink, String> {
        let foreign = self.foreign().map_err(|e| e.message)?;
        match foreign.put_link(link).await {
            Verdict::Accepted => Ok(BridgeLink::new(Verdict::Accepted)),
            Verdict::Pending => {
                warn!(source = %link.link.source_id, name = %link.link.name, "bridged provider unreachable: the link is kept and delivered when it is back");
                Ok(BridgeLink::new(Verdict::Pending))
            }
            Verdict::Rejected(why) => Err(why),
        }
    }

    async fn on_link_del(&self, ctx: &ProviderContext, link: &LinkPut, _state: Arc<BridgeLink>) {
        // A changed link releases its old state too: the foreign process already has the new.
        let key = link.link.key();
        if ctx.links().all().iter().any(|held| held.link.key() == key) {
            return;
        }
        if let Ok(foreign) = self.foreign() {
            foreign.delete_link(link).await;
        }
    }

    async fn health(&self, _ctx: &ProviderContext) -> HealthStatus {
        match self.foreign() {
            Ok(foreign) => foreign.health().await,
            Err(err) => HealthStatus::unhealthy(err.message),
        }
    }

    async fn on_shutdown(&self, _ctx: &ProviderContext) {
        let Some(Ok(running)) = self.running.get() else { return };
        if running.foreign.ready().is_ok() {
            running.foreign.shutdown().await;
        }
        running.stop.cancel();
        running.tasks.close();
        running.tasks.wait().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn a_host_started_bridge_takes_its_target_from_config() {
        let target = Target::from_config(&config(&[("exec", "python3 kv.py --x")])).expect("exec");
        assert_eq!(target.exec, ["python3", "kv.py", "--x"]);
        assert!(matches!(target.address, Address::Unix(_)) && target.socket_dir.is_some());
        assert!(matches!(target.lattice, Some(Address::Unix(_))), "a started process gets the Lattice service");

        let target = Target::from_config(&config(&[("exec", r#"["node", "a b.js"]"#)])).expect("json");
        assert_eq!(target.exec, ["node", "a b.js"]);

        let target = Target::from_config(&config(&[("connect", "127.0.0.1:7000")])).expect("connect");
        assert_eq!(target.address, Address::Tcp("127.0.0.1:7000".into()));
        assert!(target.exec.is_empty() && target.lattice.is_none(), "attached: no Lattice service unless asked");

        assert_eq!(Target::from_config(&config(&[])).err().as_deref(), Some(NO_TARGET));
        assert!(Target::from_config(&config(&[("connect", "nowhere")])).is_err());
        assert!(Target::from_config(&config(&[("exec", "[1, 2]")])).is_err());
    }
}
