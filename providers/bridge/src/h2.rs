//! The bridge's HTTP/2 connection to the foreign process, as the service tonic's generated
//! clients call through. One connection, opened when first needed and again after it broke.
//!
//! A call goes straight onto the `h2` connection from the calling task: the request's head and
//! whatever of its body is ready at once (all of it, for a unary call) are queued together, so
//! they leave in one write and the process reads them in one wake-up. Only a body that is not
//! ready yet (a streamed upload) gets a task of its own that sends it under flow control.
//! Going through hyper's client instead cost a hand-off to its dispatch task, a task per call
//! for the response and one per request body — and the head and the body left in two writes,
//! each waking the process; at one call in flight that was about a tenth of what the bridge added
//! (docs/benchmarks.md, issue 12).

use std::{
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll, ready},
    time::Duration,
};

use bytes::Bytes;
use h2::client::SendRequest;
use http_body::{Body as _, Frame};
use tokio_util::sync::{CancellationToken, DropGuard};
use tonic::{Status, body::Body, metadata::MetadataValue};
use tracing::debug;

use crate::config::Address;

/// Longest wait to connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// HTTP/2 flow-control window of each call: how much of a streamed body may be in flight.
const STREAM_WINDOW: u32 = 512 << 10;
/// How often the connection is checked with a PING, so one to a peer that vanished without
/// closing it is found and replaced.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// How long a PING's answer may take before the connection counts as broken.
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);
/// How much of a request body is queued with its head without waiting for flow control: a
/// unary request's message, and the start of a stream.
const EAGER_BODY: usize = STREAM_WINDOW as usize;

/// Metadata on a status this connection made itself because the process could not be
/// reached, as against an `unavailable` the process answered (its backend is down).
const UNREACHABLE: &str = "ferry-bridge-unreachable";

/// The process could not be reached (connect, handshake, or the connection broke).
fn unreachable(message: String) -> Status {
    let mut status = Status::unavailable(message);
    status.metadata_mut().insert(UNREACHABLE, MetadataValue::from_static("1"));
    status
}

/// Whether `status` says the process could not be reached, rather than what it answered.
pub(crate) fn is_unreachable(status: &Status) -> bool {
    status.metadata().contains_key(UNREACHABLE)
}

/// A cheap handle on the one connection; clone it per call.
#[derive(Clone)]
pub(crate) struct Connection {
    inner: Arc<Inner>,
}

struct Inner {
    address: Address,
    /// The open connection; `None` before the first call and after a failure.
    open: Mutex<Option<Open>>,
    /// Held while connecting, so concurrent first calls open one connection, not several.
    connecting: tokio::sync::Mutex<()>,
}

/// An open connection: its sender, and whether the task driving it has ended.
#[derive(Clone)]
struct Open {
    sender: SendRequest<Bytes>,
    closed: Arc<AtomicBool>,
}

impl Open {
    fn usable(&self) -> Option<SendRequest<Bytes>> {
        (!self.closed.load(Ordering::Acquire)).then(|| self.sender.clone())
    }
}

impl Connection {
    pub(crate) fn new(address: Address) -> Self {
        Self { inner: Arc::new(Inner { address, open: Mutex::new(None), connecting: tokio::sync::Mutex::new(()) }) }
    }
}

impl Inner {
    fn current(&self) -> Option<SendRequest<Bytes>> {
        self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner).as_ref().and_then(Open::usable)
    }

    /// The open connection, or a new one.
    async fn sender(&self) -> Result<SendRequest<Bytes>, Status> {
        if let Some(sender) = self.current() {
            return Ok(sender);
        }
        let _turn = self.connecting.lock().await;
        if let Some(sender) = self.current() {
            return Ok(sender);
        }
        let open = tokio::time::timeout(CONNECT_TIMEOUT, self.connect())
            .await
            .map_err(|_| unreachable(format!("connecting to {} timed out", self.address)))??;
        let sender = open.sender.clone();
        *self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(open);
        Ok(sender)
    }

    async fn connect(&self) -> Result<Open, Status> {
        let refused = |e: std::io::Error| unreachable(format!("cannot connect to {}: {e}", self.address));
        match &self.address {
            Address::Unix(path) => self.handshake(tokio::net::UnixStream::connect(path).await.map_err(refused)?).await,
            Address::Tcp(hostport) => {
                let stream = tokio::net::TcpStream::connect(hostport).await.map_err(refused)?;
                stream.set_nodelay(true).map_err(refused)?;
                self.handshake(stream).await
            }
        }
    }

    /// The HTTP/2 handshake, and the task that drives the connection until either side closes
    /// it or it stops answering PINGs.
    async fn handshake<T>(&self, io: T) -> Result<Open, Status>
    where
        T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, mut connection) = h2::client::Builder::new()
            .initial_window_size(STREAM_WINDOW)
            .initial_connection_window_size(2 * STREAM_WINDOW)
            .handshake::<_, Bytes>(io)
            .await
            .map_err(|e| unreachable(format!("HTTP/2 handshake with {} failed: {e}", self.address)))?;
        let closed = Arc::new(AtomicBool::new(false));
        let mut ping_pong = connection.ping_pong();
        let address = self.address.clone();
        let ended = closed.clone();
        tokio::spawn(async move {
            let keepalive = async {
                let Some(ping_pong) = ping_pong.as_mut() else { return std::future::pending().await };
                loop {
                    tokio::time::sleep(KEEPALIVE_INTERVAL).await;
                    match tokio::time::timeout(KEEPALIVE_TIMEOUT, ping_pong.ping(h2::Ping::opaque())).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => return format!("PING failed: {e}"),
                        Err(_) => return format!("no answer to a PING in {KEEPALIVE_TIMEOUT:?}"),
                    }
                }
            };
            let why = tokio::select! {
                result = connection => result.err().map(|e| e.to_string()),
                why = keepalive => Some(why),
            };
            ended.store(true, Ordering::Release);
            debug!(%address, cause = why.as_deref().unwrap_or("closed"), "HTTP/2 connection to the bridged provider ended");
        });
        Ok(Open { sender, closed })
    }
}

impl tower::Service<http::Request<Body>> for Connection {
    type Response = http::Response<ResponseBody>;
    type Error = Status;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Status>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Status>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let inner = self.inner.clone();
        Box::pin(async move {
            let sender = inner.sender().await?;
            let broken = |e: h2::Error| unreachable(format!("connection to {} failed: {e}", inner.address));
            let mut sender = sender.ready().await.map_err(broken)?;
            let (head, mut body) = request.into_parts();
            let ready = std::future::poll_fn(|cx| Poll::Ready(Eager::take(&mut body, cx))).await?;
            let (response, mut stream) =
                sender.send_request(http::Request::from_parts(head, ()), ready.is_empty_end()).map_err(broken)?;
            let mut cancel = None;
            match ready {
                Eager::Done { chunks, trailers } => send_last(&mut stream, chunks, trailers).map_err(broken)?,
                Eager::More { chunks } => {
                    for chunk in chunks {
                        stream.send_data(chunk, false).map_err(broken)?;
                    }
                    // Dropping the call or its response body before the end stops the upload.
                    let token = CancellationToken::new();
                    tokio::spawn(pipe(body, stream, token.clone()));
                    cancel = Some(token.drop_guard());
                }
            }
            // A stream the process reset is its answer; anything else means it is out of reach.
            let response =
                response.await.map_err(|e| if e.is_reset() && e.is_remote() { Status::from(e) } else { broken(e) })?;
            Ok(response.map(|recv| ResponseBody { recv, data_done: false, done: false, _cancel: cancel }))
        })
    }
}

/// What of a request body was ready the moment it was sent.
enum Eager {
    /// All of it: its data, and the trailers that ended it if any.
    Done { chunks: Vec<Bytes>, trailers: Option<http::HeaderMap> },
    /// The start of it; the rest is to come.
    More { chunks: Vec<Bytes> },
}

impl Eager {
    /// Take the frames `body` has ready now, up to [`EAGER_BODY`] bytes; the body's error if it
    /// failed before anything was sent.
    fn take(body: &mut Body, cx: &mut Context<'_>) -> Result<Self, Status> {
        let mut chunks = Vec::new();
        let mut taken = 0;
        while taken < EAGER_BODY {
            match Pin::new(&mut *body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        taken += data.len();
                        if !data.is_empty() {
                            chunks.push(data);
                        }
                    }
                    Err(frame) => return Ok(Self::Done { chunks, trailers: frame.into_trailers().ok() }),
                },
                Poll::Ready(Some(Err(status))) => return Err(status),
                Poll::Ready(None) => return Ok(Self::Done { chunks, trailers: None }),
                Poll::Pending => break,
            }
        }
        Ok(Self::More { chunks })
    }

    /// Whether the request is its head alone.
    fn is_empty_end(&self) -> bool {
        matches!(self, Self::Done { chunks, trailers: None } if chunks.is_empty())
    }
}

/// Queue the whole of a body that was ready at once, ending the stream with its last piece.
fn send_last(
    stream: &mut h2::SendStream<Bytes>,
    mut chunks: Vec<Bytes>,
    trailers: Option<http::HeaderMap>,
) -> Result<(), h2::Error> {
    let last = if trailers.is_none() { chunks.pop() } else { None };
    for chunk in chunks {
        stream.send_data(chunk, false)?;
    }
    match (last, trailers) {
        (_, Some(trailers)) => stream.send_trailers(trailers),
        (Some(last), None) => stream.send_data(last, true),
        // The head ended the stream already.
        (None, None) => Ok(()),
    }
}

/// Send the rest of a streamed request body under flow control: one chunk at a time, each
/// when the process has room for it. Resets the stream when the body fails, the call is
/// dropped, or the process reset it.
async fn pipe(mut body: Body, mut stream: h2::SendStream<Bytes>, cancel: CancellationToken) {
    let sent = async {
        loop {
            let frame = std::future::poll_fn(|cx| {
                if let Poll::Ready(reset) = stream.poll_reset(cx) {
                    return Poll::Ready(Err(
                        reset.map_or_else(|e| e.to_string(), |r| format!("reset by the process: {r}"))
                    ));
                }
                Poll::Ready(Ok(ready!(Pin::new(&mut body).poll_frame(cx))))
            })
            .await?;
            let Some(frame) = frame else {
                return stream.send_data(Bytes::new(), true).map_err(|e| e.to_string());
            };
            let frame = frame.map_err(|status| format!("the request body failed: {}", status.message()))?;
            let data = match frame.into_data() {
                Ok(data) => data,
                Err(frame) => match frame.into_trailers() {
                    Ok(trailers) => return stream.send_trailers(trailers).map_err(|e| e.to_string()),
                    Err(_) => continue,
                },
            };
            if data.is_empty() {
                continue;
            }
            // Wait for room, so no more than the window is ever queued here.
            stream.reserve_capacity(data.len());
            while stream.capacity() == 0 {
                match std::future::poll_fn(|cx| stream.poll_capacity(cx)).await {
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Err(e.to_string()),
                    None => return Err("the stream closed before the body was sent".into()),
                }
            }
            let end = body.is_end_stream();
            stream.send_data(data, end).map_err(|e| e.to_string())?;
            if end {
                return Ok(());
            }
        }
    };
    let outcome = tokio::select! {
        outcome = sent => outcome,
        () = cancel.cancelled() => Err("the call was dropped".into()),
    };
    if let Err(why) = outcome {
        debug!(cause = %why, "request body to the bridged provider stopped; stream reset");
        stream.send_reset(h2::Reason::CANCEL);
    }
}

/// A response body read from the connection, handing flow-control room back as it is read.
pub(crate) struct ResponseBody {
    recv: h2::RecvStream,
    data_done: bool,
    done: bool,
    /// Stops a request body still being sent when the response is dropped.
    _cancel: Option<DropGuard>,
}

impl http_body::Body for ResponseBody {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
        if self.done {
            return Poll::Ready(None);
        }
        if !self.data_done {
            match ready!(self.recv.poll_data(cx)) {
                Some(Ok(data)) => {
                    // Only fails when the stream is gone, which the next read reports.
                    let _ = self.recv.flow_control().release_capacity(data.len());
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Err(e)) => {
                    self.done = true;
                    return Poll::Ready(Some(Err(e)));
                }
                None => self.data_done = true,
            }
        }
        self.done = true;
        match ready!(self.recv.poll_trailers(cx)) {
            Ok(Some(trailers)) => Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
            Ok(None) => Poll::Ready(None),
            Err(e) => Poll::Ready(Some(Err(e))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.recv.is_end_stream()
    }
}
