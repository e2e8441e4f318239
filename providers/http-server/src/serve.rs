//! One HTTP connection and the requests on it: route, limit, deliver through the lattice,
//! answer with the component's response or a status that says what went wrong.

use std::{
    convert::Infallible,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use ferry_provider_sdk::{
    ErrorKind, LatticeBody, LatticeClient, RpcError,
    http::HttpCallOptions,
    trace::{self, TRACEPARENT, TraceParent},
};
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt as _, Full, combinators::BoxBody};
use hyper::{body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{io::AsyncWriteExt as _, net::TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::{
    config::normalize_host,
    router::{RouteTable, select},
};

/// Time a client gets to send a request's headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest time spent reading and discarding a rejected request body. A client that keeps
/// sending after an early answer (many do) would otherwise meet a reset connection and lose the
/// 413; reading on for a while lets it see the answer (nginx calls this a lingering close).
const LINGER_TIME: Duration = Duration::from_secs(5);
/// Most bytes of a rejected request body read and discarded before the connection is closed.
const LINGER_BYTES: u64 = 64 * 1024 * 1024;

/// The response body: a component's streamed body or a short message from the provider.
pub(crate) type ResponseBody = BoxBody<Bytes, RpcError>;

/// What every connection of one listener shares.
pub(crate) struct Shared {
    pub(crate) routes: RouteTable,
    pub(crate) client: LatticeClient,
    /// Longest pause while reading a request body ([`crate::config::Settings::body_idle`]).
    pub(crate) body_idle: Duration,
    /// The listener serves HTTPS: components see `https` requests.
    pub(crate) https: bool,
}

/// Answer a connection over the limit with a 503 and close it, without reading its request.
pub(crate) async fn refuse(mut stream: TcpStream) {
    const ANSWER: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: 28\r\n\r\ntoo many connections; retry\n";
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        let _ = stream.write_all(ANSWER).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

/// Serve HTTP/1.1 on one connection until the client leaves or `stop` asks for a graceful close
/// (in-flight requests finish, idle keep-alive ends).
pub(crate) async fn connection<S>(stream: S, peer: SocketAddr, shared: Arc<Shared>, stop: CancellationToken)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |request| {
        let shared = shared.clone();
        async move { Ok::<_, Infallible>(handle(&shared, request).await) }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        () = stop.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(err) = result {
        debug!(peer = %peer, cause = %err, "connection ended with an error");
    }
}

async fn handle(shared: &Shared, request: Request<Incoming>) -> Response<ResponseBody> {
    let authority = ferry_provider_sdk::http::request_authority(request.uri(), request.headers()).map(str::to_owned);
    let host = authority.as_deref().and_then(normalize_host);
    let path = request.uri().path().to_owned();
    let route = {
        let routes = shared.routes.read().unwrap_or_else(|p| p.into_inner());
        select(&routes, host.as_deref(), &path)
    };
    let Some(route) = route else {
        debug!(host = host.as_deref().unwrap_or("-"), path = %path, "no route");
        return status(StatusCode::NOT_FOUND, "no route for this host and path");
    };
    let origin = request.headers().get(header::ORIGIN).cloned();
    if let Some(cors) = &route.config.cors
        && let Some((code, headers)) = cors.preflight(request.method(), request.headers())
    {
        let mut response = status(code, "");
        response.headers_mut().extend(headers);
        return response;
    }
    let mut response = deliver(shared, &route, request, authority.as_deref(), &path).await;
    if let Some(cors) = &route.config.cors {
        cors.decorate(origin.as_ref(), response.headers_mut());
    }
    if let Some(cache_control) = &route.config.cache_control {
        response.headers_mut().append(header::CACHE_CONTROL, cache_control.clone());
    }
    response
}

/// The component's answer to `request` on `route`, or the status that says why there is none.
async fn deliver(
    shared: &Shared,
    route: &crate::router::Route,
    request: Request<Incoming>,
    authority: Option<&str>,
    path: &str,
) -> Response<ResponseBody> {
    if route.config.readonly && request.method() != http::Method::GET && request.method() != http::Method::HEAD {
        debug!(component = %route.component(), method = %request.method(), "read-only route refused a method");
        linger(request.into_body());
        let mut response = status(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD allowed in read-only mode");
        response.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    let mut request = request;
    if shared.https
        && let Some(authority) = authority
        && let Ok(authority) = http::uri::Authority::try_from(authority)
    {
        let mut parts = request.uri().clone().into_parts();
        parts.scheme = Some(http::uri::Scheme::HTTPS);
        parts.authority = Some(authority);
        if let Ok(uri) = http::Uri::from_parts(parts) {
            *request.uri_mut() = uri;
        }
    }
    let path = path.to_owned();
    let limit = route.config.max_body;
    let declared = request.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit) {
        // A client waiting for `100 Continue` has sent nothing yet and will not: no need to read.
        let expects_continue =
            request.headers().get(header::EXPECT).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
        if !expects_continue {
            linger(request.into_body());
        }
        return too_large(route.component(), &path, limit);
    }
    let over_limit = CancellationToken::new();
    let stalled = CancellationToken::new();
    let idle = shared.body_idle;
    let request = request.map(|body| Limited {
        inner: Some(body),
        left: limit,
        limit,
        over: over_limit.clone(),
        idle,
        pause: Box::pin(tokio::time::sleep(idle)),
        stalled: stalled.clone(),
    });
    let mut options = HttpCallOptions::new(route.config.timeout);
    options.link_name = route.link_name().to_owned();
    // A request that carries a trace continues it: this provider's span is the component
    // call's parent, and the response names it.
    // Without one, a request starts a trace when spans are exported.
    let caller = request.headers().get(TRACEPARENT).and_then(|v| v.to_str().ok()).and_then(TraceParent::parse);
    let (traced, span) = if caller.is_some() || trace::exporting() {
        let traced = tracing::info_span!(
            "request",
            otel.name = %format_args!("{} {}", request.method(), route.component()),
            otel.kind = "server",
            trace_id = tracing::field::Empty,
            span_id = tracing::field::Empty,
            component = %route.component(),
            method = %request.method(),
        );
        let span = trace::follow(&traced, caller);
        (traced, span)
    } else {
        (tracing::Span::none(), None)
    };
    options.trace = span;
    let guards = BodyGuards { over_limit, stalled, idle, limit };
    let mut response =
        tracing::Instrument::instrument(call_component(shared, route, request, options, &path, &guards), traced).await;
    if let Some(span) = span
        && let Ok(value) = HeaderValue::from_str(&span.to_string())
    {
        response.headers_mut().insert(TRACEPARENT, value);
    }
    response
}

/// What watches a request body while the component reads it: its size limit and its pauses.
struct BodyGuards {
    over_limit: CancellationToken,
    stalled: CancellationToken,
    idle: Duration,
    limit: u64,
}

/// Call the route's component with the request and turn its answer (or failure) into the
/// response.
async fn call_component(
    shared: &Shared,
    route: &crate::router::Route,
    request: Request<Limited>,
    options: HttpCallOptions,
    path: &str,
    guards: &BodyGuards,
) -> Response<ResponseBody> {
    let BodyGuards { over_limit, stalled, idle, limit } = guards;
    let (idle, limit) = (*idle, *limit);

    let call =
        tokio::time::timeout(route.config.timeout, shared.client.call_http(route.component(), request, &options));
    let answer = tokio::select! {
        answer = call => answer,
        () = over_limit.cancelled() => {
            return too_large(route.component(), path, limit);
        }
        () = stalled.cancelled() => {
            return stalled_body(route.component(), path, idle);
        }
    };
    match answer {
        Ok(Ok(response)) => {
            debug!(component = %route.component(), path = %path, status = response.status().as_u16(), "request answered");
            response.map(|body: LatticeBody| body.boxed())
        }
        Ok(Err(_)) if over_limit.is_cancelled() => too_large(route.component(), path, limit),
        Ok(Err(_)) if stalled.is_cancelled() => stalled_body(route.component(), path, idle),
        Ok(Err(err)) => {
            // The details stay in the log; the client gets the kind and an id to quote.
            let code = status_of(&err);
            let request_id = uuid::Uuid::new_v4().simple().to_string();
            warn!(component = %route.component(), path = %path, status = code.as_u16(), kind = ?err.kind, %request_id, cause = %err.message, "request failed");
            status(
                code,
                &format!(
                    "{}: {} (request {request_id})",
                    code.canonical_reason().unwrap_or("error"),
                    err.kind.as_wit_prefix()
                ),
            )
        }
        Err(_) => {
            warn!(component = %route.component(), path = %path, timeout = ?route.config.timeout, "request timed out");
            status(StatusCode::GATEWAY_TIMEOUT, "the component did not answer in time")
        }
    }
}

/// The status that tells a client what kind of failure it met.
fn status_of(err: &RpcError) -> StatusCode {
    match err.kind {
        ErrorKind::Timeout => StatusCode::GATEWAY_TIMEOUT,
        ErrorKind::ComponentTrap => StatusCode::INTERNAL_SERVER_ERROR,
        ErrorKind::BadRequest => StatusCode::BAD_REQUEST,
        ErrorKind::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorKind::NotLinked | ErrorKind::Unavailable | ErrorKind::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::BAD_GATEWAY,
    }
}

fn status(code: StatusCode, message: &str) -> Response<ResponseBody> {
    let mut response =
        Response::new(Full::new(Bytes::from(format!("{message}\n"))).map_err(|never| match never {}).boxed());
    *response.status_mut() = code;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

/// The 413 answer, logged. The connection closes after it: the rest of the rejected body is not
/// read as the next request.
fn too_large(component: &str, path: &str, limit: u64) -> Response<ResponseBody> {
    warn!(component, path, limit, "request body over the limit");
    let mut response = status(StatusCode::PAYLOAD_TOO_LARGE, &format!("request body is larger than {limit} bytes"));
    response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// The 408 answer to a request whose body stopped arriving, logged; the connection closes.
fn stalled_body(component: &str, path: &str, idle: Duration) -> Response<ResponseBody> {
    warn!(component, path, idle = ?idle, "request body stalled");
    let mut response = status(StatusCode::REQUEST_TIMEOUT, &format!("no request body data for {idle:?}"));
    response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// Read and discard what is left of a rejected request body, within [`LINGER_TIME`] and
/// [`LINGER_BYTES`], so the connection closes after the client has read the answer rather than
/// being reset under it.
fn linger(mut body: Incoming) {
    tokio::spawn(async move {
        let mut read = 0u64;
        let drain = async {
            while let Some(Ok(frame)) = body.frame().await {
                read += frame.data_ref().map_or(0, |d| d.len() as u64);
                if read > LINGER_BYTES {
                    break;
                }
            }
        };
        if tokio::time::timeout(LINGER_TIME, drain).await.is_err() {
            debug!(read, "stopped reading a rejected request body: time is up");
        }
    });
}

/// A request body that fails, and says so, once it passes its size limit (the rest of the body
/// is then read and discarded apart, [`linger`]) or once no data has come for `idle`.
struct Limited {
    inner: Option<Incoming>,
    left: u64,
    limit: u64,
    over: CancellationToken,
    idle: Duration,
    /// Fires when the body has paused for `idle`; reset by every frame.
    pause: Pin<Box<tokio::time::Sleep>>,
    stalled: CancellationToken,
}

impl Body for Limited {
    type Data = Bytes;
    type Error = String;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, String>>> {
        let this = &mut *self;
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = Pin::new(inner).poll_frame(cx);
        if polled.is_pending() {
            if this.pause.as_mut().poll(cx).is_ready() {
                this.inner = None;
                this.stalled.cancel();
                return Poll::Ready(Some(Err(format!("no request body data for {:?}", this.idle))));
            }
            return Poll::Pending;
        }
        let deadline = tokio::time::Instant::now() + this.idle;
        this.pause.as_mut().reset(deadline);
        let frame = match std::task::ready!(polled) {
            None => return Poll::Ready(None),
            Some(Err(err)) => return Poll::Ready(Some(Err(format!("reading the request body failed: {err}")))),
            Some(Ok(frame)) => frame,
        };
        if let Some(data) = frame.data_ref() {
            let len = data.len() as u64;
            if len > self.left {
                self.over.cancel();
                if let Some(rest) = self.inner.take() {
                    linger(rest);
                }
                return Poll::Ready(Some(Err(format!("request body is larger than {} bytes", self.limit))));
            }
            self.left -= len;
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.as_ref().map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}
