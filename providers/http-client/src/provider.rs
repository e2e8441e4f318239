//! The http-client provider: a pooled hyper client per link (its connect timeout), the link's
//! allowed hosts checked before any connection, and bodies streamed both ways.

use std::{
    sync::{Arc, OnceLock},
    time::Duration,
};

use bytes::Bytes;
use ferry_provider_sdk::{
    ErrorKind, InvocationContext, LatticeBody, LinkPut, Provider, ProviderContext, RpcError,
    http_client::{
        self, HttpError, HttpErrorCode, OUTGOING_INTERFACE, OutgoingHttp, RequestTimeouts, WIT_NAMESPACE, WIT_PACKAGE,
    },
};
use futures::StreamExt as _;
use http_body_util::BodyExt as _;
use hyper_rustls::HttpsConnector;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use tracing::{info, warn};

use crate::{
    config::{LinkSettings, POOL_IDLE, TlsSettings},
    errors,
};

type HttpClient = Client<HttpsConnector<HttpConnector>, LatticeBody>;

/// Serves `wasi:http/outgoing-handler` for every link to it.
#[derive(Default)]
pub(crate) struct HttpClientProvider {
    /// The TLS client config, built from the start-up config on first use.
    tls: OnceLock<Result<Arc<rustls::ClientConfig>, String>>,
}

/// A link's state: its settings and its connection pool.
pub(crate) struct LinkClient {
    settings: LinkSettings,
    client: HttpClient,
}

impl HttpClientProvider {
    fn tls(&self, ctx: &ProviderContext) -> Result<Arc<rustls::ClientConfig>, String> {
        self.tls.get_or_init(|| load_tls(ctx)).clone()
    }
}

/// The trusted roots the start-up config asks for, as a rustls client config.
fn load_tls(ctx: &ProviderContext) -> Result<Arc<rustls::ClientConfig>, String> {
    let settings = TlsSettings::from_config(ctx.config()).map_err(|e| format!("invalid provider config: {e}"))?;
    let mut roots = rustls::RootCertStore::empty();
    if settings.native {
        let found = rustls_native_certs::load_native_certs();
        for err in &found.errors {
            warn!(cause = %err, "a system certificate could not be read");
        }
        let (added, ignored) = roots.add_parsable_certificates(found.certs);
        info!(added, ignored, "system root certificates loaded");
    }
    if let Some(path) = &settings.extra {
        use rustls::pki_types::{CertificateDer, pem::PemObject as _};
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| format!("cannot read ssl_certs_file {}: {e}", path.display()))?;
        let (added, ignored) = roots.add_parsable_certificates(certs);
        info!(added, ignored, file = %path.display(), "extra root certificates loaded");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS set-up failed: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

impl Provider for HttpClientProvider {
    type Link = LinkClient;

    async fn handle(
        &self,
        ctx: InvocationContext<LinkClient>,
        operation: &str,
        payload: Vec<u8>,
    ) -> Result<Vec<u8>, RpcError> {
        http_client::dispatch(self, &ctx, operation, &payload).await
    }

    async fn on_link_put(&self, ctx: &ProviderContext, put: &LinkPut) -> Result<LinkClient, String> {
        let link = &put.link;
        if !link.covers(WIT_NAMESPACE, WIT_PACKAGE, OUTGOING_INTERFACE) || link.target_id != ctx.provider_id() {
            return Err("link components to this provider over wasi:http/outgoing-handler".into());
        }
        let settings = LinkSettings::from_link(&put.target_config)?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(settings.connect_timeout));
        http.set_nodelay(true);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config((*self.tls(ctx)?).clone())
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new()).pool_idle_timeout(POOL_IDLE).build(https);
        info!(
            component = %link.source_id,
            name = %link.name,
            allowed = settings.allowed.as_ref().map_or_else(|| "any host".to_owned(), |a| format!("{} patterns", a.len())),
            "http-client link ready"
        );
        Ok(LinkClient { settings, client })
    }
}

impl OutgoingHttp for HttpClientProvider {
    async fn send(
        &self,
        ctx: &InvocationContext<LinkClient>,
        request: http::Request<LatticeBody>,
        timeouts: RequestTimeouts,
    ) -> Result<http::Response<ferry_provider_sdk::ByteStream>, HttpError> {
        let link = &ctx.state.settings;
        let uri = request.uri();
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            other => {
                return Err(HttpError::new(
                    HttpErrorCode::HttpProtocolError,
                    format!("scheme {other:?} is not http or https"),
                ));
            }
        };
        let host = uri.host().unwrap_or_default().to_owned();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        if !link.allows(&host, port) {
            warn!(component = %ctx.origin, %host, port, "outgoing request refused: not in the link's allowed_hosts");
            return Err(HttpError::new(
                HttpErrorCode::HttpRequestDenied,
                format!("{host}:{port} is not in the link's allowed_hosts"),
            ));
        }
        // The head must arrive within the first-byte time, connecting included (connecting
        // alone is bounded by the link's connect timeout: connections are pooled per link), and
        // before the caller stops waiting.
        let mut head_time = timeouts.first_byte.unwrap_or(link.first_byte_timeout);
        if let Some(deadline) = ctx.deadline {
            head_time = head_time.min(deadline.saturating_duration_since(tokio::time::Instant::now()));
        }
        let between = timeouts.between_bytes.unwrap_or(link.between_bytes_timeout);
        let method = request.method().clone();
        let response = match tokio::time::timeout(head_time, ctx.state.client.request(request)).await {
            Err(_) => {
                return Err(HttpError::new(
                    HttpErrorCode::ConnectionReadTimeout,
                    format!("no response from {host}:{port} within {head_time:?}"),
                ));
            }
            Ok(Err(err)) => {
                let error = errors::from_client(&err);
                info!(component = %ctx.origin, %method, %host, port, code = error.code.as_str(), cause = %error.message, "outgoing request failed");
                return Err(error);
            }
            Ok(Ok(response)) => response,
        };
        Ok(response.map(|body| paced(body, between)))
    }
}

/// The response body as a stream whose every part must come within `between` of the last.
fn paced(body: hyper::body::Incoming, between: Duration) -> ferry_provider_sdk::ByteStream {
    let parts = futures::stream::unfold(Some(body), move |body| async move {
        let mut body = body?;
        loop {
            return match tokio::time::timeout(between, body.frame()).await {
                Err(_) => Some((
                    Err(RpcError::new(
                        ErrorKind::Timeout,
                        format!("the response body paused for more than {between:?}"),
                    )),
                    None,
                )),
                Ok(None) => None,
                Ok(Some(Err(err))) => Some((Err(RpcError::provider(format!("the response body failed: {err}"))), None)),
                Ok(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) if data.is_empty() => continue,
                    Ok(data) => Some((Ok::<Bytes, RpcError>(data), Some(body))),
                    // Trailers: not forwarded.
                    Err(_) => continue,
                },
            };
        }
    });
    parts.boxed()
}
