//! The foreign provider as the bridge sees it: one HTTP/2 connection, and a session that says
//! whether the process is reachable now. A monitor asks its health every interval; when the
//! process is first reached, or answers with a new instance id (it restarted), every current
//! link is delivered to it again before calls go through. While it is unreachable, calls fail
//! at once with `unavailable`.

use std::{sync::Arc, time::Duration};

use ferry_provider_sdk::{
    ErrorKind, HealthStatus, LinkPut, ProviderContext, RpcError,
    grpc::{
        self,
        v1::{
            self, blobstore_client::BlobstoreClient, key_value_client::KeyValueClient,
            messaging_client::MessagingClient, provider_client::ProviderClient,
        },
    },
};
use tokio::sync::{Mutex, Notify, watch};
use tokio_util::sync::CancellationToken;
use tonic::transport::Uri;
use tracing::{info, warn};

use crate::{config::Address, h2::Connection, links::Verdict};

/// Largest message either side sends: a key-value value or a batch rides in one message.
pub(crate) const MAX_MESSAGE: usize = 64 << 20;
/// Longest wait for a health answer, a link verdict or a shutdown acknowledgement.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(5);
/// How often an unreachable process is tried again.
const RETRY_DOWN: Duration = Duration::from_millis(100);

/// Whether the foreign process can be called now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Session {
    /// Not reached (yet, or any more): why.
    Down(String),
    /// Reached, with every current link delivered to this instance.
    Up { instance_id: String },
}

/// The foreign provider: its connection, its session, and the lock that keeps link deliveries in
/// order.
pub(crate) struct Foreign {
    address: Address,
    connection: Connection,
    session: watch::Sender<Session>,
    /// Wakes the monitor early: a call just found the process gone.
    nudge: Notify,
    /// Held while links are delivered: one at a time, so a resync and a put never cross.
    delivery: Mutex<()>,
}

impl Foreign {
    /// The foreign process at `address`, connected when first called and again after a
    /// failure.
    pub(crate) fn new(address: Address) -> Self {
        let connection = Connection::new(address.clone());
        let (session, _) = watch::channel(Session::Down("not reached yet".into()));
        Self { address, connection, session, nudge: Notify::new(), delivery: Mutex::new(()) }
    }

    pub(crate) fn address(&self) -> &Address {
        &self.address
    }

    pub(crate) fn key_value(&self) -> KeyValueClient<Connection> {
        KeyValueClient::with_origin(self.connection.clone(), origin())
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE)
    }

    pub(crate) fn blobstore(&self) -> BlobstoreClient<Connection> {
        BlobstoreClient::with_origin(self.connection.clone(), origin())
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE)
    }

    pub(crate) fn messaging(&self) -> MessagingClient<Connection> {
        MessagingClient::with_origin(self.connection.clone(), origin())
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE)
    }

    fn provider(&self) -> ProviderClient<Connection> {
        ProviderClient::with_origin(self.connection.clone(), origin())
    }

    /// Fails with `unavailable` unless the process is reachable with its links delivered.
    pub(crate) fn ready(&self) -> Result<(), RpcError> {
        match &*self.session.borrow() {
            Session::Up { .. } => Ok(()),
            Session::Down(why) => Err(RpcError::new(
                ErrorKind::Unavailable,
                format!("the bridged provider at {} is unreachable: {why}", self.address),
            )),
        }
    }

    /// The error of a forwarded call as Ferry's typed error. A failure to reach the process
    /// also marks the session down and wakes the monitor, so the calls after it fail at once;
    /// an `unavailable` the process answered itself (its backend is down) does not.
    pub(crate) fn failed(&self, status: &tonic::Status) -> RpcError {
        if crate::h2::is_unreachable(status) {
            self.mark_down(format!("a call failed: {}", status.message()));
        }
        grpc::from_status(status)
    }

    /// The process is gone (a call failed, or it exited): calls fail at once until it is back.
    pub(crate) fn mark_down(&self, why: String) {
        let was_up = self.session.send_if_modified(|session| match session {
            Session::Up { .. } => {
                *session = Session::Down(why.clone());
                true
            }
            Session::Down(_) => false,
        });
        if was_up {
            warn!(address = %self.address, cause = %why, "bridged provider unreachable; calls fail with `unavailable` until it is back");
        }
        self.nudge.notify_one();
    }

    /// Wait up to `wait` for the process to be reachable with its links delivered.
    pub(crate) async fn wait_up(&self, wait: Duration) -> bool {
        let mut session = self.session.subscribe();
        tokio::time::timeout(wait, session.wait_for(|s| matches!(s, Session::Up { .. }))).await.is_ok_and(|r| r.is_ok())
    }

    /// Ask the process's health now.
    pub(crate) async fn probe(&self) -> Result<v1::HealthResponse, tonic::Status> {
        let mut request = tonic::Request::new(v1::HealthRequest {});
        request.set_timeout(CONTROL_TIMEOUT);
        Ok(self.provider().health(request).await?.into_inner())
    }

    /// The health the lattice sees: the process's own answer when reachable.
    pub(crate) async fn health(&self) -> HealthStatus {
        if let Session::Down(why) = &*self.session.borrow() {
            return HealthStatus::unhealthy(format!("bridged provider at {} unreachable: {why}", self.address));
        }
        match self.probe().await {
            Ok(answer) => {
                if !matches!(&*self.session.borrow(), Session::Up { instance_id } if *instance_id == answer.instance_id)
                {
                    // It restarted since the last look: links go to it again.
                    self.nudge.notify_one();
                }
                HealthStatus { healthy: answer.healthy, message: answer.message }
            }
            Err(status) => {
                let err = self.failed(&status);
                HealthStatus::unhealthy(format!("bridged provider at {}: {err}", self.address))
            }
        }
    }

    /// Deliver one link, in order with every other delivery.
    pub(crate) async fn put_link(&self, put: &LinkPut) -> Verdict {
        let _turn = self.delivery.lock().await;
        self.deliver(put).await
    }

    async fn deliver(&self, put: &LinkPut) -> Verdict {
        let mut request = tonic::Request::new(v1::PutLinkRequest { link: Some(link_of(put)), revision: put.revision });
        request.set_timeout(CONTROL_TIMEOUT);
        match self.provider().put_link(request).await {
            Ok(answer) => {
                let answer = answer.into_inner();
                if answer.accepted {
                    Verdict::Accepted
                } else {
                    let reason =
                        if answer.reason.is_empty() { "rejected without a reason".into() } else { answer.reason };
                    Verdict::Rejected(reason)
                }
            }
            Err(status) => match grpc::from_status(&status).kind {
                ErrorKind::Unavailable | ErrorKind::Timeout => Verdict::Pending,
                _ => Verdict::Rejected(format!("the bridged provider failed to take the link: {}", status.message())),
            },
        }
    }

    /// Tell the process a link is gone. Best effort: a process that is down gets the current
    /// links, not the deleted ones, when it is back.
    pub(crate) async fn delete_link(&self, put: &LinkPut) {
        let _turn = self.delivery.lock().await;
        let mut request = tonic::Request::new(v1::DeleteLinkRequest { link: Some(link_of(put)) });
        request.set_timeout(CONTROL_TIMEOUT);
        if let Err(status) = self.provider().delete_link(request).await {
            warn!(source = %put.link.source_id, name = %put.link.name, cause = %status.message(), "bridged provider did not take a link delete");
        }
    }

    /// Ask the process to finish.
    pub(crate) async fn shutdown(&self) {
        let mut request = tonic::Request::new(v1::ShutdownRequest {});
        request.set_timeout(CONTROL_TIMEOUT);
        if let Err(status) = self.provider().shutdown(request).await {
            info!(cause = %status.message(), "bridged provider did not acknowledge shutdown");
        }
    }

    /// Keep the session current until `stop`: probe, and on first contact with an instance
    /// deliver every link the provider holds.
    pub(crate) async fn monitor(self: Arc<Self>, ctx: ProviderContext, interval: Duration, stop: CancellationToken) {
        loop {
            match self.probe().await {
                Ok(answer) => {
                    let known = matches!(&*self.session.borrow(), Session::Up { instance_id } if *instance_id == answer.instance_id);
                    if !known && self.resync(&ctx, &answer.instance_id).await {
                        self.session.send_replace(Session::Up { instance_id: answer.instance_id });
                    }
                }
                Err(status) => self.mark_down(format!("{:?}: {}", status.code(), status.message())),
            }
            let wait = if matches!(&*self.session.borrow(), Session::Up { .. }) { interval } else { RETRY_DOWN };
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(wait) => {}
                () = self.nudge.notified() => {}
            }
        }
    }

    /// Deliver every current link to a newly reached instance; false when it went away again.
    async fn resync(&self, ctx: &ProviderContext, instance_id: &str) -> bool {
        let _turn = self.delivery.lock().await;
        let links = ctx.links().states::<crate::links::BridgeLink>();
        for (put, state) in &links {
            let verdict = self.deliver(put).await;
            if verdict == Verdict::Pending {
                return false;
            }
            if let Verdict::Rejected(why) = &verdict {
                warn!(source = %put.link.source_id, name = %put.link.name, cause = %why, "bridged provider rejected a link on resync; calls over it fail with `not_linked`");
            }
            state.set(verdict);
        }
        info!(address = %self.address, instance_id, links = links.len(), "bridged provider reached; links delivered");
        true
    }
}

/// The origin every call names (the connection decides where it goes).
fn origin() -> Uri {
    Uri::from_static("http://localhost")
}

/// A link as the gRPC contract carries it.
pub(crate) fn link_of(put: &LinkPut) -> v1::Link {
    let link = &put.link;
    v1::Link {
        source_id: link.source_id.clone(),
        target_id: link.target_id.clone(),
        name: link.name.clone(),
        wit_namespace: link.wit_namespace.clone(),
        wit_package: link.wit_package.clone(),
        interfaces: link.interfaces.clone(),
        source_config: put.source_config.clone().into_iter().collect(),
        target_config: put.target_config.clone().into_iter().collect(),
    }
}
