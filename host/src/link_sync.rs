//! Providers' link sync requests ([`ferry_proto::subject::link_sync`]): a provider asks for its
//! links with their config resolved, and one host answers, sealed under that provider's key.
//!
//! Providers follow which links exist from the lattice bucket, but never its config (their
//! NATS users may not read it, [`ferry_proto::permissions`]): config reaches a provider only
//! here and in link put notifications, so a provider learns the values of its own links and
//! of no one else's.

use std::{sync::Arc, time::Duration};

use ferry_proto::{
    ErrorKind, RpcError,
    auth::{MacKey, ReplayGuard},
    codec,
    envelope::{Invocation, InvocationResponse},
    link::{LinkSyncAnswer, LinkSyncRequest},
    seal, subject,
    subject::Channel,
};
use futures::StreamExt as _;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::{error::HostError, lattice::LatticeView, rpc::client::RpcClient};

/// The queue group hosts answer link sync requests in: one host answers each.
const QUEUE: &str = "ferry-hosts";
/// How long an answer waits for this host's view to reach what the provider has seen.
const CATCH_UP: Duration = Duration::from_secs(3);

struct Service {
    lattice: String,
    view: LatticeView,
    rpc: RpcClient,
    guard: ReplayGuard,
}

/// Answer link sync requests until `stop`.
///
/// # Errors
/// [`HostError`] when the subscription cannot be made.
pub(crate) async fn serve(
    nats: async_nats::Client,
    lattice: &str,
    view: LatticeView,
    rpc: RpcClient,
    stop: CancellationToken,
) -> Result<tokio::task::JoinHandle<()>, HostError> {
    let mut requests = nats
        .queue_subscribe(subject::all_link_syncs(lattice)?, QUEUE.to_owned())
        .await
        .map_err(|e| HostError::Nats(e.to_string()))?;
    let service = Arc::new(Service { lattice: lattice.to_owned(), view, rpc, guard: ReplayGuard::default() });
    Ok(tokio::spawn(async move {
        loop {
            let msg = tokio::select! {
                () = stop.cancelled() => break,
                msg = requests.next() => match msg { Some(msg) => msg, None => break },
            };
            let Some(reply) = msg.reply else { continue };
            let service = service.clone();
            let nats = nats.clone();
            tokio::spawn(async move {
                let answer = service.answer(&msg.subject, &msg.payload).await;
                match answer.encode() {
                    Ok(bytes) => {
                        if let Err(err) = nats.publish(reply, bytes.into()).await {
                            warn!(cause = %err, "failed to answer a link sync request");
                        }
                    }
                    Err(err) => warn!(cause = %err, "failed to encode a link sync answer"),
                }
            });
        }
        let _ = requests.unsubscribe().await;
    }))
}

impl Service {
    async fn answer(&self, on: &str, bytes: &[u8]) -> InvocationResponse {
        let (inv, key) = match self.authenticate(on, bytes) {
            Ok(ok) => ok,
            Err(refusal) => return *refusal,
        };
        let request: LinkSyncRequest = match codec::decode(&inv.payload) {
            Ok(request) => request,
            Err(err) => return InvocationResponse::err(inv.id, RpcError::from(err)),
        };
        if !self.view.caught_up_to(request.seen_revision, CATCH_UP).await {
            warn!(provider = %inv.origin, seen = request.seen_revision, view = self.view.high_water(), "this host's view is behind a provider's: answering its link sync with what it has");
        }
        let revision = self.view.high_water();
        let links: Vec<_> = self
            .view
            .links()
            .into_iter()
            .filter(|l| l.source_id == inv.origin || l.target_id == inv.origin)
            .filter_map(|l| self.view.resolve(&l))
            .collect();
        debug!(provider = %inv.origin, links = links.len(), revision, "answering link sync");
        let sealed = codec::encode(&LinkSyncAnswer { links, revision }).map_err(RpcError::from).and_then(|plain| {
            seal::seal(&key, &inv.id, &plain).map_err(|e| RpcError::new(ErrorKind::ProviderError, e.to_string()))
        });
        let mut resp = match sealed {
            Ok(payload) => InvocationResponse::ok(inv.id, payload),
            Err(err) => InvocationResponse::err(inv.id, err),
        };
        resp.sign(&key);
        resp
    }

    /// Decode and verify a request: it must come from the provider its subject names, under
    /// that provider's key. Refusals are not signed (as for invocations).
    fn authenticate(&self, on: &str, bytes: &[u8]) -> Result<(Invocation, MacKey), Box<InvocationResponse>> {
        let inv = match Invocation::decode(bytes) {
            Ok(inv) => inv,
            Err(err) => {
                let err = RpcError::from(err);
                warn!(subject = %on, cause = %err, "rejected malformed link sync request");
                return Err(Box::new(InvocationResponse::err("", err)));
            }
        };
        let expected = subject::link_sync(&self.lattice, &inv.origin).ok();
        if expected.as_deref() != Some(on) || inv.target != inv.origin {
            let err =
                RpcError::new(ErrorKind::Denied, format!("a link sync request from {} arrived on {on}", inv.origin));
            warn!(origin = %inv.origin, cause = %err, "rejected link sync request");
            return Err(Box::new(InvocationResponse::err(inv.id, err)));
        }
        match self.rpc.verify_from_provider(&inv, Channel::LinkSync, &self.guard) {
            Ok(key) => Ok((inv, key)),
            Err(err) => {
                warn!(origin = %inv.origin, invocation = %inv.id, cause = %err, "rejected link sync request");
                Err(Box::new(InvocationResponse::err(inv.id, err)))
            }
        }
    }
}
