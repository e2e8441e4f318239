//! The outgoing HTTP capability: a typed trait for `wasi:http/outgoing-handler` (a linked
//! component's requests) and its dispatcher, which turns the invocation into an
//! `http::Request` whose body is pulled from the component as it is read, and the provider's
//! `http::Response` into the answer, its body offered as a stream.

use std::{future::Future, time::Duration};

use ferry_lattice::{body::headers_from_wire, stream::ByteStream};
use ferry_proto::{ErrorKind, RpcError, codec};

use crate::{InvocationContext, LatticeBody, Provider};

/// The interface's names, operations and payloads, as the wire protocol defines them.
pub use ferry_proto::http::{
    HttpError, HttpErrorCode, HttpRequest, HttpResponse, OP_OUTGOING_HANDLE, OUTGOING_INTERFACE, OutgoingRequest,
    OutgoingResponse, WIT_NAMESPACE, WIT_PACKAGE,
};

/// The timeouts a component asked for with its request (`request-options`); `None` where it
/// set none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestTimeouts {
    /// Time to establish the connection.
    pub connect: Option<Duration>,
    /// Time until the response head arrives.
    pub first_byte: Option<Duration>,
    /// Longest pause between two parts of the response body.
    pub between_bytes: Option<Duration>,
}

/// What an http-client provider implements: send one request. The request's body is pulled
/// from the component as it is read; the response's body is offered to it as it is read, so
/// neither is held whole.
pub trait OutgoingHttp: Provider {
    /// Send `request` and return the server's response, or why there is none.
    fn send(
        &self,
        ctx: &InvocationContext<Self::Link>,
        request: http::Request<LatticeBody>,
        timeouts: RequestTimeouts,
    ) -> impl Future<Output = Result<http::Response<ByteStream>, HttpError>> + Send;
}

/// Decode an outgoing request, call `client`, and encode the answer. Use it from
/// [`crate::Provider::handle`].
///
/// # Errors
/// [`ErrorKind::UnknownOperation`] for operations outside the interface,
/// [`ErrorKind::BadRequest`] for undecodable payloads or a request that is not HTTP; a failed
/// request is an answer ([`OutgoingResponse::error`]), not an error.
pub async fn dispatch<C: OutgoingHttp>(
    client: &C,
    ctx: &InvocationContext<C::Link>,
    operation: &str,
    payload: &[u8],
) -> Result<Vec<u8>, RpcError> {
    if operation != OP_OUTGOING_HANDLE {
        return Err(RpcError::new(
            ErrorKind::UnknownOperation,
            format!("outgoing HTTP has no operation {operation:?}"),
        ));
    }
    let outgoing: OutgoingRequest = codec::decode(payload).map_err(|e| RpcError::bad_request(e.to_string()))?;
    let ms = |v: Option<u64>| v.map(Duration::from_millis);
    let timeouts = RequestTimeouts {
        connect: ms(outgoing.connect_timeout_ms),
        first_byte: ms(outgoing.first_byte_timeout_ms),
        between_bytes: ms(outgoing.between_bytes_timeout_ms),
    };
    let mut head = outgoing.request;
    let body = ctx.pull_body(std::mem::take(&mut head.body), head.body_stream.take().as_deref())?;
    let mut request = match to_request(head, body) {
        Ok(request) => request,
        Err(error) => return encode(&OutgoingResponse { response: None, error: Some(error) }),
    };
    // A traced call's request continues its trace under this provider's span.
    if let Some(trace) = ctx.traceparent()
        && let Ok(value) = http::HeaderValue::from_str(&trace.to_string())
    {
        request.headers_mut().insert(ferry_proto::trace::TRACEPARENT, value);
    }
    let answer = match client.send(ctx, request, timeouts).await {
        Ok(response) => {
            let (parts, body) = response.into_parts();
            let (inline, body_stream) = ctx.offer_body(body).await?;
            let response = HttpResponse {
                status: parts.status.as_u16(),
                headers: ferry_lattice::body::headers_to_wire(&parts.headers),
                body: inline,
                body_stream,
            };
            OutgoingResponse { response: Some(response), error: None }
        }
        Err(error) => OutgoingResponse { response: None, error: Some(error) },
    };
    encode(&answer)
}

/// The request a component built, as `http::Request`; what is not HTTP is
/// `HTTP-request-URI-invalid` or `HTTP-request-method-invalid`.
fn to_request(head: HttpRequest, body: LatticeBody) -> Result<http::Request<LatticeBody>, HttpError> {
    let method = http::Method::from_bytes(head.method.as_bytes())
        .map_err(|_| HttpError::new(HttpErrorCode::HttpRequestMethodInvalid, format!("method {:?}", head.method)))?;
    let scheme = if head.scheme.is_empty() { "https" } else { head.scheme.as_str() };
    let uri: http::Uri = format!("{scheme}://{}{}", head.authority, head.path_with_query)
        .parse()
        .map_err(|e| HttpError::new(HttpErrorCode::HttpRequestUriInvalid, format!("{e}")))?;
    if uri.host().is_none_or(str::is_empty) {
        return Err(HttpError::new(HttpErrorCode::HttpRequestUriInvalid, "the request names no host"));
    }
    let headers =
        headers_from_wire(head.headers).map_err(|e| HttpError::new(HttpErrorCode::HttpProtocolError, e.to_string()))?;
    let mut request = http::Request::new(body);
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.headers_mut() = headers;
    Ok(request)
}

fn encode(answer: &OutgoingResponse) -> Result<Vec<u8>, RpcError> {
    codec::encode(answer).map_err(RpcError::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(method: &str, scheme: &str, authority: &str) -> HttpRequest {
        HttpRequest {
            method: method.into(),
            scheme: scheme.into(),
            authority: authority.into(),
            path_with_query: "/a?b=c".into(),
            headers: Vec::new(),
            body: Vec::new(),
            body_stream: None,
        }
    }

    fn empty() -> LatticeBody {
        LatticeBody::new(bytes::Bytes::new(), None)
    }

    #[test]
    fn requests_that_are_not_http_are_refused_with_their_code() {
        let ok = to_request(head("POST", "http", "example.com:8080"), empty()).unwrap();
        assert_eq!(ok.uri().to_string(), "http://example.com:8080/a?b=c");
        assert_eq!(ok.method(), http::Method::POST);
        let https = to_request(head("GET", "", "example.com"), empty()).unwrap();
        assert_eq!(https.uri().scheme_str(), Some("https"), "no scheme means https, as wasmtime defaults");
        let bad = to_request(head("GE T", "http", "example.com"), empty()).unwrap_err();
        assert_eq!(bad.code, HttpErrorCode::HttpRequestMethodInvalid);
        let bad = to_request(head("GET", "http", ""), empty()).unwrap_err();
        assert_eq!(bad.code, HttpErrorCode::HttpRequestUriInvalid);
        let bad = to_request(head("GET", "http", "exa mple.com"), empty()).unwrap_err();
        assert_eq!(bad.code, HttpErrorCode::HttpRequestUriInvalid);
    }
}
