//! A plain HTTP/1.1 client for tests: one connection per request, any body, the response read
//! whole or as a stream.

use std::{net::SocketAddr, time::Duration};

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, combinators::BoxBody};
use hyper::{Request, Response, body::Incoming};
use hyper_util::rt::TokioIo;

/// A request body for [`send`].
pub type TestBody = BoxBody<Bytes, std::io::Error>;

/// A body of `bytes` with a content-length.
pub fn full(bytes: impl Into<Bytes>) -> TestBody {
    Full::new(bytes.into()).map_err(|never| match never {}).boxed()
}

/// An empty body.
pub fn empty() -> TestBody {
    full(Bytes::new())
}

/// A body of `chunks` sent with chunked transfer encoding (no content-length).
pub fn chunked(chunks: Vec<Bytes>) -> TestBody {
    let stream = futures::stream::iter(chunks.into_iter().map(|c| Ok(hyper::body::Frame::data(c))));
    http_body_util::StreamBody::new(stream).boxed()
}

/// Send `request` to `address` on a new connection.
///
/// # Errors
/// When the connection or the exchange fails.
pub async fn send(address: SocketAddr, request: Request<TestBody>) -> anyhow::Result<Response<Incoming>> {
    let stream = tokio::net::TcpStream::connect(address).await.with_context(|| format!("connect to {address}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    Ok(sender.send_request(request).await?)
}

/// A request for `path` with `Host: host`.
///
/// # Errors
/// When the parts are invalid.
pub fn request(method: &str, host: &str, path: &str, body: TestBody) -> anyhow::Result<Request<TestBody>> {
    Ok(Request::builder().method(method).uri(path).header(hyper::header::HOST, host).body(body)?)
}

/// Send a request and read the whole response.
///
/// # Errors
/// When sending or reading fails.
pub async fn fetch(
    address: SocketAddr,
    request: Request<TestBody>,
) -> anyhow::Result<(hyper::StatusCode, hyper::HeaderMap, Bytes)> {
    let response = send(address, request).await?;
    let (parts, body) = response.into_parts();
    let body = body.collect().await?.to_bytes();
    Ok((parts.status, parts.headers, body))
}

/// GET `path` until the answer is not 404 or a refused connection (a route being set up).
///
/// # Errors
/// When the route does not appear within 10 s.
pub async fn wait_for_route(address: SocketAddr, host: &str, path: &str) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok((status, _, _)) = fetch(address, request("GET", host, path, empty())?).await
            && status != hyper::StatusCode::NOT_FOUND
        {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!("no route for {host}{path} on {address}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The peak resident set size of process `pid`, in bytes (Linux).
///
/// # Errors
/// When /proc cannot be read.
pub fn peak_rss(pid: u32) -> anyhow::Result<u64> {
    proc_status_kib(pid, "VmHWM:").map(|kib| kib * 1024)
}

/// The resident set size of process `pid`, in bytes (Linux).
///
/// # Errors
/// When /proc cannot be read.
pub fn rss(pid: u32) -> anyhow::Result<u64> {
    proc_status_kib(pid, "VmRSS:").map(|kib| kib * 1024)
}

/// The CPU time process `pid` has used so far, user and system, all threads (Linux; 10 ms
/// resolution).
///
/// # Errors
/// When /proc cannot be read.
pub fn cpu_time(pid: u32) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = stat.rsplit_once(')').map(|(_, rest)| rest).with_context(|| format!("bad stat for {pid}"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name and state.
    let ticks = |i: usize| -> anyhow::Result<u64> {
        Ok(fields.get(i).with_context(|| format!("short stat for {pid}"))?.parse()?)
    };
    // The kernel reports in USER_HZ, which is 100 on every Linux architecture.
    Ok(Duration::from_millis((ticks(11)? + ticks(12)?) * 10))
}

fn proc_status_kib(pid: u32, field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status.lines().find(|l| l.starts_with(field)).with_context(|| format!("no {field} for {pid}"))?;
    Ok(line.trim_start_matches(field).trim().trim_end_matches("kB").trim().parse()?)
}
