//! Signed request/reply: the one path by which host, SDK and clients send an invocation and
//! take only an authentic answer for its response.

use std::{pin::Pin, time::Duration};

use ferry_proto::{
    ErrorKind, RpcError,
    auth::{MacKey, period_of},
    delivery::{PATIENCE, PROGRESS_EVERY, REPLAYED},
    envelope::{Invocation, InvocationResponse},
};
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::{
    overflow,
    request::{Replies, RequestFailure, Requester},
};

/// Default timeout of an invocation when neither the caller nor its configuration sets one.
pub const DEFAULT_RPC_TIMEOUT: Duration = Duration::from_secs(10);

/// Sign `inv` under `key`, send it on `subject` and wait, until its deadline, for a response
/// that verifies under the same key: the one request path shared by the SDK and the host. A
/// payload over the inline limit travels partly as a stream, both ways
/// ([`crate::overflow`]). A reply that is unsigned, forged or for another request is dropped,
/// not taken for the answer.
///
/// An attempt that no receiver takes up within [`PATIENCE`] is sent again under a new id
/// (it never ran anywhere); one taken up whose receiver then falls silent for [`PATIENCE`]
/// fails [`ErrorKind::Interrupted`] and is not sent again, unless it is read-only
/// ([`ferry_proto::delivery`]).
///
/// # Errors
/// [`ErrorKind::Timeout`] (naming any replies dropped), [`ErrorKind::Interrupted`],
/// [`ErrorKind::Unavailable`], [`ErrorKind::TooLarge`], or the target's own error.
pub async fn send_signed(
    requester: &Requester,
    lattice: &str,
    subject: String,
    inv: &mut Invocation,
    key: &MacKey,
) -> Result<Vec<u8>, RpcError> {
    let wait = inv.remaining().unwrap_or(DEFAULT_RPC_TIMEOUT);
    let deadline = Instant::now() + wait;
    let nats = requester.nats();
    // Dropped when this returns: by then the target has pulled what it needed, or failed.
    let _offered = match overflow::offload(nats, lattice, &mut inv.payload, key, wait).await? {
        Some((rest, offered)) => {
            inv.payload_stream = Some(rest);
            Some(offered)
        }
        None => None,
    };
    let first_period = period_of(inv.issued_at_ms);
    let read_only = ferry_proto::is_read_only(&inv.operation);
    let mut attempts = 1u32;
    let mut answer = loop {
        inv.sign(key);
        let bytes = inv.encode().map_err(RpcError::from)?;
        let mut replies = requester
            .request_replies(subject.clone(), bytes.into())
            .await
            .map_err(|failure| map_failure(nats, &inv.target, wait, failure))?;
        let outcome = await_answer(&mut replies, key, &inv.id, deadline, attempts > 1)
            .await
            .map_err(|failure| map_failure(nats, &inv.target, wait, failure))?;
        match outcome {
            Outcome::Answer(answer) => break answer,
            Outcome::TimedOut => return Err(map_failure(nats, &inv.target, wait, replies.timeout())),
            Outcome::Replayed => {
                warn!(target = %inv.target, operation = %inv.operation, invocation = %inv.id, attempt = attempts, "an earlier attempt of the call ran after all");
                return Err(RpcError::new(
                    ErrorKind::Interrupted,
                    format!(
                        "{} carried out an earlier attempt of the call and did not answer it; its outcome is unknown",
                        inv.target
                    ),
                ));
            }
            Outcome::Silent { taken_up: true } if !read_only => {
                warn!(target = %inv.target, operation = %inv.operation, invocation = %inv.id, "the receiver fell silent mid-call");
                return Err(RpcError::new(
                    ErrorKind::Interrupted,
                    format!(
                        "{} took the call up and then stopped answering for {PATIENCE:?} (it stopped or lost its connection); the call may have run, so it was not sent again",
                        inv.target
                    ),
                ));
            }
            Outcome::Silent { taken_up } => {
                // Nobody took it up, and now nobody will: it ran nowhere, so another member of
                // the queue group may have it. Or it is a read, safe to run twice. The key must
                // still be the one that signs it.
                let previous = inv.id.clone();
                inv.reissue();
                if period_of(inv.issued_at_ms) != first_period {
                    return Err(RpcError::new(
                        if taken_up { ErrorKind::Interrupted } else { ErrorKind::Unavailable },
                        format!(
                            "no instance of {} answered the call within {PATIENCE:?}; it was not sent again",
                            inv.target
                        ),
                    ));
                }
                attempts += 1;
                warn!(target = %inv.target, operation = %inv.operation, invocation = %previous, attempt = attempts, taken_up, "no answer and no sign of work; sending the call again");
            }
        }
    };
    let rest = answer.payload_stream.take();
    let payload = answer.into_result()?;
    let left = deadline.saturating_duration_since(Instant::now()).max(MIN_PULL_WAIT);
    overflow::gather(nats, lattice, payload, rest.as_ref(), key, left).await
}

/// How one attempt of a call ended.
enum Outcome {
    /// The authentic answer.
    Answer(InvocationResponse),
    /// The call's deadline passed while the receiver still showed signs of work (or before
    /// [`PATIENCE`] ran out).
    TimedOut,
    /// No sign for [`PATIENCE`]: after an acknowledgement (`taken_up`) or before any.
    Silent { taken_up: bool },
    /// A repeated attempt was refused because an earlier one was carried out.
    Replayed,
}

/// Wait for the answer to request `id`, taking progress messages as signs that its receiver
/// is still at work. For a `repeat`ed attempt, a refusal as a replay ends the wait: an
/// earlier attempt ran. (Refusals are unsigned, so a forged one can at worst end the call
/// early with [`ErrorKind::Interrupted`]; it is never taken for an answer.)
async fn await_answer(
    replies: &mut Replies,
    key: &MacKey,
    id: &str,
    deadline: Instant,
    repeat: bool,
) -> Result<Outcome, RequestFailure> {
    let mut taken_up = false;
    let mut sign_by = Instant::now() + PATIENCE;
    let mut check = |msg: &async_nats::Message| match verified_response(msg, key, id) {
        Ok(resp) => Ok(Some(resp)),
        Err(_) if repeat && is_replay_refusal(msg, id) => Ok(None),
        Err(reason) => Err(reason),
    };
    loop {
        match replies.next_checked(sign_by.min(deadline), &mut check).await? {
            Some(None) => return Ok(Outcome::Replayed),
            Some(Some(resp)) if resp.progress => {
                taken_up = true;
                sign_by = Instant::now() + PATIENCE;
            }
            Some(Some(answer)) => return Ok(Outcome::Answer(answer)),
            None if Instant::now() >= deadline || sign_by >= deadline => return Ok(Outcome::TimedOut),
            None => return Ok(Outcome::Silent { taken_up }),
        }
    }
}

/// Whether `msg` is a receiver's refusal of request `id` as a replay of a call already carried
/// out on the lattice.
fn is_replay_refusal(msg: &async_nats::Message, id: &str) -> bool {
    InvocationResponse::decode(&msg.payload).is_ok_and(|resp| {
        resp.id == id
            && resp.error.is_some_and(|err| err.kind == ErrorKind::Denied && err.message.starts_with(REPLAYED))
    })
}

/// Run `work`, the handling of invocation `id` that the receiver has taken up, telling its
/// caller on `reply` so: a progress message signed under `key` when `ack` says (the
/// acknowledgement), then one every [`PROGRESS_EVERY`] until it ends
/// ([`ferry_proto::delivery`]). Shared by host and SDK.
///
/// `work` comes pinned where its caller keeps it: an async function holds a future it is
/// given by value in more than one place (the argument, where it is pinned, what it awaits),
/// and an invocation's work is kilobytes, held for every invocation in flight.
pub async fn with_progress<F: Future>(
    nats: &async_nats::Client,
    reply: Option<&async_nats::Subject>,
    id: &str,
    key: &MacKey,
    ack: Ack,
    mut work: Pin<&mut F>,
) -> F::Output {
    let Some(reply) = reply else { return work.await };
    // Made when first needed: work that answers before its acknowledgement is due costs no
    // MAC and no message.
    let mut bytes: Option<bytes::Bytes> = None;
    let tell = |bytes: &mut Option<bytes::Bytes>| {
        let bytes = match bytes {
            Some(bytes) => Some(bytes.clone()),
            None => {
                let mut progress = InvocationResponse::progress(id);
                progress.sign(key);
                match progress.encode() {
                    Ok(encoded) => Some(bytes.insert(encoded.into()).clone()),
                    Err(err) => {
                        warn!(invocation = %id, cause = %err, "could not encode a progress message");
                        None
                    }
                }
            }
        };
        async move {
            let Some(bytes) = bytes else { return };
            if let Err(err) = nats.publish(reply.clone(), bytes).await {
                debug!(invocation = %id, cause = %err, "could not send a progress message");
            }
        }
    };
    let mut next = match ack {
        Ack::BeforeWork => {
            tell(&mut bytes).await;
            Instant::now() + PROGRESS_EVERY
        }
        Ack::After(due) => Instant::now() + due,
    };
    loop {
        tokio::select! {
            biased;
            out = work.as_mut() => return out,
            () = tokio::time::sleep_until(next) => {
                tell(&mut bytes).await;
                next = Instant::now() + PROGRESS_EVERY;
            }
        }
    }
}

/// When a receiver acknowledges an invocation it took up ([`ferry_proto::delivery`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ack {
    /// Before any of its work: for a call whose repeat would run it twice (a component's
    /// invocation), the caller must know it was taken up as soon as it is.
    BeforeWork,
    /// Only if the work still runs this long after it was taken up (at most
    /// [`ferry_proto::delivery::ACK_WITHIN`]): for a call a repeat cannot run twice (a read, or a
    /// write whose replay key is already claimed), whose answer is sign enough when it comes
    /// first.
    After(Duration),
}

/// The response in `msg` if it is a signed answer to request `id` under `key`, else why not.
///
/// # Errors
/// Why the reply is not authentic: undecodable, unsigned, for another request, tampered.
pub fn verified_response(msg: &async_nats::Message, key: &MacKey, id: &str) -> Result<InvocationResponse, String> {
    let resp = InvocationResponse::decode(&msg.payload).map_err(|e| format!("undecodable reply: {e}"))?;
    if resp.mac.is_empty() {
        return Err(match &resp.error {
            Some(err) => format!("unsigned reply: {err}"),
            None => "unsigned reply".to_owned(),
        });
    }
    resp.verify(key, id).map_err(|e| format!("reply failed verification: {e}"))?;
    Ok(resp)
}

/// The least a pull of a response's rest waits, however close the deadline.
const MIN_PULL_WAIT: Duration = Duration::from_millis(100);

/// The typed error of a request that failed.
pub fn map_failure(nats: &async_nats::Client, target: &str, wait: Duration, failure: RequestFailure) -> RpcError {
    match failure {
        RequestFailure::Timeout { dropped: 0, .. } => {
            RpcError::new(ErrorKind::Timeout, format!("no answer from {target} within {wait:?}"))
        }
        RequestFailure::Timeout { dropped, last_rejection } => RpcError::new(
            ErrorKind::Timeout,
            format!(
                "no authentic answer from {target} within {wait:?} ({dropped} unauthenticated replies dropped, the last: {})",
                last_rejection.unwrap_or_default()
            ),
        ),
        RequestFailure::NoResponders => RpcError::new(ErrorKind::Unavailable, format!("nobody is serving {target}")),
        RequestFailure::TooLarge => RpcError::new(
            ErrorKind::TooLarge,
            format!(
                "request to {target} exceeds the NATS server's max payload of {} bytes",
                nats.server_info().max_payload
            ),
        ),
        RequestFailure::InvalidSubject => RpcError::bad_request(format!("invalid subject for {target}")),
        RequestFailure::Connection(err) => {
            RpcError::new(ErrorKind::Unavailable, format!("request to {target} failed: {err}"))
        }
    }
}
