//! HTTP through the lattice: deliver an `http::Request` to a component's
//! `wasi:http/incoming-handler` and get an `http::Response` back, bodies of any size streamed.

use std::time::Duration;

pub use ferry_proto::http::{OP_HANDLE, WIT_INTERFACE, WIT_NAMESPACE, WIT_PACKAGE};
use ferry_proto::{
    RpcError,
    auth::MacKey,
    http::{HttpRequest, HttpResponse},
    stream::DEFAULT_CHUNK_SIZE,
};

pub use crate::body::request_authority;
use crate::{
    body::{INLINE_WAIT, LatticeBody, body_stream, headers_from_wire, headers_to_wire},
    stream,
};

/// The parts of an HTTP request that go on the wire before its body.
pub fn request_head(parts: &http::request::Parts) -> HttpRequest {
    let scheme = parts.uri.scheme_str().unwrap_or("http").to_owned();
    let authority = request_authority(&parts.uri, &parts.headers).unwrap_or_default().to_owned();
    let path_with_query = parts.uri.path_and_query().map_or_else(|| "/".to_owned(), |pq| pq.as_str().to_owned());
    HttpRequest {
        method: parts.method.as_str().to_owned(),
        scheme,
        authority,
        path_with_query,
        headers: headers_to_wire(&parts.headers),
        body: Vec::new(),
        body_stream: None,
    }
}

/// Put `body` on the wire with `head`, for an invocation whose MAC key is `key`: its first
/// part (up to `chunk_size`) inline, the rest offered as a stream the receiver pulls. Returns
/// the offer, to abort when the invocation fails.
///
/// # Errors
/// The body's own error while reading its first part, or the stream cannot be offered.
pub async fn attach_body<B>(
    nats: &async_nats::Client,
    lattice: &str,
    head: &mut HttpRequest,
    body: B,
    key: &MacKey,
    chunk_size: usize,
    idle: Duration,
) -> Result<Option<tokio::task::JoinHandle<()>>, RpcError>
where
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: std::fmt::Display,
{
    let (inline, rest) = stream::split_inline(body_stream(body), chunk_size, INLINE_WAIT).await?;
    head.body = inline.to_vec();
    let Some(rest) = rest else { return Ok(None) };
    let id = stream::new_stream_id();
    let offer = stream::offer(nats, lattice, &id, key.clone(), rest, chunk_size, idle).await?;
    head.body_stream = Some(id);
    Ok(Some(offer))
}

/// Turn a response off the wire into an `http::Response` whose body pulls the rest.
pub fn response_from_wire(
    nats: &async_nats::Client,
    lattice: &str,
    response: HttpResponse,
    key: &MacKey,
    timeout: Duration,
) -> Result<http::Response<LatticeBody>, RpcError> {
    let status = http::StatusCode::from_u16(response.status)
        .map_err(|_| RpcError::bad_request(format!("component answered with invalid status {}", response.status)))?;
    let headers = headers_from_wire(response.headers)?;
    let body = LatticeBody::from_payload(nats, lattice, response.body, response.body_stream.as_deref(), key, timeout)?;
    let mut out = http::Response::new(body);
    *out.status_mut() = status;
    *out.headers_mut() = headers;
    Ok(out)
}

/// Options of one HTTP call through the lattice.
#[derive(Debug, Clone)]
pub struct HttpCallOptions {
    /// The link name the caller uses.
    pub link_name: String,
    /// How long to wait for the response head, and for each body chunk.
    pub timeout: Duration,
    /// Largest inline part and streamed chunk.
    pub chunk_size: usize,
    /// The trace the call continues, under the caller's span ([`ferry_proto::trace`]).
    pub trace: Option<ferry_proto::trace::TraceParent>,
}

impl HttpCallOptions {
    /// Default link, `timeout`, default chunk size.
    pub fn new(timeout: Duration) -> Self {
        Self {
            link_name: ferry_proto::link::DEFAULT_LINK_NAME.to_owned(),
            timeout,
            chunk_size: DEFAULT_CHUNK_SIZE,
            trace: None,
        }
    }
}
