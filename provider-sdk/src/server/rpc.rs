//! Invocations on the provider's rpc subject: taken from NATS under a bound on concurrency,
//! authenticated, claimed against replay, dispatched to the provider's handler, answered signed.

use std::{panic::AssertUnwindSafe, pin::pin, sync::Arc};

use ferry_proto::{
    ErrorKind, RpcError,
    auth::MacKey,
    delivery::{ACK_WITHIN, too_late_to_take_up},
    envelope::{Invocation, InvocationResponse},
    subject::Channel,
};
use futures::{FutureExt as _, StreamExt as _};
use tokio::sync::Semaphore;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::{debug, error, warn};

use ferry_lattice::{
    overflow,
    signed::{Ack, with_progress},
};

use super::{MAX_CONCURRENT_INVOCATIONS, Server};
use crate::{Provider, provider::InvocationContext};

impl<P: Provider> Server<P> {
    /// Take invocations from `rpc` until `control` is cancelled, each in a task of `tasks`, at
    /// most [`MAX_CONCURRENT_INVOCATIONS`] at once.
    pub(super) async fn rpc_loop(
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
                with_progress(self.ctx.nats(), reply, &id, &progress_key, ack(), pin!(self.taken_up(inv, key))).await,
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
                return Some(
                    with_progress(self.ctx.nats(), reply, &id, &progress_key, Ack::BeforeWork, pin!(work)).await,
                );
            }
        };
        Some(match claimed {
            Ok(()) => {
                with_progress(self.ctx.nats(), reply, &id, &progress_key, ack(), pin!(self.taken_up(inv, key))).await
            }
            Err(err) => refused(inv, err),
        })
    }

    /// Run an invocation that was taken up (and claimed, if it changes state), to its signed
    /// answer.
    async fn taken_up(&self, mut inv: Invocation, key: MacKey) -> InvocationResponse {
        let caller = ferry_proto::trace::TraceParent::of(&inv.trace_context);
        if caller.is_none() && !ferry_lattice::telemetry::exporting() {
            return self.serve_taken_up(inv, key).await;
        }
        let traced = tracing::info_span!(
            "invocation",
            otel.name = %inv.operation,
            otel.kind = "server",
            trace_id = tracing::field::Empty,
            span_id = tracing::field::Empty,
            provider = %self.ctx.provider_id(),
            operation = %inv.operation,
            origin = %inv.origin,
        );
        // What the provider's own calls within this one carry: its span, not its caller's.
        if let Some(own) = ferry_lattice::telemetry::follow(&traced, caller) {
            inv.trace_context.insert(ferry_proto::trace::TRACEPARENT.to_owned(), own.to_string());
        }
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
