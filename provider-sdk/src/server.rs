//! The provider's run loop: subscriptions, verification, dispatch, links, health, shutdown.
//!
//! Invocations, link notifications, health checks and shutdown requests each have their own
//! task, so a slow link hook never delays a health answer, and invocations run concurrently
//! (bounded by [`MAX_CONCURRENT_INVOCATIONS`]).

use std::{future::Future, sync::Arc, time::Duration};

use clap::Parser as _;
use ferry_proto::{
    ErrorKind, RpcError,
    auth::{CredentialSet, MacKey, ReplayGuard, verify_invocation_under},
    codec,
    envelope::{Invocation, InvocationResponse},
    health::{HealthAnswer, ShutdownRequest},
    startup::ProviderStartup,
    subject,
    subject::Channel,
};
use futures::StreamExt as _;
use tokio::sync::mpsc;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::{error, info, warn};

mod links;
mod rpc;

use ferry_lattice::{NatsOptions, nats::Reconnects, replay::ReplayRecord, view::LatticeView};

use crate::{LatticeClient, LinkStore, Provider, ProviderContext, SdkError, StartupArgs, provider::ContextInner};

/// Upper bound of invocations one provider instance runs at once; more wait for a permit
/// (NATS buffers them), which is the provider's back-pressure.
pub const MAX_CONCURRENT_INVOCATIONS: usize = 1024;
/// How long in-flight invocations may finish after a shutdown starts.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Run `provider` until `shutdown` resolves or the lattice asks it to stop. Start-up data comes
/// from the command line and environment, or from stdin when no provider id is given.
///
/// # Errors
/// [`SdkError`] when start-up data is invalid or NATS cannot be reached; errors while running
/// are logged and do not end the provider.
pub async fn run_provider<P: Provider>(provider: P, shutdown: impl Future<Output = ()> + Send) -> Result<(), SdkError> {
    run_provider_from(provider, StartupArgs::parse(), shutdown).await
}

/// Run `provider` as the whole of this process, a provider binary's `main`: read the flags,
/// build the runtime they ask for ([`StartupArgs::threads`]: one thread unless told
/// otherwise), and serve until SIGINT/SIGTERM or the lattice asks it to stop.
///
/// # Errors
/// As [`run_provider`], and [`SdkError::Io`] when the runtime cannot be built.
pub fn run_process<P: Provider>(provider: P) -> Result<(), SdkError> {
    run_process_with(provider, StartupArgs::parse())
}

/// [`run_process`] with the flags already parsed: for a provider with flags of its own, which
/// flattens [`StartupArgs`] into its parser.
///
/// # Errors
/// As [`run_process`].
pub fn run_process_with<P: Provider>(provider: P, args: StartupArgs) -> Result<(), SdkError> {
    let runtime = args.runtime()?;
    let result = runtime.block_on(run_provider_from(provider, args, crate::shutdown_signal()));
    // A task that ignores its cancellation must not hold the process after the provider stopped.
    runtime.shutdown_timeout(RUNTIME_SHUTDOWN);
    result
}

/// How long [`run_process`] waits for leftover tasks once the provider has stopped.
const RUNTIME_SHUTDOWN: Duration = Duration::from_secs(1);

async fn run_provider_from<P: Provider>(
    provider: P,
    args: StartupArgs,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), SdkError> {
    let (metrics_listen, otlp) = (args.metrics_listen, args.otlp_endpoint.clone());
    let (startup, parent_gone) = args.resolve_with_parent().await?;
    let telemetry = init_telemetry(&startup, otlp);
    let Some(address) = metrics_listen else {
        let result = run_provider_until(provider, startup, parent_gone, shutdown).await;
        telemetry.shutdown();
        return result;
    };
    let stop = CancellationToken::new();
    let (_, metrics) = ferry_lattice::metrics::serve(address, stop.clone())
        .await
        .map_err(|e| SdkError::Startup(format!("cannot serve metrics on {address}: {e}")))?;
    let result = run_provider_until(provider, startup, parent_gone, shutdown).await;
    stop.cancel();
    let _ = metrics.await;
    telemetry.shutdown();
    result
}

/// The span of a call this provider starts on its own (a message delivery, a watch event)
/// and the trace the call carries: a new trace when spans are exported, none otherwise.
pub(crate) fn call_span(
    kind: &'static str,
    component: &str,
    operation: &str,
) -> (tracing::Span, Option<ferry_proto::trace::TraceParent>) {
    if !ferry_lattice::telemetry::exporting() {
        return (tracing::Span::none(), None);
    }
    let span = tracing::info_span!(
        "call",
        otel.name = %format_args!("{kind} {operation}"),
        otel.kind = "producer",
        trace_id = tracing::field::Empty,
        span_id = tracing::field::Empty,
        component = %component,
        operation = %operation,
    );
    let trace = ferry_lattice::telemetry::follow(&span, None);
    (span, trace)
}

/// Logs as the start-up data asks, and the OTLP export of spans and metrics when `endpoint` or
/// the environment names a collector; the provider's id is its `service.name`.
fn init_telemetry(startup: &ProviderStartup, endpoint: Option<String>) -> ferry_lattice::telemetry::Telemetry {
    let format = startup.log_format.as_deref().and_then(|f| f.parse().ok());
    let export = ferry_lattice::telemetry::Export {
        endpoint,
        service: startup.provider_id.clone(),
        attributes: vec![("ferry.lattice", startup.lattice.clone()), ("ferry.provider", startup.provider_id.clone())],
    };
    ferry_lattice::telemetry::init(startup.log_level.as_deref(), Some(&export), format)
}

async fn run_provider_until<P: Provider>(
    provider: P,
    startup: ProviderStartup,
    parent_gone: Option<crate::config::ParentGone>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), SdkError> {
    match parent_gone {
        // Started by a host: stop when it closes our stdin, too (it died or stopped us).
        Some(gone) => {
            let either = async move {
                tokio::select! {
                    () = shutdown => {}
                    () = gone => {}
                }
            };
            run_provider_with(provider, startup, either).await
        }
        None => run_provider_with(provider, startup, shutdown).await,
    }
}

/// [`run_provider`] with start-up data already in hand (embedding, tests).
///
/// # Errors
/// As [`run_provider`].
pub async fn run_provider_with<P: Provider>(
    provider: P,
    startup: ProviderStartup,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), SdkError> {
    // Set up already when started as a process; an embedding program gets logs (only).
    let format = startup.log_format.as_deref().and_then(|f| f.parse().ok());
    ferry_lattice::telemetry::init_logging_with(startup.log_level.as_deref(), format);
    let credential = CredentialSet::parse(&startup.credential)?;
    if credential.provider_id() != startup.provider_id {
        return Err(SdkError::Startup(format!(
            "credential is for provider {:?}, not {:?}",
            credential.provider_id(),
            startup.provider_id
        )));
    }
    let now = ferry_proto::time::now_ms();
    if credential.key_at(now).is_err() {
        return Err(SdkError::Startup(format!("credential is not valid now: {credential:?}")));
    }
    let connection = NatsOptions::new(&startup.nats_url, format!("ferry-provider-{}", startup.provider_id))
        .secured(&ferry_lattice::NatsSecurity::from_env()?)
        .with_inbox_prefix(subject::inbox_prefix(&startup.lattice, &startup.provider_id)?)
        .connect()
        .await?;
    let (nats, reconnects) = (connection.client, connection.reconnects);
    let client = LatticeClient::new(
        nats.clone(),
        &startup.lattice,
        credential,
        startup.rpc_timeout_ms.map(Duration::from_millis),
    )?;
    let ctx = ProviderContext {
        inner: Arc::new(ContextInner {
            instance_id: uuid::Uuid::new_v4().simple().to_string(),
            config: startup.config.clone(),
            nats_url: startup.nats_url.clone(),
            client,
            links: LinkStore::default(),
            store: tokio::sync::OnceCell::new(),
        }),
    };
    let record = ReplayRecord::new(nats, &startup.lattice);
    let server = Arc::new(Server {
        provider,
        ctx,
        guard: ReplayGuard::default(),
        invocations: ReplayGuard::for_invocations(),
        record,
        view: LatticeView::default(),
        resolved: links::Resolved::default(),
        reconnects,
        stop: CancellationToken::new(),
    });
    server.serve(shutdown).await
}

struct Server<P> {
    provider: P,
    ctx: ProviderContext,
    /// Replay protection of this instance's link, health and shutdown subscriptions.
    guard: ReplayGuard,
    /// Replay protection of its rpc subscription: ids kept only while an invocation could
    /// still be taken up ([`ReplayGuard::for_invocations`]).
    invocations: ReplayGuard,
    /// Lattice-wide replay protection for state-changing invocations.
    record: ReplayRecord,
    /// Links and config as the lattice bucket has them.
    view: LatticeView,
    /// Config of its links, as hosts resolved it.
    resolved: links::Resolved,
    /// New connections, after which the view resyncs.
    reconnects: Reconnects,
    /// Cancelled by a shutdown request from the lattice.
    stop: CancellationToken,
}

/// Why the run loop ended.
enum Exit {
    Signal,
    Requested,
}

impl<P: Provider> Server<P> {
    async fn serve(self: Arc<Self>, shutdown: impl Future<Output = ()> + Send) -> Result<(), SdkError> {
        let nats = self.ctx.nats().clone();
        let (lattice, id) = (self.ctx.lattice().to_owned(), self.ctx.provider_id().to_owned());
        let instance = self.ctx.instance_id().to_owned();
        // Subscribe before reading the snapshot so no notification falls between the two.
        let rpc = nats.queue_subscribe(subject::rpc(&lattice, &id)?, id.clone()).await.map_err(SdkError::nats)?;
        let puts = nats.subscribe(subject::link_put(&lattice, &id)?).await.map_err(SdkError::nats)?;
        let dels = nats.subscribe(subject::link_del(&lattice, &id)?).await.map_err(SdkError::nats)?;
        let health = nats.subscribe(subject::health(&lattice, &id)?).await.map_err(SdkError::nats)?;
        let stop_all = nats.subscribe(subject::shutdown(&lattice, &id, None)?).await.map_err(SdkError::nats)?;
        let stop_one =
            nats.subscribe(subject::shutdown(&lattice, &id, Some(&instance))?).await.map_err(SdkError::nats)?;
        ferry_lattice::nats::sync_subscriptions(&nats).await?;

        self.provider.on_start(&self.ctx).await;
        // The links the bucket holds are applied before the instance says it is ready.
        let control = CancellationToken::new();
        let (changes_tx, mut changes) = mpsc::unbounded_channel();
        self.follow_view(changes_tx, control.clone()).await;
        // One request for the config of every link the view found, rather than one per link.
        if !self.view.links().is_empty() {
            self.fetch_resolved().await;
        }
        while let Ok(change) = changes.try_recv() {
            self.on_view_change(change).await;
        }

        let tasks = TaskTracker::new();
        tasks.spawn(self.clone().link_loop(puts, dels, changes, control.clone()));
        tasks.spawn(self.clone().health_loop(health, control.clone()));
        tasks.spawn(self.clone().shutdown_loop(futures::stream::select(stop_all, stop_one), control.clone()));
        let invocations = TaskTracker::new();
        let rpc_task = tokio::spawn(self.clone().rpc_loop(rpc, invocations.clone(), control.clone()));
        info!(provider_id = %id, instance_id = %instance, lattice = %lattice, links = self.ctx.links().len(), "provider ready");

        let exit = tokio::select! {
            () = shutdown => Exit::Signal,
            () = self.stop.cancelled() => Exit::Requested,
        };
        match exit {
            Exit::Signal => info!("shutting down on signal"),
            Exit::Requested => info!("shutting down on request from the lattice"),
        }
        control.cancel();
        let _ = rpc_task.await;
        invocations.close();
        if tokio::time::timeout(SHUTDOWN_GRACE, invocations.wait()).await.is_err() {
            warn!(grace = ?SHUTDOWN_GRACE, "in-flight invocations did not finish within the grace period");
        }
        tasks.close();
        tasks.wait().await;
        // A hook that never returns must not keep the process alive.
        if tokio::time::timeout(SHUTDOWN_GRACE, self.provider.on_shutdown(&self.ctx)).await.is_err() {
            warn!(grace = ?SHUTDOWN_GRACE, "the provider's shutdown hook did not return within the grace period");
        }
        if let Err(err) = ferry_lattice::nats::close(&nats).await {
            warn!(cause = %err, "failed to drain NATS connection");
        }
        info!("provider stopped");
        Ok(())
    }

    async fn health_loop(self: Arc<Self>, mut health: async_nats::Subscriber, control: CancellationToken) {
        loop {
            let msg = tokio::select! {
                () = control.cancelled() => break,
                msg = health.next() => match msg { Some(msg) => msg, None => break },
            };
            let answer = match self.authenticate(&msg.payload, Channel::Health) {
                Err(resp) => *resp,
                Ok((inv, key)) => {
                    let status = self.provider.health(&self.ctx).await;
                    let answer = HealthAnswer {
                        provider_id: self.ctx.provider_id().to_owned(),
                        instance_id: self.ctx.instance_id().to_owned(),
                        healthy: status.healthy,
                        message: status.message,
                        links: u32::try_from(self.ctx.links().len()).unwrap_or(u32::MAX),
                    };
                    signed_ok(&inv.id, &answer, &key)
                }
            };
            self.reply(msg.reply, answer).await;
        }
    }

    async fn shutdown_loop(
        self: Arc<Self>,
        mut requests: impl futures::Stream<Item = async_nats::Message> + Unpin,
        control: CancellationToken,
    ) {
        loop {
            let msg = tokio::select! {
                () = control.cancelled() => break,
                msg = requests.next() => match msg { Some(msg) => msg, None => break },
            };
            match self.authenticate(&msg.payload, Channel::Shutdown) {
                Err(resp) => self.reply(msg.reply, *resp).await,
                Ok((inv, key)) => {
                    if let Err(refusal) = self.shutdown_is_for_me(&inv) {
                        self.reply(msg.reply, *refusal).await;
                        continue;
                    }
                    info!(origin = %inv.origin, "shutdown requested");
                    self.reply(msg.reply, signed_ok(&inv.id, &self.ctx.instance_id(), &key)).await;
                    self.stop.cancel();
                    break;
                }
            }
        }
    }

    /// A verified shutdown request stops this instance only if it names this instance or none.
    fn shutdown_is_for_me(&self, inv: &Invocation) -> Result<(), Box<InvocationResponse>> {
        let me = self.ctx.instance_id();
        let refusal = match codec::decode::<ShutdownRequest>(&inv.payload) {
            Ok(ShutdownRequest { instance_id: None }) => return Ok(()),
            Ok(ShutdownRequest { instance_id: Some(id) }) if id == me => return Ok(()),
            Ok(ShutdownRequest { instance_id: Some(id) }) => format!("shutdown for instance {id}, not {me}"),
            Err(err) => format!("bad shutdown request: {err}"),
        };
        warn!(id = %inv.id, origin = %inv.origin, cause = %refusal, "rejected invocation");
        Err(Box::new(InvocationResponse::err(inv.id.clone(), RpcError::new(ErrorKind::Denied, refusal))))
    }

    /// Decode and verify an envelope addressed to this provider that arrived on a subject of
    /// kind `channel`. On failure, the error reply and the reason. Refusals are never signed:
    /// a MACed refusal for a request id anyone may choose would let a bus client fail the real
    /// request with a genuine-looking error.
    fn authenticate(&self, bytes: &[u8], channel: Channel) -> Result<(Invocation, MacKey), Box<InvocationResponse>> {
        let inv = match Invocation::decode(bytes) {
            Ok(inv) => inv,
            Err(err) => {
                let err = RpcError::from(err);
                warn!(cause = %err, "rejected malformed envelope");
                return Err(Box::new(InvocationResponse::err("", err)));
            }
        };
        let id = self.ctx.provider_id();
        if inv.target != id {
            let err = RpcError::new(ErrorKind::Denied, format!("invocation addressed to {}, not {id}", inv.target));
            warn!(id = %inv.id, origin = %inv.origin, cause = %err, "rejected invocation");
            return Err(Box::new(InvocationResponse::err(inv.id, err)));
        }
        // More than one key only while the lattice's cluster key is rotated: any of them signs.
        let keys = self.ctx.client().credential().keys_at(inv.issued_at_ms);
        if keys.is_empty() {
            let err = match self.ctx.client().credential().key_at(inv.issued_at_ms) {
                Err(err) => RpcError::new(ErrorKind::Denied, err.to_string()),
                Ok(_) => RpcError::new(ErrorKind::Denied, "no credential is valid at the invocation's issue time"),
            };
            warn!(id = %inv.id, origin = %inv.origin, operation = %inv.operation, cause = %err, "rejected invocation");
            return Err(Box::new(InvocationResponse::err(inv.id, err)));
        }
        let guard = if channel == Channel::Rpc { &self.invocations } else { &self.guard };
        let key = match verify_invocation_under(&inv, channel, &keys, guard) {
            Ok(key) => key,
            Err(err) => {
                let err = RpcError::new(ErrorKind::Denied, err.to_string());
                warn!(id = %inv.id, origin = %inv.origin, operation = %inv.operation, cause = %err, "rejected invocation");
                return Err(Box::new(InvocationResponse::err(inv.id, err)));
            }
        };
        Ok((inv, key))
    }

    async fn reply(&self, reply: Option<async_nats::Subject>, resp: InvocationResponse) {
        let Some(reply) = reply else { return };
        match resp.encode() {
            Ok(bytes) => {
                if let Err(err) = self.ctx.nats().publish(reply, bytes.into()).await {
                    warn!(cause = %err, "failed to send reply");
                }
            }
            Err(err) => error!(cause = %err, "failed to encode reply"),
        }
    }
}

fn signed_ok<T: serde::Serialize>(id: &str, value: &T, key: &MacKey) -> InvocationResponse {
    let mut resp = match codec::encode(value) {
        Ok(payload) => InvocationResponse::ok(id, payload),
        Err(err) => InvocationResponse::err(id, RpcError::from(err)),
    };
    resp.sign(key);
    resp
}
