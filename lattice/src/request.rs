//! Request/reply that only an authentic answer ends.
//!
//! A plain NATS request takes the first message on its reply subject, and anyone who saw the
//! request on the bus can publish to that subject. [`Requester`] keeps one wildcard inbox per
//! connection, routes each reply to its waiting request, and hands every reply to the caller's
//! check: a reply that fails it is dropped (and counted), and the request goes on waiting for
//! the real one until its deadline.

use std::{
    collections::{HashMap, VecDeque},
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicU64, Ordering},
    },
    task::{Poll, Waker},
};

use async_nats::{Message, PublishErrorKind, StatusCode};
use futures::StreamExt as _;
use tokio::{sync::OnceCell, time::Instant};
use tracing::{debug, warn};

/// Replies buffered for one request; a flood beyond this is dropped.
const REPLY_BUFFER: usize = 64;

/// Why a request ended without an accepted reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestFailure {
    /// The deadline passed. `dropped` replies failed the check; `last_rejection` says why the
    /// last one did.
    Timeout {
        /// How many replies failed the check.
        dropped: u64,
        /// Why the last of them failed.
        last_rejection: Option<String>,
    },
    /// The server reports that nobody subscribes to the subject.
    NoResponders,
    /// The request is larger than the server's max payload.
    TooLarge,
    /// The subject is not valid.
    InvalidSubject,
    /// The connection failed.
    Connection(String),
}

/// One wildcard inbox per NATS connection, shared by every request made through it. Cheap to
/// clone.
#[derive(Clone, Debug)]
pub struct Requester {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    nats: async_nats::Client,
    /// `_INBOX.{nuid}`; request `n` gets the reply subject `{prefix}.{n}`.
    prefix: String,
    next: AtomicU64,
    pending: Mutex<HashMap<u64, Arc<Slot>>>,
    /// Replies dropped for failing their check, over the life of the connection.
    rejected: AtomicU64,
    /// The routing task's subscription, made on first use.
    started: OnceCell<()>,
}

impl Requester {
    /// A requester on `nats`. Its inbox is subscribed on the first request.
    pub fn new(nats: async_nats::Client) -> Self {
        let prefix = nats.new_inbox();
        Self {
            inner: Arc::new(Inner {
                nats,
                prefix,
                next: AtomicU64::new(0),
                pending: Mutex::new(HashMap::new()),
                rejected: AtomicU64::new(0),
                started: OnceCell::new(),
            }),
        }
    }

    /// The connection requests go out on.
    pub fn nats(&self) -> &async_nats::Client {
        &self.inner.nats
    }

    /// Replies dropped so far because they failed their check (forged, tampered, for another
    /// request).
    pub fn rejected_replies(&self) -> u64 {
        self.inner.rejected.load(Ordering::Relaxed)
    }

    /// Publish `payload` on `subject` and wait until `deadline` for a reply that `check`
    /// accepts. `check` returns the value to hand back, or why the reply is not authentic.
    ///
    /// # Errors
    /// [`RequestFailure`].
    pub async fn request<T>(
        &self,
        subject: String,
        payload: bytes::Bytes,
        deadline: Instant,
        mut check: impl FnMut(&Message) -> Result<T, String>,
    ) -> Result<T, RequestFailure> {
        let mut replies = self.request_replies(subject, payload).await?;
        replies.next_checked(deadline, &mut check).await?.ok_or_else(|| replies.timeout())
    }

    /// Publish `payload` on `subject` and hand back every reply as it comes, for requests that
    /// many subscribers answer (every instance of a provider). Replies stop when the handle
    /// drops.
    ///
    /// # Errors
    /// [`RequestFailure`] when the request cannot be sent.
    pub async fn request_replies(&self, subject: String, payload: bytes::Bytes) -> Result<Replies, RequestFailure> {
        self.start().await?;
        let token = self.inner.next.fetch_add(1, Ordering::Relaxed);
        let slot = Arc::new(Slot::default());
        self.inner.pending().insert(token, slot.clone());
        let registration = Deregister { inner: self.inner.clone(), token };
        let reply = format!("{}.{token}", self.inner.prefix);
        self.inner.nats.publish_with_reply(subject, reply, payload).await.map_err(|err| match err.kind() {
            PublishErrorKind::MaxPayloadExceeded => RequestFailure::TooLarge,
            PublishErrorKind::InvalidSubject => RequestFailure::InvalidSubject,
            PublishErrorKind::Send => RequestFailure::Connection(err.to_string()),
        })?;
        Ok(Replies { slot, registration, dropped: 0, last_rejection: None })
    }

    async fn start(&self) -> Result<(), RequestFailure> {
        self.inner
            .started
            .get_or_try_init(|| async {
                let mut sub = self
                    .inner
                    .nats
                    .subscribe(format!("{}.*", self.inner.prefix))
                    .await
                    .map_err(|e| RequestFailure::Connection(e.to_string()))?;
                let inner = Arc::downgrade(&self.inner);
                tokio::spawn(async move {
                    while let Some(msg) = sub.next().await {
                        let Some(inner) = inner.upgrade() else { break };
                        let token = msg.subject.rsplit('.').next().and_then(|t| t.parse::<u64>().ok());
                        let slot = token.and_then(|t| inner.pending().get(&t).cloned());
                        match slot {
                            Some(slot) => {
                                if !slot.deliver(msg) {
                                    inner.rejected.fetch_add(1, Ordering::Relaxed);
                                    debug!("dropped a reply: its request is flooded");
                                }
                            }
                            None => debug!(subject = %msg.subject, "dropped a reply nobody waits for"),
                        }
                    }
                    // The connection is gone for good: nothing more will arrive for anyone.
                    if let Some(inner) = inner.upgrade() {
                        for slot in inner.pending().values() {
                            slot.close();
                        }
                    }
                });
                Ok(())
            })
            .await
            .copied()
    }
}

impl Inner {
    fn pending(&self) -> MutexGuard<'_, HashMap<u64, Arc<Slot>>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Where the routing task leaves the replies of one request: a queue and the waiting task's
/// waker. Lighter than a channel (no block allocated up front), and a request usually gets
/// exactly one reply.
#[derive(Debug, Default)]
struct Slot {
    state: Mutex<SlotState>,
}

#[derive(Debug, Default)]
struct SlotState {
    replies: VecDeque<Message>,
    waker: Option<Waker>,
    closed: bool,
}

impl Slot {
    fn state(&self) -> MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queue `msg` and wake the request; `false` (and `msg` dropped) when
    /// [`REPLY_BUFFER`] replies already wait.
    fn deliver(&self, msg: Message) -> bool {
        let mut state = self.state();
        if state.replies.len() >= REPLY_BUFFER {
            return false;
        }
        state.replies.push_back(msg);
        Self::wake(state);
        true
    }

    fn close(&self) {
        let mut state = self.state();
        state.closed = true;
        Self::wake(state);
    }

    /// Wake the waiting request, outside the lock.
    fn wake(mut state: MutexGuard<'_, SlotState>) {
        if let Some(waker) = state.waker.take() {
            drop(state);
            waker.wake();
        }
    }

    /// The next reply; `None` once the connection closed and every reply was taken.
    async fn next(&self) -> Option<Message> {
        std::future::poll_fn(|cx| {
            let mut state = self.state();
            if let Some(msg) = state.replies.pop_front() {
                return Poll::Ready(Some(msg));
            }
            if state.closed {
                return Poll::Ready(None);
            }
            match &mut state.waker {
                Some(waker) if waker.will_wake(cx.waker()) => {}
                waker => *waker = Some(cx.waker().clone()),
            }
            Poll::Pending
        })
        .await
    }
}

/// The replies to one request, as they arrive.
#[derive(Debug)]
pub struct Replies {
    slot: Arc<Slot>,
    registration: Deregister,
    dropped: u64,
    last_rejection: Option<String>,
}

impl Replies {
    /// The next reply that `check` accepts, waiting until `deadline`; `None` when the deadline
    /// passes first. Replies that fail the check are dropped and counted.
    ///
    /// # Errors
    /// [`RequestFailure::NoResponders`], or [`RequestFailure::Connection`] when the connection
    /// closed.
    pub async fn next_checked<T>(
        &mut self,
        deadline: Instant,
        check: &mut impl FnMut(&Message) -> Result<T, String>,
    ) -> Result<Option<T>, RequestFailure> {
        loop {
            let msg = match tokio::time::timeout_at(deadline, self.slot.next()).await {
                Err(_) => return Ok(None),
                Ok(None) => return Err(RequestFailure::Connection("the connection closed".into())),
                Ok(Some(msg)) => msg,
            };
            if msg.status == Some(StatusCode::NO_RESPONDERS) {
                return Err(RequestFailure::NoResponders);
            }
            match check(&msg) {
                Ok(value) => return Ok(Some(value)),
                Err(reason) => {
                    self.dropped += 1;
                    let total = self.registration.inner.rejected.fetch_add(1, Ordering::Relaxed) + 1;
                    warn!(subject = %msg.subject, cause = %reason, rejected_total = total, "dropped an unauthenticated reply");
                    self.last_rejection = Some(reason);
                }
            }
        }
    }

    /// The failure of a request that saw no accepted reply by its deadline.
    pub fn timeout(&self) -> RequestFailure {
        RequestFailure::Timeout { dropped: self.dropped, last_rejection: self.last_rejection.clone() }
    }
}

/// Removes a request's entry when it ends, however it ends.
#[derive(Debug)]
struct Deregister {
    inner: Arc<Inner>,
    token: u64,
}

impl Drop for Deregister {
    fn drop(&mut self) {
        self.inner.pending().remove(&self.token);
    }
}
