//! Incoming invocations for a component: verified (MAC, freshness, replay), checked against the
//! links (the caller must be linked to the component over the export), then run.

use std::sync::Arc;

use ferry_lattice::{
    body::LatticeBody,
    overflow,
    signed::{Ack, with_progress},
    stream::{self, ByteStream},
};
use ferry_proto::{
    ErrorKind, RpcError,
    auth::{MacKey, ReplayGuard},
    codec,
    delivery::too_late_to_take_up,
    envelope::{Invocation, InvocationResponse},
    http::{self as wit_http, HttpRequest, HttpResponse},
    keyvalue::{self as kv, Empty},
    messaging::{self as msg, BrokerMessage},
    stream::DEFAULT_CHUNK_SIZE,
    subject::{self, Channel},
};
use futures::StreamExt as _;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::{debug, warn};

use crate::{
    HostError, capability::custom, component::RunningComponent, lattice::LatticeView, rpc::client::RpcClient,
    state::Causes, workers::Workers,
};

/// What a component's server loop needs from its host.
#[derive(Clone)]
pub(crate) struct ServeContext {
    pub(crate) lattice_name: String,
    pub(crate) lattice: LatticeView,
    /// Calls and replies go out on the serving worker's connection through it.
    pub(crate) rpc: RpcClient,
    /// Replay protection of components' rpc subscriptions, on every worker
    /// ([`ReplayGuard::for_invocations`]: an invocation is taken up only soon after its issue).
    pub(crate) guard: Arc<ReplayGuard>,
    pub(crate) tasks: TaskTracker,
    pub(crate) workers: Arc<Workers>,
}

/// Subscribe for a component on every worker (queue group = its id) and serve until `stop`,
/// each invocation on the version `versions` holds when it arrives; in-flight invocations
/// finish on the host's task tracker, on the version they started on. Returns once every
/// worker's subscription is live at the server; when one fails, `stop` is cancelled so the
/// others end too.
pub(crate) async fn serve(
    ctx: ServeContext,
    versions: tokio::sync::watch::Receiver<Arc<RunningComponent>>,
    stop: CancellationToken,
) -> Result<Vec<tokio::task::JoinHandle<()>>, HostError> {
    let id = versions.borrow().spec.id.clone();
    let subject = subject::rpc(&ctx.lattice_name, &id)?;
    // Shared by every invocation's task: one reference count, not the context cloned per call.
    let ctx = Arc::new(ctx);
    let mut subscribed = Vec::with_capacity(ctx.workers.len());
    let servers = ctx.workers.spawn_each(|_| {
        let (ready, ready_rx) = tokio::sync::oneshot::channel();
        subscribed.push(ready_rx);
        let (ctx, versions, stop, subject, id) =
            (ctx.clone(), versions.clone(), stop.clone(), subject.clone(), id.clone());
        async move {
            // On the worker: its own connection.
            let nats = ctx.rpc.nats().clone();
            let sub = match subscribe(&nats, subject, id).await {
                Ok(sub) => sub,
                Err(err) => {
                    let _ = ready.send(Err(err));
                    return;
                }
            };
            let _ = ready.send(Ok(()));
            serve_worker(ctx, versions, stop, sub).await;
        }
    });
    for ready in subscribed {
        let result =
            ready.await.unwrap_or_else(|_| Err(HostError::Invalid("a worker stopped while subscribing".into())));
        if let Err(err) = result {
            stop.cancel();
            return Err(err);
        }
    }
    Ok(servers)
}

async fn subscribe(
    nats: &async_nats::Client,
    subject: String,
    id: String,
) -> Result<async_nats::Subscriber, HostError> {
    let sub = nats.queue_subscribe(subject, id).await.map_err(HostError::nats)?;
    ferry_lattice::nats::sync_subscriptions(nats).await.map_err(HostError::nats)?;
    Ok(sub)
}

/// One worker's share of a component's invocations, each on a task of its own on the worker.
async fn serve_worker(
    ctx: Arc<ServeContext>,
    versions: tokio::sync::watch::Receiver<Arc<RunningComponent>>,
    stop: CancellationToken,
    mut sub: async_nats::Subscriber,
) {
    loop {
        let msg = tokio::select! {
            () = stop.cancelled() => break,
            msg = sub.next() => match msg { Some(msg) => msg, None => break },
        };
        let component = versions.borrow().clone();
        let Some(admitted) = component.admit() else {
            shed(&ctx, &component, msg).await;
            continue;
        };
        let (ctx2, component) = (ctx.clone(), component.clone());
        ctx.tasks.spawn(async move {
            let _admitted = admitted;
            let Some(resp) = handle(&ctx2, &component, &msg.payload, msg.reply.as_ref()).await else { return };
            if let Some(reply) = msg.reply {
                match resp.encode() {
                    Ok(bytes) => {
                        if let Err(err) = ctx2.rpc.nats().publish(reply, bytes.into()).await {
                            warn!(cause = %err, "failed to send reply");
                        }
                    }
                    Err(err) => warn!(cause = %err, "failed to encode reply"),
                }
            }
        });
    }
    let _ = sub.unsubscribe().await;
}

/// Answer an invocation the component has no room for with `overloaded`, at once and without
/// a task of its own. Only an authentic invocation gets the signed refusal that ends its
/// caller's wait; anything else gets the usual unsigned one.
async fn shed(ctx: &ServeContext, component: &RunningComponent, msg: async_nats::Message) {
    let id = &component.spec.id;
    let resp = match authenticate(ctx, component, &msg.payload) {
        Err(resp) => *resp,
        Ok((inv, key)) => {
            let shed = component.count_shed();
            if shed.is_power_of_two() || shed.is_multiple_of(1000) {
                warn!(component = %id, max_instances = component.spec.max_instances, shed_total = shed + 1, "component overloaded: shedding invocations");
            }
            let mut resp = InvocationResponse::err(
                inv.id,
                RpcError::new(
                    ErrorKind::Overloaded,
                    format!("{id} has as many invocations running and waiting on this host as it may"),
                ),
            );
            resp.sign(&key);
            resp
        }
    };
    if let Some(reply) = msg.reply
        && let Ok(bytes) = resp.encode()
        && let Err(err) = ctx.rpc.nats().publish(reply, bytes.into()).await
    {
        warn!(cause = %err, "failed to send reply");
    }
}

/// Decode and verify an invocation of `component`; the refusal to send when it fails.
fn authenticate(
    ctx: &ServeContext,
    component: &RunningComponent,
    bytes: &[u8],
) -> Result<(Invocation, MacKey), Box<InvocationResponse>> {
    let id = &component.spec.id;
    let inv = match Invocation::decode(bytes) {
        Ok(inv) => inv,
        Err(err) => {
            let err = RpcError::from(err);
            warn!(component = %id, cause = %err, "rejected malformed invocation");
            return Err(Box::new(InvocationResponse::err("", err)));
        }
    };
    // Refusals are not signed: a MACed refusal for a request id anyone may choose would let a
    // bus client fail the real request with a genuine-looking error.
    if inv.target != *id {
        let err = RpcError::new(ErrorKind::Denied, format!("invocation addressed to {}, not {id}", inv.target));
        warn!(component = %id, invocation = %inv.id, origin = %inv.origin, cause = %err, "rejected invocation");
        return Err(Box::new(InvocationResponse::err(inv.id, err)));
    }
    match ctx.rpc.verify_from_provider(&inv, Channel::Rpc, &ctx.guard) {
        Ok(key) => Ok((inv, key)),
        Err(err) => {
            warn!(component = %id, invocation = %inv.id, origin = %inv.origin, operation = %inv.operation, cause = %err, "rejected invocation");
            Err(Box::new(InvocationResponse::err(inv.id, err)))
        }
    }
}

/// The answer to an invocation of `component`; `None` for one that arrived too late to be
/// taken up, which is dropped unrun (its caller sends it again, [`ferry_proto::delivery`]).
async fn handle(
    ctx: &ServeContext,
    component: &RunningComponent,
    bytes: &[u8],
    reply: Option<&async_nats::Subject>,
) -> Option<InvocationResponse> {
    let (inv, key) = match authenticate(ctx, component, bytes) {
        Ok(ok) => ok,
        Err(refusal) => return Some(*refusal),
    };
    if too_late_to_take_up(inv.issued_at_ms, ferry_proto::time::now_ms()) {
        warn!(component = %component.spec.id, invocation = %inv.id, origin = %inv.origin, issued_ms_ago = ferry_proto::time::now_ms().saturating_sub(inv.issued_at_ms), "invocation arrived too late to be taken up; dropped unrun (its caller sends it again)");
        return None;
    }
    let (id, progress_key) = (inv.id.clone(), key.clone());
    Some(
        with_progress(
            ctx.rpc.nats(),
            reply,
            &id,
            &progress_key,
            Ack::BeforeWork,
            std::pin::pin!(taken_up(ctx, component, inv, key)),
        )
        .await,
    )
}

/// Run an invocation that was taken up, to its signed answer; within a span of its trace when
/// it carries one (this host's span: a child of the caller's).
async fn taken_up(
    ctx: &ServeContext,
    component: &RunningComponent,
    inv: Invocation,
    key: MacKey,
) -> InvocationResponse {
    let caller = ferry_proto::trace::TraceParent::of(&inv.trace_context);
    if caller.is_none() && !ferry_lattice::telemetry::exporting() {
        return serve_taken_up(ctx, component, inv, key, None).await;
    }
    let traced = tracing::info_span!(
        "invocation",
        otel.name = %inv.operation,
        otel.kind = "server",
        trace_id = tracing::field::Empty,
        span_id = tracing::field::Empty,
        component = %component.spec.id,
        operation = %inv.operation,
        origin = %inv.origin,
    );
    let span = ferry_lattice::telemetry::follow(&traced, caller);
    tracing::Instrument::instrument(serve_taken_up(ctx, component, inv, key, span), traced).await
}

async fn serve_taken_up(
    ctx: &ServeContext,
    component: &RunningComponent,
    mut inv: Invocation,
    key: MacKey,
    span: Option<ferry_proto::trace::TraceParent>,
) -> InvocationResponse {
    let id = &component.spec.id;
    let started = tokio::time::Instant::now();
    let result = if inv.remaining().is_some_and(|left| left.is_zero()) {
        warn!(component = %id, invocation = %inv.id, origin = %inv.origin, "invocation arrived after its caller's deadline");
        Err(RpcError::new(ErrorKind::Timeout, "the caller's deadline passed before the invocation started"))
    } else if let Err(err) = gather(ctx, &mut inv, &key).await {
        Err(err)
    } else {
        match inv.operation.as_str() {
            wit_http::OP_HANDLE => match run(ctx, component, &inv, &key, span).await {
                Ok((response, rest)) => respond(ctx, response, rest, &key).await,
                Err(err) => Err(err),
            },
            msg::OP_HANDLE_MESSAGE => deliver(ctx, component, &inv, span).await,
            kv::op::ON_SET | kv::op::ON_DELETE => watch(ctx, component, &inv, span).await,
            other if let Some((ns, pkg, iface, func)) = custom::parse_operation(other) => {
                match require_link(ctx, component, &inv, ns, pkg, iface) {
                    Err(err) => Err(err),
                    Ok(()) => {
                        let causes = Causes::of_invocation(&inv, span);
                        component.call_custom((ns, pkg, iface), func, &inv.payload, inv.remaining(), causes).await
                    }
                }
            }
            other => Err(RpcError::new(ErrorKind::UnknownOperation, format!("component does not serve {other:?}"))),
        }
    };
    if let Some(err) =
        result.as_ref().err().filter(|e| e.kind == ErrorKind::Timeout && inv.remaining().is_some_and(|l| l.is_zero()))
    {
        warn!(component = %id, invocation = %inv.id, origin = %inv.origin, cause = %err.message, "stopped work past its caller's deadline");
    }
    let sign = |mut resp: InvocationResponse| {
        resp.sign(&key);
        resp
    };
    if let Err(err) = &result {
        debug!(component = %id, invocation = %inv.id, kind = ?err.kind, cause = %err.message, "invocation failed");
    }
    let outcome = result.as_ref().map_or_else(|e| e.kind.as_wit_prefix(), |_| "ok");
    debug!(component = %id, operation = %inv.operation, outcome, took_us = started.elapsed().as_micros(), "invocation served");
    ferry_lattice::metrics::invocation(
        ferry_lattice::metrics::Served::Component(id),
        &inv.operation,
        outcome,
        started.elapsed(),
    );
    sign(match result {
        Ok(payload) => ok_response(ctx, &inv, payload, &key).await,
        Err(err) => InvocationResponse::err(inv.id, err),
    })
}

/// Pull the rest of a payload over the inline limit, within the caller's deadline.
async fn gather(ctx: &ServeContext, inv: &mut Invocation, key: &MacKey) -> Result<(), RpcError> {
    if let Some(rest) = inv.payload_stream.take() {
        let timeout = inv.remaining().unwrap_or_else(|| ctx.rpc.timeout());
        let inline = std::mem::take(&mut inv.payload);
        inv.payload = overflow::gather(ctx.rpc.nats(), &ctx.lattice_name, inline, Some(&rest), key, timeout).await?;
    }
    Ok(())
}

/// The answer carrying `payload`, its rest offered as a stream when it is over the inline
/// limit (for as long as the caller waits).
async fn ok_response(ctx: &ServeContext, inv: &Invocation, mut payload: Vec<u8>, key: &MacKey) -> InvocationResponse {
    let idle = inv.remaining().unwrap_or_else(|| ctx.rpc.timeout());
    match overflow::offload(ctx.rpc.nats(), &ctx.lattice_name, &mut payload, key, idle).await {
        Ok(None) => InvocationResponse::ok(inv.id.clone(), payload),
        Ok(Some((rest, offered))) => {
            offered.keep();
            let mut resp = InvocationResponse::ok(inv.id.clone(), payload);
            resp.payload_stream = Some(rest);
            resp
        }
        Err(err) => InvocationResponse::err(inv.id.clone(), err),
    }
}

async fn run(
    ctx: &ServeContext,
    component: &RunningComponent,
    inv: &Invocation,
    key: &MacKey,
    span: Option<ferry_proto::trace::TraceParent>,
) -> Result<(HttpResponse, Option<ByteStream>), RpcError> {
    require_link(ctx, component, inv, wit_http::WIT_NAMESPACE, wit_http::WIT_PACKAGE, wit_http::WIT_INTERFACE)?;
    let mut request: HttpRequest = codec::decode(&inv.payload).map_err(|e| RpcError::bad_request(e.to_string()))?;
    let body = LatticeBody::from_payload(
        ctx.rpc.nats(),
        &ctx.lattice_name,
        std::mem::take(&mut request.body),
        request.body_stream.take().as_deref(),
        key,
        ctx.rpc.timeout(),
    )?;
    component.handle_http(request, body, DEFAULT_CHUNK_SIZE, inv.remaining(), Causes::of_invocation(inv, span)).await
}

/// The caller must be linked to the component over the export it invokes.
fn require_link(
    ctx: &ServeContext,
    component: &RunningComponent,
    inv: &Invocation,
    namespace: &str,
    package: &str,
    interface: &str,
) -> Result<(), RpcError> {
    let id = &component.spec.id;
    if ctx.lattice.is_linked(&inv.origin, id, &inv.link_name, namespace, package, interface) {
        return Ok(());
    }
    Err(RpcError::not_linked(format!(
        "{} has no link named {:?} to {id} for {namespace}:{package}/{interface}",
        inv.origin, inv.link_name
    )))
}

/// A message from a messaging provider for the component's `wasmcloud:messaging/handler`.
async fn deliver(
    ctx: &ServeContext,
    component: &RunningComponent,
    inv: &Invocation,
    span: Option<ferry_proto::trace::TraceParent>,
) -> Result<Vec<u8>, RpcError> {
    require_link(ctx, component, inv, msg::WIT_NAMESPACE, msg::WIT_PACKAGE, msg::HANDLER_INTERFACE)?;
    let message: BrokerMessage = codec::decode(&inv.payload).map_err(|e| RpcError::bad_request(e.to_string()))?;
    component.handle_message(message, inv.remaining(), Causes::of_invocation(inv, span)).await?;
    codec::encode(&Empty {}).map_err(RpcError::from)
}

/// A change a key-value provider's watcher link selected, for the component's
/// `wasi:keyvalue/watcher`.
async fn watch(
    ctx: &ServeContext,
    component: &RunningComponent,
    inv: &Invocation,
    span: Option<ferry_proto::trace::TraceParent>,
) -> Result<Vec<u8>, RpcError> {
    require_link(ctx, component, inv, kv::WIT_NAMESPACE, kv::WIT_PACKAGE, kv::WATCHER_INTERFACE)?;
    let event: kv::WatchEvent = codec::decode(&inv.payload).map_err(|e| RpcError::bad_request(e.to_string()))?;
    if (inv.operation == kv::op::ON_SET) != event.value.is_some() {
        return Err(RpcError::bad_request(format!("{} carries a value only for on-set", inv.operation)));
    }
    component.handle_watch(event, inv.remaining(), Causes::of_invocation(inv, span)).await?;
    codec::encode(&Empty {}).map_err(RpcError::from)
}

/// Encode the response, first offering the rest of its body when there is more.
async fn respond(
    ctx: &ServeContext,
    mut response: HttpResponse,
    rest: Option<ByteStream>,
    key: &MacKey,
) -> Result<Vec<u8>, RpcError> {
    if let Some(rest) = rest {
        let id = stream::new_stream_id();
        stream::offer(ctx.rpc.nats(), &ctx.lattice_name, &id, key.clone(), rest, DEFAULT_CHUNK_SIZE, ctx.rpc.timeout())
            .await?;
        response.body_stream = Some(id);
    }
    codec::encode(&response).map_err(RpcError::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of what `f` returns (here: the future of an async function, never run).
    fn returned_size<A, B, C, D, R>(_: impl Fn(A, B, C, D) -> R) -> usize {
        std::mem::size_of::<R>()
    }

    /// Every invocation in flight holds its task's future, so its size is memory per
    /// invocation: the work's future must be in it once, not once per place an async function
    /// keeps what it is handed (as it was, four times, when `with_progress` took it by value).
    #[test]
    fn an_invocation_s_future_holds_its_work_once() {
        let work = returned_size(|a: &'static ServeContext, b: &'static RunningComponent, c: Invocation, d: MacKey| {
            taken_up(a, b, c, d)
        });
        let whole = returned_size(
            |a: &'static ServeContext,
             b: &'static RunningComponent,
             c: &'static [u8],
             d: Option<&'static async_nats::Subject>| handle(a, b, c, d),
        );
        assert!(whole < 2 * work, "an invocation's future takes {whole} bytes, its work {work}");
    }
}
