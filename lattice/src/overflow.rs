//! Payloads larger than one NATS message: the part past the inline limit travels as a pulled
//! stream named in the envelope.
//!
//! Bodies and blobs stream on their own, but an operation's arguments or result can be large
//! too: a key-value value, a batch. The sender of an envelope keeps the first
//! [`INLINE_PAYLOAD_LIMIT`] bytes inline and offers the rest ([`offload`]); the receiver checks
//! the envelope's MAC, which covers the stream id and the whole size, then pulls the rest
//! ([`gather`]) and decodes as usual. Payloads that fit, which is nearly all of them, cost
//! nothing extra. Both sides refuse a payload over [`MAX_PAYLOAD_SIZE`] with
//! [`ErrorKind::TooLarge`] before moving a byte of it.

use std::time::Duration;

use bytes::Bytes;
use ferry_proto::{
    ErrorKind, RpcError,
    auth::MacKey,
    envelope::PayloadStream,
    stream::{DEFAULT_CHUNK_SIZE, INLINE_PAYLOAD_LIMIT, MAX_PAYLOAD_SIZE},
};
use futures::StreamExt as _;
use tokio::task::JoinHandle;

use crate::stream::{self, ByteStream};

/// A payload's rest on offer; dropping it stops the offer (the envelope naming it failed or was
/// never sent), [`Offered::keep`] lets it run until pulled or idle.
#[derive(Debug)]
pub struct Offered {
    task: Option<JoinHandle<()>>,
}

impl Offered {
    /// Let the offer run on until the reader has pulled it, cancels or stays away.
    pub fn keep(mut self) {
        self.task = None;
    }
}

impl Drop for Offered {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Refuse a payload of `size` bytes when it is over the limit, naming it.
///
/// # Errors
/// [`ErrorKind::TooLarge`].
pub fn check_size(size: u64) -> Result<(), RpcError> {
    if size > MAX_PAYLOAD_SIZE {
        return Err(RpcError::new(
            ErrorKind::TooLarge,
            format!("a payload of {size} bytes exceeds Ferry's limit of {MAX_PAYLOAD_SIZE} bytes per invocation"),
        ));
    }
    Ok(())
}

/// When `payload` is over the inline limit, cut it there and offer the rest as a stream under
/// `key`, served for up to `idle` between pulls; the descriptor goes into the envelope before
/// it is signed. `None` when the payload fits.
///
/// # Errors
/// [`ErrorKind::TooLarge`] over [`MAX_PAYLOAD_SIZE`], [`ErrorKind::Unavailable`] when the
/// stream cannot be offered.
pub async fn offload(
    nats: &async_nats::Client,
    lattice: &str,
    payload: &mut Vec<u8>,
    key: &MacKey,
    idle: Duration,
) -> Result<Option<(PayloadStream, Offered)>, RpcError> {
    if payload.len() <= INLINE_PAYLOAD_LIMIT {
        return Ok(None);
    }
    let size = payload.len() as u64;
    check_size(size)?;
    let rest = Bytes::from(payload.split_off(INLINE_PAYLOAD_LIMIT));
    payload.shrink_to_fit();
    let chunks: Vec<Result<Bytes, RpcError>> = (0..rest.len())
        .step_by(DEFAULT_CHUNK_SIZE)
        .map(|start| Ok(rest.slice(start..(start + DEFAULT_CHUNK_SIZE).min(rest.len()))))
        .collect();
    let body: ByteStream = Box::pin(futures::stream::iter(chunks));
    let id = stream::new_stream_id();
    let task = stream::offer(nats, lattice, &id, key.clone(), body, DEFAULT_CHUNK_SIZE, idle).await?;
    Ok(Some((PayloadStream { id, size }, Offered { task: Some(task) })))
}

/// The whole payload of a verified envelope: `inline`, then what `rest` names pulled from its
/// sender under `key` (each pull waits at most `timeout`).
///
/// # Errors
/// [`ErrorKind::TooLarge`] over [`MAX_PAYLOAD_SIZE`], [`ErrorKind::BadRequest`] when the
/// stream delivers another size than announced, and the stream's own errors.
pub async fn gather(
    nats: &async_nats::Client,
    lattice: &str,
    inline: Vec<u8>,
    rest: Option<&PayloadStream>,
    key: &MacKey,
    timeout: Duration,
) -> Result<Vec<u8>, RpcError> {
    let Some(rest) = rest else { return Ok(inline) };
    check_size(rest.size)?;
    let size = usize::try_from(rest.size).map_err(|_| RpcError::new(ErrorKind::TooLarge, "payload size"))?;
    if size < inline.len() {
        return Err(RpcError::bad_request(format!(
            "payload announced as {size} bytes but {} arrived inline",
            inline.len()
        )));
    }
    let mut whole = inline;
    whole.reserve_exact(size - whole.len());
    let mut pulled = stream::pull(nats, lattice, &rest.id, key.clone(), timeout)?;
    while let Some(chunk) = pulled.next().await {
        let chunk = chunk?;
        if whole.len() + chunk.len() > size {
            return Err(RpcError::bad_request(format!("payload stream {} delivers more than {size} bytes", rest.id)));
        }
        whole.extend_from_slice(&chunk);
    }
    if whole.len() != size {
        return Err(RpcError::bad_request(format!(
            "payload stream {} ended after {} of {size} bytes",
            rest.id,
            whole.len()
        )));
    }
    Ok(whole)
}
