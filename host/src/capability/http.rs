//! `wasi:http/outgoing-handler`: a component's outgoing request becomes one invocation to the
//! http-client provider linked for the interface (under the link name in force when the
//! request is sent), bodies streamed both ways. With no link the request is
//! `HTTP-request-denied`, as before there was a provider.

use std::{future::Future, sync::Arc};

use ferry_lattice::http::{attach_body, request_head, response_from_wire};
use ferry_proto::{
    ErrorKind, RpcError, codec,
    http::{
        HttpErrorCode, OP_OUTGOING_HANDLE, OUTGOING_INTERFACE, OutgoingRequest, OutgoingResponse, WIT_NAMESPACE,
        WIT_PACKAGE,
    },
    stream::DEFAULT_CHUNK_SIZE,
};
use http_body_util::BodyExt as _;
use tracing::debug;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

use crate::state::{Causes, ComponentEnv};

/// What a request needs to find its provider: kept by the instance, the link name updated by
/// `wasmcloud:bus/lattice`.
pub(crate) struct OutgoingHttp {
    env: Arc<ComponentEnv>,
    /// The link name in force for `wasi:http/outgoing-handler`.
    pub(crate) link_name: String,
    causes: Causes,
    deadline_ms: u64,
}

impl OutgoingHttp {
    pub(crate) fn new(env: Arc<ComponentEnv>, causes: Causes, deadline_ms: u64) -> Self {
        Self { env, link_name: ferry_proto::link::DEFAULT_LINK_NAME.to_owned(), causes, deadline_ms }
    }
}

type Sent = Result<(http::Response<WasiBody>, Box<dyn Future<Output = Result<(), Error>> + Send>), Error>;

impl WasiHttpHooks for OutgoingHttp {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> Box<dyn Future<Output = Sent> + Send> {
        let component = self.env.id.clone();
        if self.env.granted(WIT_NAMESPACE, WIT_PACKAGE, OUTGOING_INTERFACE).is_err() {
            return Box::new(async { Err(Error::HttpRequestDenied) });
        }
        let target =
            self.env.lattice.target_of(&component, &self.link_name, WIT_NAMESPACE, WIT_PACKAGE, OUTGOING_INTERFACE);
        let Some(target) = target else {
            debug!(%component, link = %self.link_name, "outgoing HTTP request with no http-client link");
            return Box::new(async { Err(Error::HttpRequestDenied) });
        };
        let call = Call {
            env: self.env.clone(),
            target,
            link_name: self.link_name.clone(),
            cause: self.causes.of(OP_OUTGOING_HANDLE),
            trace_context: self.causes.trace_context(),
            deadline_ms: self.deadline_ms,
        };
        Box::new(async move {
            let response = call.send(request, options).await?;
            Ok((response, Box::new(async { Ok(()) }) as Box<dyn Future<Output = _> + Send>))
        })
    }
}

/// One outgoing request, resolved before the first `await`.
struct Call {
    env: Arc<ComponentEnv>,
    target: String,
    link_name: String,
    cause: String,
    /// The trace context the call carries.
    trace_context: std::collections::BTreeMap<String, String>,
    deadline_ms: u64,
}

impl Call {
    async fn send(
        self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
    ) -> Result<http::Response<WasiBody>, Error> {
        let rpc = &self.env.rpc;
        // A request to a slow server may take longer than a capability call: it may take as
        // long as the invocation being served has left (the host's RPC timeout when it has no
        // deadline), for the head and for each part of either body.
        let left = self.deadline_ms.saturating_sub(ferry_proto::time::now_ms());
        let wait = if left > 0 { std::time::Duration::from_millis(left) } else { rpc.timeout() };
        let (parts, body) = request.into_parts();
        let mut head = request_head(&parts);
        let (mut inv, key) = rpc.prepare(&self.env.id, &self.target, &self.link_name, OP_OUTGOING_HANDLE);
        let offer = attach_body(rpc.nats(), rpc.lattice(), &mut head, body, &key, DEFAULT_CHUNK_SIZE, wait)
            .await
            .map_err(|e| internal(&e))?;
        let ms = |d: Option<std::time::Duration>| d.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let outgoing = OutgoingRequest {
            request: head,
            connect_timeout_ms: ms(options.and_then(|o| o.connect_timeout)),
            first_byte_timeout_ms: ms(options.and_then(|o| o.first_byte_timeout)),
            between_bytes_timeout_ms: ms(options.and_then(|o| o.between_bytes_timeout)),
        };
        inv.payload = codec::encode(&outgoing).map_err(|e| internal(&RpcError::from(e)))?;
        inv.cause = self.cause;
        inv.trace_context = self.trace_context;
        inv.deadline_ms = self.deadline_ms;
        let answer = rpc.send(inv, &key, wait).await;
        let answer = answer.and_then(|bytes| {
            codec::decode::<OutgoingResponse>(&bytes)
                .map_err(|e| RpcError::bad_request(format!("http-client answered with an undecodable payload: {e}")))
        });
        let answer = match answer {
            Ok(answer) => answer,
            Err(err) => {
                if let Some(offer) = offer {
                    offer.abort();
                }
                return Err(from_rpc(&err));
            }
        };
        match (answer.response, answer.error) {
            (Some(response), None) => {
                let response =
                    response_from_wire(rpc.nats(), rpc.lattice(), response, &key, wait).map_err(|e| internal(&e))?;
                Ok(response.map(|body| body.map_err(|e| internal(&e)).boxed_unsync()))
            }
            (_, Some(error)) => {
                debug!(component = %self.env.id, code = error.code.as_str(), cause = %error.message, "outgoing HTTP request failed");
                Err(from_code(error.code, error.message))
            }
            (None, None) => {
                Err(Error::InternalError(Some("http-client answered neither a response nor an error".into())))
            }
        }
    }
}

/// The provider's error code as the component sees it.
fn from_code(code: HttpErrorCode, message: String) -> Error {
    match code {
        HttpErrorCode::DnsTimeout => Error::DnsTimeout,
        HttpErrorCode::DnsError => Error::DnsError { rcode: Some(message), info_code: None },
        HttpErrorCode::DestinationNotFound => Error::DestinationNotFound,
        HttpErrorCode::DestinationUnavailable => Error::DestinationUnavailable,
        HttpErrorCode::ConnectionRefused => Error::ConnectionRefused,
        HttpErrorCode::ConnectionTerminated => Error::ConnectionTerminated,
        HttpErrorCode::ConnectionTimeout => Error::ConnectionTimeout,
        HttpErrorCode::ConnectionReadTimeout => Error::ConnectionReadTimeout,
        HttpErrorCode::ConnectionWriteTimeout => Error::ConnectionWriteTimeout,
        HttpErrorCode::TlsProtocolError => Error::TlsProtocolError,
        HttpErrorCode::TlsCertificateError => Error::TlsCertificateError,
        HttpErrorCode::HttpRequestDenied => Error::HttpRequestDenied,
        HttpErrorCode::HttpRequestUriInvalid => Error::HttpRequestUriInvalid,
        HttpErrorCode::HttpRequestMethodInvalid => Error::HttpRequestMethodInvalid,
        HttpErrorCode::HttpResponseIncomplete => Error::HttpResponseIncomplete,
        HttpErrorCode::HttpResponseTimeout => Error::HttpResponseTimeout,
        HttpErrorCode::HttpProtocolError => Error::HttpProtocolError,
        HttpErrorCode::ConfigurationError => Error::ConfigurationError,
        _ => Error::InternalError(Some(message)),
    }
}

/// A failed invocation as an HTTP error code: a refusal is `HTTP-request-denied`, a provider
/// that did not answer in time `connection-read-timeout`.
fn from_rpc(err: &RpcError) -> Error {
    match err.kind {
        ErrorKind::NotLinked | ErrorKind::Denied => Error::HttpRequestDenied,
        ErrorKind::Timeout => Error::ConnectionReadTimeout,
        _ => internal(err),
    }
}

fn internal(err: &RpcError) -> Error {
    Error::InternalError(Some(err.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_reaches_the_component_as_its_own_case() {
        assert!(matches!(from_code(HttpErrorCode::HttpRequestDenied, String::new()), Error::HttpRequestDenied));
        assert!(matches!(from_code(HttpErrorCode::ConnectionRefused, String::new()), Error::ConnectionRefused));
        assert!(matches!(
            from_code(HttpErrorCode::InternalError, "boom".into()),
            Error::InternalError(Some(m)) if m == "boom"
        ));
        assert!(matches!(from_rpc(&RpcError::not_linked("x")), Error::HttpRequestDenied));
        assert!(matches!(from_rpc(&RpcError::new(ErrorKind::Timeout, "x")), Error::ConnectionReadTimeout));
    }
}
