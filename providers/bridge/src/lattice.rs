//! The `Lattice` service the bridge offers the foreign process: deliver messages and HTTP
//! requests to components linked from this provider, and read the provider's links and
//! config. Calls go out as this provider, so the host checks each against the lattice's links
//! like any provider's; HTTP bodies stream both ways without being held whole.

use std::{pin::Pin, time::Duration};

use bytes::Bytes;
use ferry_provider_sdk::{
    ProviderContext, RpcError,
    grpc::{
        self,
        v1::{self, lattice_server},
    },
    http::HttpCallOptions,
    messaging::{self, BrokerMessage},
};
use futures::{Stream, StreamExt as _, stream};
use http_body_util::StreamBody;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};
use tracing::warn;

use crate::{config::Address, foreign::link_of};

/// The service, with the provider's context to call out with.
pub(crate) struct LatticeService {
    ctx: ProviderContext,
}

impl LatticeService {
    pub(crate) fn new(ctx: ProviderContext) -> Self {
        Self { ctx }
    }

    /// A request's time limit: its own when set, else the provider's RPC timeout.
    fn limit(&self, timeout_ms: u32) -> Duration {
        if timeout_ms == 0 { self.ctx.client().timeout() } else { Duration::from_millis(timeout_ms.into()) }
    }
}

fn link_name(name: String) -> String {
    if name.is_empty() { ferry_provider_sdk::DEFAULT_LINK_NAME.to_owned() } else { name }
}

/// What `HandleHttp` answers: the response's head, then its body's pieces.
type ResponseParts = Pin<Box<dyn Stream<Item = Result<v1::HttpResponsePart, Status>> + Send>>;

#[tonic::async_trait]
impl lattice_server::Lattice for LatticeService {
    async fn handle_message(&self, request: Request<v1::HandleMessageRequest>) -> Result<Response<v1::Empty>, Status> {
        let request = request.into_inner();
        let message = request.message.ok_or_else(|| Status::invalid_argument("HandleMessage needs a message"))?;
        let message = BrokerMessage { subject: message.subject, body: message.body, reply_to: message.reply_to };
        let component = request.component_id;
        let link = link_name(request.link_name);
        messaging::deliver(self.ctx.client(), &component, &link, &message, Some(self.limit(request.timeout_ms)))
            .await
            .map_err(|err| grpc::to_status(&err))?;
        Ok(Response::new(v1::Empty {}))
    }

    type HandleHttpStream = ResponseParts;

    async fn handle_http(
        &self,
        request: Request<Streaming<v1::HttpRequestPart>>,
    ) -> Result<Response<ResponseParts>, Status> {
        let mut parts = request.into_inner();
        let head = match parts.message().await? {
            Some(v1::HttpRequestPart { part: Some(v1::http_request_part::Part::Head(head)) }) => head,
            _ => return Err(Status::invalid_argument("HandleHttp's first message must be the request's head")),
        };
        let body = parts.filter_map(|part| async move {
            match part {
                Ok(v1::HttpRequestPart { part: Some(v1::http_request_part::Part::Body(bytes)) }) => {
                    Some(Ok(http_body::Frame::data(Bytes::from(bytes))))
                }
                Ok(_) => Some(Err(RpcError::bad_request("HandleHttp sent a second head"))),
                Err(status) => Some(Err(grpc::from_status(&status))),
            }
        });
        let mut builder = http::Request::builder().method(head.method.as_str()).uri(format!(
            "{}://{}{}",
            if head.scheme.is_empty() { "http" } else { head.scheme.as_str() },
            if head.authority.is_empty() { "localhost" } else { head.authority.as_str() },
            head.path_with_query
        ));
        for header in head.headers {
            builder = builder.header(header.name, header.value);
        }
        let request = builder
            .body(StreamBody::new(body))
            .map_err(|e| Status::invalid_argument(format!("invalid HTTP request: {e}")))?;
        let options = HttpCallOptions {
            link_name: link_name(head.link_name),
            timeout: self.limit(head.timeout_ms),
            ..HttpCallOptions::new(self.ctx.client().timeout())
        };
        let response = self
            .ctx
            .client()
            .call_http(&head.component_id, request, &options)
            .await
            .map_err(|err| grpc::to_status(&err))?;
        let (parts, body) = response.into_parts();
        let head = v1::HttpResponseHead {
            status: parts.status.as_u16().into(),
            headers: parts
                .headers
                .iter()
                .map(|(name, value)| v1::HttpHeader { name: name.to_string(), value: value.as_bytes().to_vec() })
                .collect(),
        };
        let head = stream::iter([Ok(v1::HttpResponsePart { part: Some(v1::http_response_part::Part::Head(head)) })]);
        let body = body.map(|piece| match piece {
            Ok(bytes) => Ok(v1::HttpResponsePart { part: Some(v1::http_response_part::Part::Body(bytes.to_vec())) }),
            Err(err) => Err(grpc::to_status(&err)),
        });
        Ok(Response::new(Box::pin(head.chain(body))))
    }

    async fn list_links(&self, _: Request<v1::ListLinksRequest>) -> Result<Response<v1::ListLinksResponse>, Status> {
        let links = self.ctx.links().all().iter().map(|put| link_of(put)).collect();
        Ok(Response::new(v1::ListLinksResponse { links }))
    }

    async fn get_config(&self, _: Request<v1::GetConfigRequest>) -> Result<Response<v1::GetConfigResponse>, Status> {
        let config = self.ctx.config().clone().into_iter().collect();
        Ok(Response::new(v1::GetConfigResponse { config }))
    }
}

/// Where the service listens, bound before the foreign process starts.
pub(crate) enum Listener {
    Unix(tokio::net::UnixListener),
    Tcp(tokio::net::TcpListener),
}

/// Listen at `address` (a stale socket file there is replaced).
///
/// # Errors
/// When the address cannot be listened on.
pub(crate) async fn bind(address: &Address) -> Result<Listener, String> {
    let listener = match address {
        Address::Unix(path) => {
            let _ = std::fs::remove_file(path);
            tokio::net::UnixListener::bind(path).map(Listener::Unix)
        }
        Address::Tcp(hostport) => tokio::net::TcpListener::bind(hostport).await.map(Listener::Tcp),
    };
    listener.map_err(|e| format!("cannot serve the Lattice service on {address}: {e}"))
}

/// Serve the service on `listener` until `stop`.
pub(crate) async fn serve(listener: Listener, ctx: ProviderContext, stop: CancellationToken) {
    let service = lattice_server::LatticeServer::new(LatticeService::new(ctx))
        .max_decoding_message_size(crate::foreign::MAX_MESSAGE)
        .max_encoding_message_size(crate::foreign::MAX_MESSAGE);
    let router = tonic::transport::Server::builder().add_service(service);
    let shutdown = stop.cancelled_owned();
    let served = match listener {
        Listener::Unix(listener) => {
            let incoming = stream::unfold(listener, |listener| async move {
                Some((listener.accept().await.map(|(stream, _)| stream), listener))
            });
            router.serve_with_incoming_shutdown(incoming, shutdown).await
        }
        Listener::Tcp(listener) => {
            let incoming = stream::unfold(listener, |listener| async move {
                Some((listener.accept().await.map(|(stream, _)| stream), listener))
            });
            router.serve_with_incoming_shutdown(incoming, shutdown).await
        }
    };
    if let Err(err) = served {
        warn!(cause = %err, "the Lattice service stopped");
    }
}
