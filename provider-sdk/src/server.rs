//! The provider's run loop: subscriptions, verification, dispatch, links, health, shutdown.
//!
//! Invocations, link notifications, health checks and shutdown requests each have their own
//! task, so a slow link hook never delays a health answer, and invocations run concurrently
//! (bounded by [`MAX_CONCURRENT_INVOCATIONS`]).

use std::{future::Future, panic::AssertUnwindSafe, sync::Arc, time::Duration};

use clap::Parser as _;
use ferry_proto::{
    ErrorKind, RpcError,
    auth::{CredentialSet, MacKey, ReplayGuard, verify_invocation_under},
    codec,
    delivery::{ACK_WITHIN, too_late_to_take_up},
    envelope::{Invocation, InvocationResponse},
    health::{HealthAnswer, ShutdownRequest},
    startup::ProviderStartup,
    subject,
    subject::Channel,
};
use futures::{FutureExt as _, StreamExt as _};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::{debug, error, info, warn};

mod links;

use ferry_lattice::{
    NatsOptions,
    nats::Reconnects,
    overflow,
    replay::ReplayRecord,
    signed::{Ack, with_progress},
    view::LatticeView,
};

use crate::{
    LatticeClient, LinkStore, Provider, ProviderContext, SdkError, StartupArgs,
    provider::{ContextInner, InvocationContext},
};

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
    let metrics_listen = args.metrics_listen;
    let (startup, parent_gone) = args.resolve_with_parent().await?;
    let Some(address) = metrics_listen else {
        return run_provider_until(provider, startup, parent_gone, shutdown).await;
    };
    let stop = CancellationToken::new();
    let (_, metrics) = ferry_lattice::metrics::serve(address, stop.clone())
        .await
        .map_err(|e| SdkError::Startup(format!("cannot serve metrics on {address}: {e}")))?;
    let result = run_provider_until(provider, startup, parent_gone, shutdown).await;
    stop.cancel();
    let _ = metrics.await;
    result
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
    /// Replay protection shared by every subscription of this instance.
    guard: ReplayGuard,
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

    async fn rpc_loop(
        self: Arc<Self>,
        mut rpc: async_nats::Subscriber,
        tasks: TaskTracker,
        control: CancellationToken,
    ) {
        let permits = Arc::new(Semaphore::new(MAX_CONCURRENT_INVOCATIONS));
        loop {
            let msg = tokio::select! {
                () = control.cancelled() => break,
                msg = rpc.next() => match msg { Some(msg) => msg, None => break },
            };
            let Ok(permit) = permits.clone().acquire_owned().await else { break };
            let server = self.clone();
            tasks.spawn(async move {
                let _permit = permit;
                if let Some(answer) = server.invocation(&msg.payload, msg.reply.as_ref()).await {
                    server.reply(msg.reply, answer).await;
                }
            });
        }
        // Stop receiving: NATS sends further messages to other instances of the queue group.
        let _ = rpc.unsubscribe().await;
    }

    /// The answer to an invocation; `None` for one that arrived too late to be taken up, which
    /// is dropped unrun (its caller sends it again, [`ferry_proto::delivery`]).
    async fn invocation(&self, bytes: &[u8], reply: Option<&async_nats::Subject>) -> Option<InvocationResponse> {
        let (inv, key) = match self.authenticate(bytes, Channel::Rpc) {
            Ok(ok) => ok,
            Err(resp) => return Some(*resp),
        };
        let now = ferry_proto::time::now_ms();
        if too_late_to_take_up(inv.issued_at_ms, now) {
            warn!(id = %inv.id, origin = %inv.origin, operation = %inv.operation, issued_ms_ago = now.saturating_sub(inv.issued_at_ms), "invocation arrived too late to be taken up; dropped unrun (its caller sends it again)");
            return None;
        }
        let (id, progress_key) = (inv.id.clone(), key.clone());
        let taken_up_at = tokio::time::Instant::now();
        // A read may run twice, and a write is claimed first, so a repeat cannot run it twice:
        // the answer is the only sign a call that ends within ACK_WITHIN needs
        // ([`ferry_proto::delivery`]).
        let ack = || Ack::After(ACK_WITHIN.saturating_sub(taken_up_at.elapsed()));
        if ferry_proto::is_read_only(&inv.operation) {
            return Some(
                with_progress(self.ctx.nats(), reply, &id, &progress_key, ack(), self.taken_up(inv, key)).await,
            );
        }
        // Claimed before it is acknowledged, so that a caller that hears no acknowledgement
        // and sends the call again finds this claim should this process die in between. A
        // claim still waiting on JetStream (electing a new leader, say) after ACK_WITHIN is
        // acknowledged anyway: the caller then waits, rather than sending the call again.
        // The claim waits out an election for no longer than the caller does.
        let (replay_key, deadline) = (inv.replay_key().to_owned(), inv.remaining());
        let claim = async {
            let Some(left) = deadline else { return self.record.claim(&replay_key).await };
            tokio::time::timeout(left, self.record.claim(&replay_key)).await.unwrap_or_else(|_| {
                Err(RpcError::new(
                    ErrorKind::Timeout,
                    format!("the caller's deadline passed after {left:?} while the lattice's replay record was unavailable; not run"),
                ))
            })
        };
        tokio::pin!(claim);
        let claimed = match tokio::time::timeout(ACK_WITHIN, &mut claim).await {
            Ok(claimed) => claimed,
            Err(_) => {
                let work = async {
                    match claim.await {
                        Ok(()) => self.taken_up(inv, key).await,
                        Err(err) => refused(inv, err),
                    }
                };
                return Some(with_progress(self.ctx.nats(), reply, &id, &progress_key, Ack::BeforeWork, work).await);
            }
        };
        Some(match claimed {
            Ok(()) => with_progress(self.ctx.nats(), reply, &id, &progress_key, ack(), self.taken_up(inv, key)).await,
            Err(err) => refused(inv, err),
        })
    }

    /// Run an invocation that was taken up (and claimed, if it changes state), to its signed
    /// answer.
    async fn taken_up(&self, inv: Invocation, key: MacKey) -> InvocationResponse {
        let Some(span) = ferry_proto::trace::TraceParent::of(&inv.trace_context).map(|caller| caller.child()) else {
            return self.serve_taken_up(inv, key).await;
        };
        let traced = tracing::info_span!(
            "invocation",
            trace_id = %span.trace_id_hex(),
            span_id = %span.span_id_hex(),
            provider = %self.ctx.provider_id(),
            operation = %inv.operation,
        );
        tracing::Instrument::instrument(self.serve_taken_up(inv, key), traced).await
    }

    async fn serve_taken_up(&self, inv: Invocation, key: MacKey) -> InvocationResponse {
        let started = tokio::time::Instant::now();
        let result = match inv.remaining() {
            None => self.dispatch(&inv, &key).await,
            Some(left) if left.is_zero() => {
                warn!(id = %inv.id, origin = %inv.origin, operation = %inv.operation, "invocation arrived after its caller's deadline");
                Err(RpcError::new(ErrorKind::Timeout, "the caller's deadline passed before the invocation started"))
            }
            Some(left) => match tokio::time::timeout(left, self.dispatch(&inv, &key)).await {
                Ok(result) => result,
                Err(_) => {
                    warn!(id = %inv.id, origin = %inv.origin, operation = %inv.operation, after = ?left, "stopped work past its caller's deadline");
                    Err(RpcError::new(
                        ErrorKind::Timeout,
                        format!("the caller's deadline passed after {left:?}; work stopped"),
                    ))
                }
            },
        };
        if let Err(err) = &result {
            debug!(id = %inv.id, origin = %inv.origin, operation = %inv.operation, kind = ?err.kind, cause = %err.message, "invocation failed");
        }
        let outcome = result.as_ref().map_or_else(|e| e.kind.as_wit_prefix(), |_| "ok");
        debug!(operation = %inv.operation, outcome, took_us = started.elapsed().as_micros(), "invocation served");
        ferry_lattice::metrics::invocation(
            ferry_lattice::metrics::Served::Provider(self.ctx.provider_id()),
            &inv.operation,
            outcome,
            started.elapsed(),
        );
        let mut resp = match result {
            Ok(payload) => self.ok_response(inv, payload, &key).await,
            Err(err) => InvocationResponse::err(inv.id, err),
        };
        resp.sign(&key);
        resp
    }

    /// The answer carrying `payload`, its rest offered as a stream when it is over the inline
    /// limit (for as long as the caller waits).
    async fn ok_response(&self, inv: Invocation, mut payload: Vec<u8>, key: &MacKey) -> InvocationResponse {
        let idle = inv.remaining().unwrap_or_else(|| self.ctx.client().timeout());
        match overflow::offload(self.ctx.nats(), self.ctx.lattice(), &mut payload, key, idle).await {
            Ok(None) => InvocationResponse::ok(inv.id, payload),
            Ok(Some((rest, offered))) => {
                offered.keep();
                let mut resp = InvocationResponse::ok(inv.id, payload);
                resp.payload_stream = Some(rest);
                resp
            }
            Err(err) => {
                warn!(id = %inv.id, origin = %inv.origin, operation = %inv.operation, cause = %err, "cannot send the answer");
                InvocationResponse::err(inv.id, err)
            }
        }
    }

    async fn dispatch(&self, inv: &Invocation, key: &MacKey) -> Result<Vec<u8>, RpcError> {
        let (namespace, package, interface) = split_operation(&inv.operation).ok_or_else(|| {
            RpcError::new(ErrorKind::UnknownOperation, format!("malformed operation {:?}", inv.operation))
        })?;
        let id = self.ctx.provider_id();
        let held =
            self.ctx.links().find_held(&inv.origin, id, &inv.link_name, namespace, package, interface).ok_or_else(
                || {
                    RpcError::not_linked(format!(
                        "{} has no link named {:?} to {id} for {namespace}:{package}/{interface}",
                        inv.origin, inv.link_name
                    ))
                },
            )?;
        // Only states the provider's hook built are held, so this is its type.
        let state = held.state.downcast::<P::Link>().map_err(|_| RpcError::internal("link state of another type"))?;
        let ictx = InvocationContext {
            origin: inv.origin.clone(),
            link: held.put,
            state,
            trace_context: inv.trace_context.clone(),
            provider: self.ctx.clone(),
            deadline: inv.remaining().map(|left| tokio::time::Instant::now() + left),
            key: key.clone(),
        };
        let timeout = inv.remaining().unwrap_or_else(|| self.ctx.client().timeout());
        let payload = overflow::gather(
            self.ctx.nats(),
            self.ctx.lattice(),
            inv.payload.clone(),
            inv.payload_stream.as_ref(),
            key,
            timeout,
        )
        .await?;
        AssertUnwindSafe(self.provider.handle(ictx, &inv.operation, payload)).catch_unwind().await.unwrap_or_else(
            |_| {
                error!(operation = %inv.operation, "provider handler panicked");
                Err(RpcError::internal("provider handler panicked"))
            },
        )
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
        let key = match verify_invocation_under(&inv, channel, &keys, &self.guard) {
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

/// `wasi:keyvalue/store.get` → (`wasi`, `keyvalue`, `store`).
fn split_operation(op: &str) -> Option<(&str, &str, &str)> {
    let (namespace, rest) = op.split_once(':')?;
    let (package, rest) = rest.split_once('/')?;
    let (interface, _function) = rest.split_once('.')?;
    Some((namespace, package, interface))
}

/// The refusal of an invocation whose replay key could not be claimed. Unsigned, like every
/// refusal: the genuine request may still be running elsewhere.
fn refused(inv: Invocation, err: RpcError) -> InvocationResponse {
    warn!(id = %inv.id, origin = %inv.origin, operation = %inv.operation, cause = %err, "rejected invocation");
    InvocationResponse::err(inv.id, err)
}

#[cfg(test)]
mod tests {
    #[test]
    fn operations_split_into_namespace_package_interface() {
        assert_eq!(super::split_operation("wasi:keyvalue/store.get"), Some(("wasi", "keyvalue", "store")));
        assert_eq!(
            super::split_operation("wasi:http/incoming-handler.handle"),
            Some(("wasi", "http", "incoming-handler"))
        );
        assert_eq!(super::split_operation("nonsense"), None);
    }
}
