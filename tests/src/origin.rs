//! An HTTP/1.1 origin server for outgoing-HTTP tests, in the test process: it says what it
//! received (method, path, `x-` headers and `traceparent`, body length and SHA-256, hashed as it arrives) in
//! response headers, and answers `?len=N` with N bytes of the test pattern, streamed; `/slow`
//! answers after 5 s.

use std::{convert::Infallible, net::SocketAddr, time::Duration};

use bytes::Bytes;
use http_body_util::{BodyExt as _, StreamBody, combinators::BoxBody};
use hyper::{Request, Response, body::Frame, service::service_fn};
use hyper_util::rt::TokioIo;
use sha2::{Digest as _, Sha256};
use tokio::{net::TcpListener, task::JoinHandle};

/// The byte at `offset` of the pattern test components write and read.
pub fn pattern(offset: u64) -> u8 {
    (offset.wrapping_mul(31).wrapping_add(offset >> 13) % 251) as u8
}

/// The hex SHA-256 of the first `len` bytes of [`pattern`].
pub fn pattern_sha256(len: u64) -> String {
    let mut sha = Sha256::new();
    let mut offset = 0;
    let mut piece = Vec::with_capacity(64 * 1024);
    while offset < len {
        piece.clear();
        let end = (offset + 64 * 1024).min(len);
        piece.extend((offset..end).map(pattern));
        sha.update(&piece);
        offset = end;
    }
    sha.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// A running origin; dropping it stops it.
pub struct Origin {
    /// Where it listens.
    pub address: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Origin {
    /// Listen on a free port of 127.0.0.1.
    ///
    /// # Errors
    /// When the port cannot be bound.
    pub async fn start() -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let service = service_fn(answer);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(Self { address, task })
    }
}

type Body = BoxBody<Bytes, Infallible>;

async fn answer(request: Request<hyper::body::Incoming>) -> Result<Response<Body>, Infallible> {
    let (parts, mut body) = request.into_parts();
    let (mut len, mut sha) = (0u64, Sha256::new());
    while let Some(Ok(frame)) = body.frame().await {
        if let Ok(data) = frame.into_data() {
            len += data.len() as u64;
            sha.update(&data);
        }
    }
    if parts.uri.path() == "/slow" {
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    let wanted = parts
        .uri
        .query()
        .and_then(|q| q.split('&').find_map(|p| p.strip_prefix("len=")))
        .and_then(|n| n.parse::<u64>().ok());
    let mut response = Response::builder()
        .status(if parts.uri.path() == "/teapot" { 418 } else { 200 })
        .header("x-method", parts.method.as_str())
        .header("x-path", parts.uri.path_and_query().map_or("/", |p| p.as_str()))
        .header("x-received-len", len.to_string())
        .header("x-received-sha256", sha.finalize().iter().map(|b| format!("{b:02x}")).collect::<String>());
    for (name, value) in &parts.headers {
        if name.as_str().starts_with("x-") || name == "traceparent" {
            response = response.header(format!("x-echo-{name}"), value.clone());
        }
    }
    let body: Body = match wanted {
        Some(total) => {
            let chunks = futures::stream::unfold(0u64, move |offset| async move {
                (offset < total).then(|| {
                    let end = (offset + 64 * 1024).min(total);
                    let data: Bytes = (offset..end).map(pattern).collect::<Vec<u8>>().into();
                    (Ok::<_, Infallible>(Frame::data(data)), end)
                })
            });
            StreamBody::new(chunks).boxed()
        }
        None => http_body_util::Full::new(Bytes::from_static(b"ok")).boxed(),
    };
    Ok(response.body(body).unwrap_or_else(|_| Response::new(http_body_util::Empty::new().boxed())))
}
