//! Payloads of HTTP invocations: `wasi:http/incoming-handler` (a provider delivers a request
//! to a component) and `wasi:http/outgoing-handler` (a component's request goes to the
//! http-client provider, which sends it). A body travels inline when it is small; a larger one
//! starts inline and continues as a pulled stream ([`crate::stream`]) named by `body_stream`.

use serde::{Deserialize, Serialize};

/// Operation name of an incoming HTTP request delivered to a component.
pub const OP_HANDLE: &str = "wasi:http/incoming-handler.handle";
/// WIT namespace of HTTP.
pub const WIT_NAMESPACE: &str = "wasi";
/// WIT package of HTTP.
pub const WIT_PACKAGE: &str = "http";
/// WIT interface a component exports to serve HTTP.
pub const WIT_INTERFACE: &str = "incoming-handler";
/// WIT interface a component imports to send HTTP requests.
pub const OUTGOING_INTERFACE: &str = "outgoing-handler";
/// Operation name of a component's outgoing HTTP request, sent to the linked http-client.
pub const OP_OUTGOING_HANDLE: &str = "wasi:http/outgoing-handler.handle";

/// A component's outgoing request and the timeouts it asked for (`request-options`); the
/// provider applies its link's own where the component set none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutgoingRequest {
    /// The request; `scheme` and `authority` name the server.
    pub request: HttpRequest,
    /// Time to establish the connection, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout_ms: Option<u64>,
    /// Time until the response head arrives, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_byte_timeout_ms: Option<u64>,
    /// Longest pause between two parts of the response body, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub between_bytes_timeout_ms: Option<u64>,
}

/// What the http-client answers: the server's response, or why there is none, as the
/// `wasi:http/types.error-code` the component gets. Exactly one is set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutgoingResponse {
    /// The server's response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<HttpResponse>,
    /// Why the request failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<HttpError>,
}

/// A failed outgoing request: the `error-code` case and a detail for logs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpError {
    /// The case of `wasi:http/types.error-code`.
    pub code: HttpErrorCode,
    /// What happened, for people.
    #[serde(default)]
    pub message: String,
}

impl HttpError {
    /// An error of `code` with `message`.
    pub fn new(code: HttpErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }
}

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.message)
    }
}

/// The cases of `wasi:http/types.error-code` an outgoing request ends with, spelled as in the
/// WIT (kebab case on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum HttpErrorCode {
    /// The name did not resolve in time.
    DnsTimeout,
    /// The name did not resolve.
    DnsError,
    /// No such destination.
    DestinationNotFound,
    /// The destination did not answer.
    DestinationUnavailable,
    /// The connection was refused.
    ConnectionRefused,
    /// The connection ended early.
    ConnectionTerminated,
    /// No connection in time.
    ConnectionTimeout,
    /// No response (or no body part) in time.
    ConnectionReadTimeout,
    /// The request could not be written in time.
    ConnectionWriteTimeout,
    /// TLS failed.
    TlsProtocolError,
    /// The server's certificate was refused.
    TlsCertificateError,
    /// The link does not allow this destination.
    HttpRequestDenied,
    /// The request's URI is not valid.
    HttpRequestUriInvalid,
    /// The request's method is not valid.
    HttpRequestMethodInvalid,
    /// The response ended early.
    HttpResponseIncomplete,
    /// The response took too long.
    HttpResponseTimeout,
    /// The server broke HTTP.
    HttpProtocolError,
    /// The provider's configuration is wrong.
    ConfigurationError,
    /// Anything else.
    InternalError,
}

impl HttpErrorCode {
    /// The WIT case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::DnsTimeout => "DNS-timeout",
            Self::DnsError => "DNS-error",
            Self::DestinationNotFound => "destination-not-found",
            Self::DestinationUnavailable => "destination-unavailable",
            Self::ConnectionRefused => "connection-refused",
            Self::ConnectionTerminated => "connection-terminated",
            Self::ConnectionTimeout => "connection-timeout",
            Self::ConnectionReadTimeout => "connection-read-timeout",
            Self::ConnectionWriteTimeout => "connection-write-timeout",
            Self::TlsProtocolError => "TLS-protocol-error",
            Self::TlsCertificateError => "TLS-certificate-error",
            Self::HttpRequestDenied => "HTTP-request-denied",
            Self::HttpRequestUriInvalid => "HTTP-request-URI-invalid",
            Self::HttpRequestMethodInvalid => "HTTP-request-method-invalid",
            Self::HttpResponseIncomplete => "HTTP-response-incomplete",
            Self::HttpResponseTimeout => "HTTP-response-timeout",
            Self::HttpProtocolError => "HTTP-protocol-error",
            Self::ConfigurationError => "configuration-error",
            Self::InternalError => "internal-error",
        }
    }
}

/// One header; names may repeat and values are bytes, as in HTTP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// Header name.
    pub name: String,
    /// Header value.
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
}

/// An HTTP request for a component.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpRequest {
    /// `GET`, `POST`, …
    pub method: String,
    /// `http` or `https`.
    pub scheme: String,
    /// Host and port the client asked for.
    pub authority: String,
    /// Path and query, `/a/b?c=d`.
    pub path_with_query: String,
    /// Headers in order.
    pub headers: Vec<Header>,
    /// The body, or its first part when `body_stream` is set.
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
    /// The stream the rest of the body is pulled from, offered by the caller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_stream: Option<String>,
}

/// A component's HTTP response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Headers in order.
    pub headers: Vec<Header>,
    /// The body, or its first part when `body_stream` is set.
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
    /// The stream the rest of the body is pulled from, offered by the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_stream: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{decode, encode};

    #[test]
    fn round_trip_and_garbage() {
        let req = HttpRequest {
            method: "POST".into(),
            scheme: "http".into(),
            authority: "localhost".into(),
            path_with_query: "/x?y=1".into(),
            headers: vec![
                Header { name: "a".into(), value: b"1".to_vec() },
                Header { name: "a".into(), value: b"2".to_vec() },
            ],
            body: vec![0, 1, 2, 255],
            body_stream: Some("s1".into()),
        };
        assert_eq!(decode::<HttpRequest>(&encode(&req).unwrap()).unwrap(), req);
        let resp = HttpResponse { status: 204, headers: vec![], body: vec![], body_stream: None };
        assert_eq!(decode::<HttpResponse>(&encode(&resp).unwrap()).unwrap(), resp);
        assert!(decode::<HttpRequest>(b"\x80").is_err());
        assert!(decode::<HttpResponse>(b"garbage").is_err());

        let out = OutgoingRequest {
            request: req,
            connect_timeout_ms: Some(500),
            first_byte_timeout_ms: None,
            between_bytes_timeout_ms: Some(100),
        };
        assert_eq!(decode::<OutgoingRequest>(&encode(&out).unwrap()).unwrap(), out);
        let failed = OutgoingResponse {
            response: None,
            error: Some(HttpError::new(HttpErrorCode::HttpRequestDenied, "example.com is not allowed")),
        };
        let bytes = encode(&failed).unwrap();
        assert_eq!(decode::<OutgoingResponse>(&bytes).unwrap(), failed);
        assert!(bytes.windows(19).any(|w| w == b"http-request-denied"), "codes are kebab case on the wire");
        assert!(decode::<OutgoingRequest>(b"\x91\x01").is_err());
        assert!(decode::<OutgoingResponse>(&[0xc1]).is_err());
    }
}
