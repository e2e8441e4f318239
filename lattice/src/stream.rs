//! Chunked bodies over NATS: offering a body as a pulled stream, and pulling one.
//!
//! The wire format is in [`ferry_proto::stream`]. Hosts and providers use the same two halves
//! here: [`offer`] serves a local body to whoever holds the stream's key, one chunk per pull,
//! reading the body only as fast as it is pulled; [`pull`] reads a remote body with one chunk of
//! read-ahead. Memory on each side is bounded by a couple of chunks, not by the body's size.

use std::{
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use bytes::{Bytes, BytesMut};
use ferry_proto::{
    ErrorKind, RpcError,
    auth::MacKey,
    stream::{StreamChunk, StreamPull},
    subject,
};
use futures::{FutureExt as _, Stream, StreamExt as _};
use tokio::sync::mpsc;
use tracing::{debug, warn};

/// A body as a stream of byte chunks; an error ends it.
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, RpcError>> + Send>>;

/// Help of [`crate::metrics::STREAMED_BYTES`].
const STREAMED_HELP: &str = "Bytes of bodies streamed between processes, by direction.";

/// A fresh stream id: unique, and valid in a subject.
pub fn new_stream_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// Serve `body` as stream `id` until the reader has pulled its end, cancels, or stays away for
/// `idle`. The subscription exists when this returns, so the payload naming the stream may be
/// sent right after. Dropping the handle does not stop the offer; aborting it does.
///
/// # Errors
/// [`ErrorKind::BadRequest`] for an invalid id, [`ErrorKind::Unavailable`] when NATS refuses
/// the subscription.
pub async fn offer(
    nats: &async_nats::Client,
    lattice: &str,
    id: &str,
    key: MacKey,
    body: ByteStream,
    chunk_size: usize,
    idle: Duration,
) -> Result<tokio::task::JoinHandle<()>, RpcError> {
    let subject = subject::stream(lattice, id).map_err(RpcError::from)?;
    let sub = nats
        .subscribe(subject)
        .await
        .map_err(|e| RpcError::new(ErrorKind::Unavailable, format!("cannot offer stream {id}: {e}")))?;
    let offer = Offer {
        nats: nats.clone(),
        id: id.to_owned(),
        key,
        body,
        buffer: BytesMut::new(),
        source_done: false,
        chunk_size: chunk_size.max(1),
    };
    Ok(tokio::spawn(offer.run(sub, idle)))
}

struct Offer {
    nats: async_nats::Client,
    id: String,
    key: MacKey,
    body: ByteStream,
    buffer: BytesMut,
    source_done: bool,
    chunk_size: usize,
}

impl Offer {
    async fn run(mut self, mut sub: async_nats::Subscriber, idle: Duration) {
        let mut next: u64 = 0;
        let mut last: Option<Bytes> = None;
        loop {
            let msg = match tokio::time::timeout(idle, sub.next()).await {
                Ok(Some(msg)) => msg,
                Ok(None) => break,
                Err(_) => {
                    warn!(stream = %self.id, pulled = next, "stream abandoned: no pull within {idle:?}");
                    break;
                }
            };
            let Some(reply) = msg.reply else { continue };
            let pull = match StreamPull::decode(&msg.payload) {
                Ok(pull) => pull,
                Err(err) => {
                    warn!(stream = %self.id, cause = %err, "ignored malformed pull");
                    continue;
                }
            };
            // A pull that fails verification gets no answer: it does not consume a chunk.
            if let Err(err) = pull.verify(&self.key, &self.id) {
                warn!(stream = %self.id, cause = %err, "rejected pull");
                continue;
            }
            if pull.cancel {
                debug!(stream = %self.id, pulled = next, "reader cancelled the stream");
                break;
            }
            let (bytes, done) = if pull.seq == next {
                let chunk = self.next_chunk(pull.seq).await;
                let done = chunk.end;
                match chunk.encode() {
                    Ok(bytes) => (Bytes::from(bytes), done),
                    Err(err) => {
                        warn!(stream = %self.id, cause = %err, "failed to encode chunk");
                        break;
                    }
                }
            } else if pull.seq + 1 == next
                && let Some(last) = &last
            {
                (last.clone(), false)
            } else {
                let err = RpcError::bad_request(format!("pulled chunk {} where {next} was due", pull.seq));
                match StreamChunk::failed(&self.id, pull.seq, err, &self.key).encode() {
                    Ok(bytes) => (Bytes::from(bytes), false),
                    Err(_) => break,
                }
            };
            if pull.seq == next {
                next += 1;
                last = Some(bytes.clone());
            }
            if let Err(err) = self.nats.publish(reply, bytes).await {
                warn!(stream = %self.id, cause = %err, "failed to send chunk");
                break;
            }
            if done {
                break;
            }
        }
        let _ = sub.unsubscribe().await;
    }

    /// The next chunk: as many bytes as are ready, up to the chunk size, waiting only for the
    /// first byte (or the end).
    async fn next_chunk(&mut self, seq: u64) -> StreamChunk {
        while self.buffer.is_empty() && !self.source_done {
            match self.body.next().await {
                Some(Ok(bytes)) => self.buffer.extend_from_slice(&bytes),
                Some(Err(err)) => {
                    self.source_done = true;
                    return StreamChunk::failed(&self.id, seq, err, &self.key);
                }
                None => self.source_done = true,
            }
        }
        while self.buffer.len() < self.chunk_size && !self.source_done {
            match self.body.next().now_or_never() {
                Some(Some(Ok(bytes))) => self.buffer.extend_from_slice(&bytes),
                Some(Some(Err(err))) => {
                    self.source_done = true;
                    return StreamChunk::failed(&self.id, seq, err, &self.key);
                }
                Some(None) => self.source_done = true,
                None => break,
            }
        }
        let take = self.buffer.len().min(self.chunk_size);
        let data = self.buffer.split_to(take);
        // Release what a huge frame left behind once it is consumed.
        if self.buffer.is_empty() && self.buffer.capacity() > 4 * self.chunk_size {
            self.buffer = BytesMut::new();
        }
        let end = self.source_done && self.buffer.is_empty();
        crate::metrics::count(
            crate::metrics::STREAMED_BYTES,
            STREAMED_HELP,
            &[("direction", "sent")],
            data.len() as u64,
        );
        StreamChunk::data(&self.id, seq, data.to_vec(), end, &self.key)
    }
}

/// A remote body being pulled, one chunk ahead of its reader. Dropping it cancels the stream at
/// the offerer.
pub struct PulledStream {
    rx: mpsc::Receiver<Result<Bytes, RpcError>>,
}

impl std::fmt::Debug for PulledStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PulledStream").finish_non_exhaustive()
    }
}

/// Start pulling stream `id`; each pull waits at most `timeout` for its chunk.
///
/// # Errors
/// [`ErrorKind::BadRequest`] for an invalid id.
pub fn pull(
    nats: &async_nats::Client,
    lattice: &str,
    id: &str,
    key: MacKey,
    timeout: Duration,
) -> Result<PulledStream, RpcError> {
    let subject = subject::stream(lattice, id).map_err(RpcError::from)?;
    let (tx, rx) = mpsc::channel(1);
    tokio::spawn(pull_task(nats.clone(), subject, id.to_owned(), key, timeout, tx));
    Ok(PulledStream { rx })
}

async fn pull_task(
    nats: async_nats::Client,
    subject: String,
    id: String,
    key: MacKey,
    timeout: Duration,
    tx: mpsc::Sender<Result<Bytes, RpcError>>,
) {
    // One inbox for the stream's pulls: a reply that is not the chunk asked for (forged, late,
    // tampered) is dropped and the pull goes on waiting for the real one.
    let inbox = nats.new_inbox();
    let mut replies = match nats.subscribe(inbox.clone()).await {
        Ok(replies) => replies,
        Err(err) => {
            let _ =
                tx.send(Err(RpcError::new(ErrorKind::Unavailable, format!("cannot pull stream {id}: {err}")))).await;
            return;
        }
    };
    let mut seq = 0;
    loop {
        let request = match StreamPull::new(&id, seq, false, &key).encode() {
            Ok(bytes) => bytes,
            Err(err) => {
                let _ = tx.send(Err(RpcError::from(err))).await;
                return;
            }
        };
        if let Err(err) = nats.publish_with_reply(subject.clone(), inbox.clone(), request.into()).await {
            let _ = tx.send(Err(RpcError::new(ErrorKind::Unavailable, format!("stream {id}: {err}")))).await;
            return;
        }
        let chunk = tokio::select! {
            () = tx.closed() => {
                cancel(&nats, &subject, &id, seq, &key).await;
                return;
            }
            chunk = next_chunk(&mut replies, &id, seq, &key, timeout) => chunk,
        };
        let chunk = match chunk {
            Ok(chunk) => chunk,
            Err(err) => {
                let _ = tx.send(Err(err)).await;
                return;
            }
        };
        if let Some(err) = chunk.error {
            let _ = tx.send(Err(err)).await;
            return;
        }
        crate::metrics::count(
            crate::metrics::STREAMED_BYTES,
            STREAMED_HELP,
            &[("direction", "received")],
            chunk.data.len() as u64,
        );
        if !chunk.data.is_empty() && tx.send(Ok(Bytes::from(chunk.data))).await.is_err() {
            if !chunk.end {
                cancel(&nats, &subject, &id, seq + 1, &key).await;
            }
            return;
        }
        if chunk.end {
            return;
        }
        seq += 1;
    }
}

/// Wait up to `timeout` for chunk `seq` of stream `id`, dropping replies that are not it.
async fn next_chunk(
    replies: &mut async_nats::Subscriber,
    id: &str,
    seq: u64,
    key: &MacKey,
    timeout: Duration,
) -> Result<StreamChunk, RpcError> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let msg = match tokio::time::timeout_at(deadline, replies.next()).await {
            Err(_) => {
                return Err(RpcError::new(
                    ErrorKind::Timeout,
                    format!("no chunk {seq} of stream {id} within {timeout:?}"),
                ));
            }
            Ok(None) => return Err(RpcError::new(ErrorKind::Unavailable, format!("stream {id}: connection closed"))),
            Ok(Some(msg)) => msg,
        };
        if msg.status == Some(async_nats::StatusCode::NO_RESPONDERS) {
            return Err(RpcError::new(ErrorKind::Unavailable, format!("stream {id} is gone")));
        }
        let verified = StreamChunk::decode(&msg.payload)
            .map_err(|e| e.to_string())
            .and_then(|chunk| chunk.verify(key, id, seq).map(|()| chunk).map_err(|e| e.to_string()));
        match verified {
            Ok(chunk) => return Ok(chunk),
            Err(cause) => warn!(stream = %id, seq, %cause, "dropped a reply that is not the chunk pulled"),
        }
    }
}

async fn cancel(nats: &async_nats::Client, subject: &str, id: &str, seq: u64, key: &MacKey) {
    if let Ok(bytes) = StreamPull::new(id, seq, true, key).encode() {
        // The offerer answers nothing to a cancel; a reply subject is still needed for it to
        // read the message as a pull.
        let inbox = nats.new_inbox();
        let _ = nats.publish_with_reply(subject.to_owned(), inbox, bytes.into()).await;
    }
}

impl Stream for PulledStream {
    type Item = Result<Bytes, RpcError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

/// Split the start of `body` off to travel inline: up to `limit` bytes that are ready within
/// `wait`. Returns the inline bytes and, when the body goes on, a stream of the rest.
pub async fn split_inline(
    mut body: ByteStream,
    limit: usize,
    wait: Duration,
) -> Result<(Bytes, Option<ByteStream>), RpcError> {
    let mut inline = BytesMut::new();
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        if inline.len() >= limit {
            break;
        }
        match tokio::time::timeout_at(deadline, body.next()).await {
            Err(_) => break,
            Ok(None) => return Ok((inline.freeze(), None)),
            Ok(Some(Err(err))) => return Err(err),
            Ok(Some(Ok(bytes))) => inline.extend_from_slice(&bytes),
        }
    }
    let rest = if inline.len() > limit { Some(inline.split_off(limit).freeze()) } else { None };
    let tail: ByteStream = match rest {
        Some(rest) => Box::pin(futures::stream::once(async move { Ok(rest) }).chain(body)),
        None => body,
    };
    Ok((inline.freeze(), Some(tail)))
}
