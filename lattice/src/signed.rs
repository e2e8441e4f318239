//! Signed request/reply: the one path by which host, SDK and clients send an invocation and
//! take only an authentic answer for its response.

use std::time::Duration;

use ferry_proto::{
    ErrorKind, RpcError,
    auth::MacKey,
    envelope::{Invocation, InvocationResponse},
};

use crate::{
    overflow,
    request::{RequestFailure, Requester},
};

/// Default timeout of an invocation when neither the caller nor its configuration sets one.
pub const DEFAULT_RPC_TIMEOUT: Duration = Duration::from_secs(10);

/// Sign `inv` under `key`, send it on `subject` and wait, until its deadline, for a response
/// that verifies under the same key: the one request path shared by the SDK and the host. A
/// payload over the inline limit travels partly as a stream, both ways
/// ([`crate::overflow`]). A reply that is unsigned, forged or for another request is dropped,
/// not taken for the answer.
///
/// # Errors
/// [`ErrorKind::Timeout`] (naming any replies dropped), [`ErrorKind::Unavailable`],
/// [`ErrorKind::TooLarge`], or the target's own error.
pub async fn send_signed(
    requester: &Requester,
    lattice: &str,
    subject: String,
    inv: &mut Invocation,
    key: &MacKey,
) -> Result<Vec<u8>, RpcError> {
    let wait = inv.remaining().unwrap_or(DEFAULT_RPC_TIMEOUT);
    let deadline = tokio::time::Instant::now() + wait;
    let nats = requester.nats();
    // Dropped when this returns: by then the target has pulled what it needed, or failed.
    let _offered = match overflow::offload(nats, lattice, &mut inv.payload, key, wait).await? {
        Some((rest, offered)) => {
            inv.payload_stream = Some(rest);
            Some(offered)
        }
        None => None,
    };
    inv.sign(key);
    let bytes = inv.encode().map_err(RpcError::from)?;
    let mut answer = requester
        .request(subject, bytes.into(), deadline, |msg| verified_response(msg, key, &inv.id))
        .await
        .map_err(|failure| map_failure(nats, &inv.target, wait, failure))?;
    let rest = answer.payload_stream.take();
    let payload = answer.into_result()?;
    let left = deadline.saturating_duration_since(tokio::time::Instant::now()).max(MIN_PULL_WAIT);
    overflow::gather(nats, lattice, payload, rest.as_ref(), key, left).await
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
