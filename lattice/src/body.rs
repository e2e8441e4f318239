//! Bodies that cross the lattice, and HTTP heads as the wire carries them.
//!
//! A body (an HTTP request or response body, a blob) travels as an inline part plus, when it is
//! bigger, a pulled stream ([`crate::stream`]). [`LatticeBody`] is the receiving end of that,
//! usable as an `http_body::Body` and as a `Stream`; [`body_stream`] is the sending end of any
//! body.

use std::{
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use ferry_proto::{ErrorKind, RpcError, auth::MacKey, http::Header};
use futures::{Stream, StreamExt as _};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;

use crate::stream::{self, ByteStream, PulledStream};

/// How long a caller waits for a body's first bytes before it sends the head without them and
/// streams the whole body instead.
pub const INLINE_WAIT: Duration = Duration::from_millis(5);

/// Hop-by-hop headers: they describe one connection, so they are not passed along.
pub const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "transfer-encoding",
    "upgrade",
];

/// Whether `name` (lower case) is a hop-by-hop header.
pub fn is_hop_by_hop(name: &str) -> bool {
    HOP_BY_HOP.contains(&name)
}

/// A body that arrived over the lattice: the inline part, then the streamed rest if any.
pub struct LatticeBody {
    inline: Option<Bytes>,
    rest: Option<PulledStream>,
}

impl std::fmt::Debug for LatticeBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LatticeBody")
            .field("inline", &self.inline.as_ref().map(Bytes::len))
            .field("streamed", &self.rest.is_some())
            .finish()
    }
}

impl LatticeBody {
    /// A body of `inline` bytes followed by what `rest` yields.
    pub fn new(inline: Bytes, rest: Option<PulledStream>) -> Self {
        Self { inline: (!inline.is_empty()).then_some(inline), rest }
    }

    /// Start pulling the rest of a body named by a payload's `body_stream`, if it has one.
    ///
    /// # Errors
    /// [`ErrorKind::BadRequest`] for an invalid stream id.
    pub fn from_payload(
        nats: &async_nats::Client,
        lattice: &str,
        inline: Vec<u8>,
        stream: Option<&str>,
        key: &MacKey,
        timeout: Duration,
    ) -> Result<Self, RpcError> {
        let rest = match stream {
            Some(id) => Some(stream::pull(nats, lattice, id, key.clone(), timeout)?),
            None => None,
        };
        Ok(Self::new(Bytes::from(inline), rest))
    }

    /// Read the whole body into memory.
    ///
    /// # Errors
    /// The stream's error.
    pub async fn collect_bytes(self) -> Result<Bytes, RpcError> {
        Ok(BodyExt::collect(self).await?.to_bytes())
    }
}

impl Stream for LatticeBody {
    type Item = Result<Bytes, RpcError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Some(inline) = self.inline.take() {
            return Poll::Ready(Some(Ok(inline)));
        }
        match self.rest.as_mut() {
            Some(rest) => {
                let item = std::task::ready!(rest.poll_next_unpin(cx));
                if item.is_none() {
                    self.rest = None;
                }
                Poll::Ready(item)
            }
            None => Poll::Ready(None),
        }
    }
}

impl Body for LatticeBody {
    type Data = Bytes;
    type Error = RpcError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, RpcError>>> {
        self.poll_next(cx).map(|item| item.map(|result| result.map(Frame::data)))
    }

    fn is_end_stream(&self) -> bool {
        self.inline.is_none() && self.rest.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match (&self.inline, &self.rest) {
            (None, None) => SizeHint::with_exact(0),
            (Some(inline), None) => SizeHint::with_exact(inline.len() as u64),
            (inline, Some(_)) => {
                let mut hint = SizeHint::new();
                hint.set_lower(inline.as_ref().map_or(0, |b| b.len() as u64));
                hint
            }
        }
    }
}

/// Turn any `http_body::Body` into the byte stream the lattice sends, dropping trailers.
pub fn body_stream<B>(body: B) -> ByteStream
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: std::fmt::Display,
{
    Box::pin(
        body.into_data_stream()
            .map(|item| item.map_err(|e| RpcError::new(ErrorKind::BadRequest, format!("request body failed: {e}")))),
    )
}

/// The authority a request is for: the request target's own (absolute form), else its `Host`
/// header (RFC 9112, 3.2.2). What a server routes on and what the component sees as the
/// request's authority are both this, so they cannot disagree.
pub fn request_authority<'a>(uri: &'a http::Uri, headers: &'a http::HeaderMap) -> Option<&'a str> {
    match uri.authority() {
        Some(authority) => Some(authority.as_str()),
        None => headers.get(http::header::HOST).and_then(|v| v.to_str().ok()),
    }
}

/// The headers of a request or response as the lattice carries them: in order, repeats kept,
/// hop-by-hop headers left out — the standard ones and any the `Connection` header names
/// (RFC 9110, 7.6.1).
pub fn headers_to_wire(headers: &http::HeaderMap) -> Vec<Header> {
    let named: Vec<String> = headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|token| token.trim().to_ascii_lowercase())
        .filter(|token| !token.is_empty())
        .collect();
    headers
        .iter()
        .filter(|(name, _)| !is_hop_by_hop(name.as_str()) && !named.iter().any(|n| n == name.as_str()))
        .map(|(name, value)| Header { name: name.as_str().to_owned(), value: value.as_bytes().to_vec() })
        .collect()
}

/// Headers from the wire into a map; invalid names or values are a bad request.
///
/// # Errors
/// [`ErrorKind::BadRequest`] naming the bad header.
pub fn headers_from_wire(headers: Vec<Header>) -> Result<http::HeaderMap, RpcError> {
    let mut map = http::HeaderMap::with_capacity(headers.len());
    for header in headers {
        let name = http::HeaderName::from_bytes(header.name.as_bytes())
            .map_err(|e| RpcError::bad_request(format!("invalid header name {:?}: {e}", header.name)))?;
        let value = http::HeaderValue::from_bytes(&header.value)
            .map_err(|e| RpcError::bad_request(format!("invalid value of header {name}: {e}")))?;
        map.append(name, value);
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    #[test]
    fn headers_named_in_connection_stay_behind() {
        let mut headers = http::HeaderMap::new();
        headers.append("connection", "keep-alive, X-Hop".parse().unwrap());
        headers.append("x-hop", "1".parse().unwrap());
        headers.append("keep-alive", "timeout=5".parse().unwrap());
        headers.append("x-end-to-end", "2".parse().unwrap());
        let names: Vec<String> = super::headers_to_wire(&headers).into_iter().map(|h| h.name).collect();
        assert_eq!(names, ["x-end-to-end"]);
    }
}
