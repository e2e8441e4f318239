//! The bridge's HTTP/2 connection to the foreign process, as the service tonic's generated
//! clients call through. One connection, opened when first needed and again after it broke;
//! calls go straight to it (tonic's own `Channel` hands each call to a buffer task first, a
//! hop each way that the bridge's one-call-in-flight latency paid for).

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tonic::{Status, body::Body, metadata::MetadataValue};

use crate::config::Address;

/// Longest wait to connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// HTTP/2 flow-control window of each call: how much of a streamed body may be in flight.
const STREAM_WINDOW: u32 = 512 << 10;

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
    /// The open connection's sender; `None` before the first call and after a failure.
    sender: tokio::sync::Mutex<Option<SendRequest<Body>>>,
}

impl Connection {
    pub(crate) fn new(address: Address) -> Self {
        Self { inner: Arc::new(Inner { address, sender: tokio::sync::Mutex::new(None) }) }
    }
}

impl Inner {
    /// The open connection, or a new one.
    async fn sender(&self) -> Result<SendRequest<Body>, Status> {
        let mut slot = self.sender.lock().await;
        if let Some(sender) = slot.as_ref().filter(|s| !s.is_closed()) {
            return Ok(sender.clone());
        }
        *slot = None;
        let sender = tokio::time::timeout(CONNECT_TIMEOUT, self.connect())
            .await
            .map_err(|_| unreachable(format!("connecting to {} timed out", self.address)))??;
        *slot = Some(sender.clone());
        Ok(sender)
    }

    async fn connect(&self) -> Result<SendRequest<Body>, Status> {
        let refused = |e: std::io::Error| unreachable(format!("cannot connect to {}: {e}", self.address));
        let mut builder = hyper::client::conn::http2::Builder::new(TokioExecutor::new());
        builder
            .initial_stream_window_size(STREAM_WINDOW)
            .initial_connection_window_size(2 * STREAM_WINDOW)
            .keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5))
            .timer(hyper_util::rt::TokioTimer::new());
        let handshake = |e: hyper::Error| unreachable(format!("HTTP/2 handshake with {} failed: {e}", self.address));
        // The spawned task drives the connection until either side closes it.
        match &self.address {
            Address::Unix(path) => {
                let stream = tokio::net::UnixStream::connect(path).await.map_err(refused)?;
                let (sender, connection) = builder.handshake(TokioIo::new(stream)).await.map_err(handshake)?;
                tokio::spawn(connection);
                Ok(sender)
            }
            Address::Tcp(hostport) => {
                let stream = tokio::net::TcpStream::connect(hostport).await.map_err(refused)?;
                stream.set_nodelay(true).map_err(refused)?;
                let (sender, connection) = builder.handshake(TokioIo::new(stream)).await.map_err(handshake)?;
                tokio::spawn(connection);
                Ok(sender)
            }
        }
    }
}

impl tower::Service<http::Request<Body>> for Connection {
    type Response = http::Response<hyper::body::Incoming>;
    type Error = Status;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Status>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Status>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let inner = self.inner.clone();
        Box::pin(async move {
            let mut sender = inner.sender().await?;
            let broken = |e: hyper::Error| unreachable(format!("connection to {} failed: {e}", inner.address));
            sender.ready().await.map_err(broken)?;
            sender.send_request(request).await.map_err(broken)
        })
    }
}
