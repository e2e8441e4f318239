//! Payloads of `wasi:http/incoming-handler` invocations: a request in, a response out. A body
//! travels inline when it is small; a larger one starts inline and continues as a pulled stream
//! ([`crate::stream`]) named by `body_stream`.

use serde::{Deserialize, Serialize};

/// Operation name of an incoming HTTP request delivered to a component.
pub const OP_HANDLE: &str = "wasi:http/incoming-handler.handle";
/// WIT namespace of HTTP.
pub const WIT_NAMESPACE: &str = "wasi";
/// WIT package of HTTP.
pub const WIT_PACKAGE: &str = "http";
/// WIT interface a component exports to serve HTTP.
pub const WIT_INTERFACE: &str = "incoming-handler";

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
    }
}
