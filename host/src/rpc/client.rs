//! Outgoing invocations: signed with the target provider's key (derived from the cluster key),
//! bounded by the host's RPC timeout.

use std::{sync::Arc, time::Duration};

use ferry_lattice::{
    request::{Replies, RequestFailure, Requester},
    signed::{map_failure, verified_response},
};
use ferry_proto::{
    ErrorKind, RpcError,
    auth::{ClusterKey, MacKey, ReplayGuard, period_of, verify_invocation_under},
    envelope::Invocation,
    subject,
    subject::Channel,
};
use tokio::time::Instant;

/// Sends invocations from this host's components to providers.
///
/// Calls go out on the connection of the thread that makes them: a worker's own
/// ([`crate::workers`]), or the control plane's, so an invocation's calls and their answers
/// stay on the worker that runs it.
#[derive(Clone, Debug)]
pub(crate) struct RpcClient {
    /// The control plane's connection.
    control: Lane,
    /// One per worker, by the worker's index.
    workers: Arc<[Lane]>,
    lattice: String,
    cluster: ClusterKey,
    /// Further cluster keys whose messages are accepted (a rotation in progress).
    accepted: Arc<[ClusterKey]>,
    timeout: Duration,
}

/// One connection and the request/reply routing on it.
#[derive(Clone, Debug)]
struct Lane {
    nats: async_nats::Client,
    /// Request/reply that waits for an authentic answer.
    requester: Requester,
}

impl Lane {
    fn new(nats: async_nats::Client) -> Self {
        Self { requester: Requester::new(nats.clone()), nats }
    }
}

impl RpcClient {
    /// A client on the control plane's connection `nats` only.
    pub(crate) fn new(nats: async_nats::Client, lattice: &str, cluster: ClusterKey, timeout: Duration) -> Self {
        Self {
            control: Lane::new(nats),
            workers: Arc::new([]),
            lattice: lattice.to_owned(),
            cluster,
            accepted: Arc::new([]),
            timeout,
        }
    }

    /// The same client, also accepting messages under `keys`.
    pub(crate) fn accepting(mut self, keys: Vec<ClusterKey>) -> Self {
        self.accepted = keys.into();
        self
    }

    /// Every cluster key messages are accepted under, the signing one first.
    pub(crate) fn cluster_keys(&self) -> impl Iterator<Item = &ClusterKey> {
        std::iter::once(&self.cluster).chain(self.accepted.iter())
    }

    /// Check an invocation a provider (its `origin`) sent on a subject of kind `channel`: the
    /// operation belongs there, it is fresh, its MAC holds under the origin's key for its hour
    /// under any cluster key this host accepts, and it is not a replay. Returns the key that
    /// verified it, which its answer is signed with; a refusal is [`ErrorKind::Denied`].
    pub(crate) fn verify_from_provider(
        &self,
        inv: &Invocation,
        channel: Channel,
        guard: &ReplayGuard,
    ) -> Result<MacKey, RpcError> {
        let period = period_of(inv.issued_at_ms);
        let keys: Vec<MacKey> =
            self.cluster_keys().map(|cluster| cluster.provider_key(&self.lattice, &inv.origin, period)).collect();
        verify_invocation_under(inv, channel, &keys, guard)
            .map_err(|err| RpcError::new(ErrorKind::Denied, err.to_string()))
    }

    /// The same client with the workers' connections, by worker index.
    pub(crate) fn with_workers(mut self, connections: &[async_nats::Client]) -> Self {
        self.workers = connections.iter().cloned().map(Lane::new).collect();
        self
    }

    /// The calling thread's lane.
    fn lane(&self) -> &Lane {
        crate::workers::current().and_then(|index| self.workers.get(index)).unwrap_or(&self.control)
    }

    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    pub(crate) fn cluster(&self) -> &ClusterKey {
        &self.cluster
    }

    /// An invocation of `operation` on `target`, not yet sent, and the key it will be signed
    /// with: for calls that offer or pull a stream under that key around the invocation.
    pub(crate) fn prepare(&self, origin: &str, target: &str, link_name: &str, operation: &str) -> (Invocation, MacKey) {
        let inv = Invocation::new(origin, target, link_name, operation, Vec::new());
        let key = self.cluster.provider_key(&self.lattice, target, period_of(inv.issued_at_ms));
        (inv, key)
    }

    /// [`Self::prepare`] for a call from component `origin` to another component: a host
    /// serving a component checks an invocation with its origin's key (as it does a
    /// provider's), so the call is signed with the calling component's key.
    pub(crate) fn prepare_from(
        &self,
        origin: &str,
        target: &str,
        link_name: &str,
        operation: &str,
    ) -> (Invocation, MacKey) {
        let inv = Invocation::new(origin, target, link_name, operation, Vec::new());
        let key = self.cluster.provider_key(&self.lattice, origin, period_of(inv.issued_at_ms));
        (inv, key)
    }

    /// The calling thread's NATS connection (see [`RpcClient`]).
    pub(crate) fn nats(&self) -> &async_nats::Client {
        &self.lane().nats
    }

    /// The lattice name.
    pub(crate) fn lattice(&self) -> &str {
        &self.lattice
    }

    /// Send `inv`, signed with `key` (the one [`Self::prepare`] handed out with it), to its
    /// target's rpc subject: the key is derived once per call.
    pub(crate) async fn send(&self, mut inv: Invocation, key: &MacKey, timeout: Duration) -> Result<Vec<u8>, RpcError> {
        let subject = subject::rpc(&self.lattice, &inv.target).map_err(RpcError::from)?;
        self.send_signed(subject, &mut inv, key, timeout).await
    }

    /// Sign `inv` for its target and send it on `subject` (a provider's health subject),
    /// waiting at most `timeout` (less when `inv` already carries an earlier deadline).
    pub(crate) async fn send_on(
        &self,
        subject: String,
        inv: &mut Invocation,
        timeout: Duration,
    ) -> Result<Vec<u8>, RpcError> {
        let key = self.cluster.provider_key(&self.lattice, &inv.target, period_of(inv.issued_at_ms));
        self.send_signed(subject, inv, &key, timeout).await
    }

    async fn send_signed(
        &self,
        subject: String,
        inv: &mut Invocation,
        key: &MacKey,
        timeout: Duration,
    ) -> Result<Vec<u8>, RpcError> {
        let deadline = inv.deadline_ms;
        inv.set_timeout(timeout);
        if deadline != 0 {
            inv.deadline_ms = inv.deadline_ms.min(deadline);
        }
        ferry_lattice::signed::send_signed(&self.lane().requester, &self.lattice, subject, inv, key).await
    }

    /// Sign `inv` for its target and send it on `subject` to every subscriber (every instance
    /// of a provider, on a link subject); the verified answers arrive through the handle until
    /// `timeout`.
    pub(crate) async fn broadcast(
        &self,
        subject: String,
        inv: &mut Invocation,
        timeout: Duration,
    ) -> Result<Answers, RpcError> {
        let key = self.cluster.provider_key(&self.lattice, &inv.target, period_of(inv.issued_at_ms));
        inv.set_timeout(timeout);
        inv.sign(&key);
        let bytes = inv.encode().map_err(RpcError::from)?;
        let lane = self.lane();
        let replies = lane
            .requester
            .request_replies(subject, bytes.into())
            .await
            .map_err(|failure| map_failure(&lane.nats, &inv.target, timeout, failure))?;
        Ok(Answers { replies, key, id: inv.id.clone(), target: inv.target.clone(), nats: lane.nats.clone() })
    }
}

/// The answers to a [`RpcClient::broadcast`], one per answering subscriber (or more).
pub(crate) struct Answers {
    replies: Replies,
    key: MacKey,
    id: String,
    target: String,
    nats: async_nats::Client,
}

impl Answers {
    /// The next authentic answer, waiting until `until`: `Ok(None)` when it passes first,
    /// `Err` (unavailable) when nobody subscribes.
    pub(crate) async fn next_until(&mut self, until: Instant) -> Result<Option<Result<Vec<u8>, RpcError>>, RpcError> {
        let (key, id) = (&self.key, self.id.as_str());
        match self.replies.next_checked(until, &mut |msg| verified_response(msg, key, id)).await {
            Ok(Some(resp)) => Ok(Some(resp.into_result())),
            Ok(None) => Ok(None),
            Err(RequestFailure::NoResponders) => {
                Err(RpcError::new(ErrorKind::Unavailable, format!("nobody is serving {}", self.target)))
            }
            Err(failure) => Err(map_failure(&self.nats, &self.target, Duration::ZERO, failure)),
        }
    }
}
