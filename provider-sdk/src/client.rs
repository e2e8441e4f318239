//! Calling components (and other targets) on the lattice as a provider: signed invocations,
//! verified responses, typed errors.

use std::{fmt, sync::Arc, time::Duration};

use ferry_proto::{
    ErrorKind, RpcError,
    auth::{MacKey, ProviderCredential},
    codec,
    envelope::{Invocation, InvocationResponse},
    http::{HttpRequest, HttpResponse, OP_HANDLE},
    subject,
};

use crate::{
    SdkError,
    http::{self, HttpCallOptions, LatticeBody},
    overflow,
    request::{RequestFailure, Requester},
    stream,
};

/// Default timeout of an invocation when neither the start-up data nor the caller sets one.
pub const DEFAULT_RPC_TIMEOUT: Duration = Duration::from_secs(10);

/// A signed connection to a lattice under one provider identity.
#[derive(Clone)]
pub struct LatticeClient {
    inner: Arc<Inner>,
}

struct Inner {
    nats: async_nats::Client,
    /// Request/reply that waits for an authentic answer.
    requester: Requester,
    lattice: String,
    credential: ProviderCredential,
    timeout: Duration,
}

impl fmt::Debug for LatticeClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LatticeClient")
            .field("lattice", &self.inner.lattice)
            .field("origin", &self.origin())
            .field("timeout", &self.inner.timeout)
            .finish_non_exhaustive()
    }
}

impl LatticeClient {
    /// A client on an existing NATS connection, calling as the credential's provider.
    ///
    /// # Errors
    /// [`SdkError::Startup`] when the credential is for another lattice.
    pub fn new(
        nats: async_nats::Client,
        lattice: &str,
        credential: ProviderCredential,
        timeout: Option<Duration>,
    ) -> Result<Self, SdkError> {
        subject::validate_id("lattice", lattice)?;
        if credential.lattice() != lattice {
            return Err(SdkError::Startup(format!(
                "credential is for lattice {:?}, not {lattice:?}",
                credential.lattice()
            )));
        }
        Ok(Self {
            inner: Arc::new(Inner {
                requester: Requester::new(nats.clone()),
                nats,
                lattice: lattice.to_owned(),
                credential,
                timeout: timeout.unwrap_or(DEFAULT_RPC_TIMEOUT),
            }),
        })
    }

    /// Connect to NATS at `url` and build a client.
    ///
    /// # Errors
    /// [`SdkError::Nats`] when NATS is unreachable, [`SdkError::Startup`] for a bad credential.
    pub async fn connect(
        url: &str,
        lattice: &str,
        credential: &str,
        timeout: Option<Duration>,
    ) -> Result<Self, SdkError> {
        let credential = ProviderCredential::parse(credential)?;
        let nats = crate::nats::connect_options(format!("ferry-client-{}", credential.provider_id()))
            .connect(url)
            .await
            .map_err(|e| SdkError::Nats(format!("cannot connect to {}: {e}", ferry_proto::redact::url(url))))?;
        Self::new(nats, lattice, credential, timeout)
    }

    /// The identity invocations are sent as (the provider id).
    pub fn origin(&self) -> &str {
        self.inner.credential.provider_id()
    }

    /// The lattice.
    pub fn lattice(&self) -> &str {
        &self.inner.lattice
    }

    /// The default timeout of invocations and stream pulls.
    pub fn timeout(&self) -> Duration {
        self.inner.timeout
    }

    /// The NATS connection.
    pub fn nats(&self) -> &async_nats::Client {
        &self.inner.nats
    }

    pub(crate) fn credential(&self) -> &ProviderCredential {
        &self.inner.credential
    }

    /// Replies dropped so far because they were not authentic (forged, tampered, unsigned).
    pub fn rejected_replies(&self) -> u64 {
        self.inner.requester.rejected_replies()
    }

    /// Invoke `operation` on `target` over link `link_name` with the default timeout.
    ///
    /// # Errors
    /// The target's typed error, or [`ErrorKind::Timeout`], [`ErrorKind::Unavailable`] (no
    /// responders), [`ErrorKind::Denied`] (expired credential or a response that fails
    /// verification).
    pub async fn invoke(
        &self,
        target: &str,
        link_name: &str,
        operation: &str,
        payload: Vec<u8>,
    ) -> Result<Vec<u8>, RpcError> {
        self.invoke_with_timeout(target, link_name, operation, payload, self.inner.timeout).await
    }

    /// [`LatticeClient::invoke`] with an explicit timeout.
    ///
    /// # Errors
    /// As [`LatticeClient::invoke`].
    pub async fn invoke_with_timeout(
        &self,
        target: &str,
        link_name: &str,
        operation: &str,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, RpcError> {
        let subject = subject::rpc(&self.inner.lattice, target).map_err(RpcError::from)?;
        let mut inv = Invocation::new(self.origin(), target, link_name, operation, payload);
        let key = self
            .inner
            .credential
            .key_at(inv.issued_at_ms)
            .map_err(|e| RpcError::new(ErrorKind::Denied, e.to_string()))?;
        inv.set_timeout(timeout);
        send_signed(&self.inner.requester, &self.inner.lattice, subject, &mut inv, &key).await
    }

    /// Deliver an HTTP request to `component`'s `wasi:http/incoming-handler` and return its
    /// response. Either body may be of any size: what does not fit in one message is streamed
    /// in chunks, read from `request` and pulled into the returned body only as fast as the
    /// other side goes.
    ///
    /// # Errors
    /// As [`LatticeClient::invoke`]; [`ErrorKind::BadRequest`] if the request body fails or
    /// the answer is not a valid response.
    pub async fn call_http<B>(
        &self,
        component: &str,
        request: ::http::Request<B>,
        options: &HttpCallOptions,
    ) -> Result<::http::Response<LatticeBody>, RpcError>
    where
        B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
        B::Error: fmt::Display,
    {
        let (parts, body) = request.into_parts();
        let mut head = http::request_head(&parts);
        let (inline, rest) =
            stream::split_inline(http::body_stream(body), options.chunk_size, http::INLINE_WAIT).await?;
        head.body = inline.to_vec();
        let subject = subject::rpc(&self.inner.lattice, component).map_err(RpcError::from)?;
        let mut inv = Invocation::new(self.origin(), component, &options.link_name, OP_HANDLE, Vec::new());
        let key = self
            .inner
            .credential
            .key_at(inv.issued_at_ms)
            .map_err(|e| RpcError::new(ErrorKind::Denied, e.to_string()))?;
        let offer = match rest {
            Some(rest) => {
                let id = stream::new_stream_id();
                let offer = stream::offer(
                    &self.inner.nats,
                    &self.inner.lattice,
                    &id,
                    key.clone(),
                    rest,
                    options.chunk_size,
                    options.timeout,
                )
                .await?;
                head.body_stream = Some(id);
                Some(offer)
            }
            None => None,
        };
        inv.payload = codec::encode(&head).map_err(RpcError::from)?;
        inv.set_timeout(options.timeout);
        let answer = send_signed(&self.inner.requester, &self.inner.lattice, subject, &mut inv, &key)
            .await
            .and_then(|bytes| codec::decode::<HttpResponse>(&bytes).map_err(RpcError::from))
            .and_then(|response| {
                http::response_from_wire(&self.inner.nats, &self.inner.lattice, response, &key, options.timeout)
            });
        if answer.is_err()
            && let Some(offer) = offer
        {
            offer.abort();
        }
        answer
    }

    /// Deliver a whole [`HttpRequest`] and read the whole response: [`LatticeClient::call_http`]
    /// for callers that hold bodies in memory anyway (tools, tests).
    ///
    /// # Errors
    /// As [`LatticeClient::call_http`].
    pub async fn handle_http(&self, component: &str, request: &HttpRequest) -> Result<HttpResponse, RpcError> {
        let mut builder = ::http::Request::builder().method(request.method.as_str()).uri(format!(
            "{}://{}{}",
            scheme_or_http(&request.scheme),
            authority_or_localhost(&request.authority),
            request.path_with_query
        ));
        if let Some(headers) = builder.headers_mut() {
            *headers = http::headers_from_wire(request.headers.clone())?;
        }
        let req = builder
            .body(http_body_util::Full::new(bytes::Bytes::from(request.body.clone())))
            .map_err(|e| RpcError::bad_request(format!("invalid request: {e}")))?;
        let response = self.call_http(component, req, &HttpCallOptions::new(self.inner.timeout)).await?;
        let (parts, body) = response.into_parts();
        let body = body.collect_bytes().await?;
        Ok(HttpResponse {
            status: parts.status.as_u16(),
            headers: http::headers_to_wire(&parts.headers),
            body: body.to_vec(),
            body_stream: None,
        })
    }
}

fn scheme_or_http(scheme: &str) -> &str {
    if scheme.is_empty() { "http" } else { scheme }
}

fn authority_or_localhost(authority: &str) -> &str {
    if authority.is_empty() { "localhost" } else { authority }
}

/// Sign `inv` under `key`, send it on `subject` and wait, until its deadline, for a response
/// that verifies under the same key: the one request path shared by the SDK and the host. A
/// payload over the inline limit travels partly as a stream, both ways
/// ([`crate::overflow`]). A reply that is unsigned, forged or for another request is dropped,
/// not taken for the answer.
///
/// # Errors
/// [`ErrorKind::Timeout`] (naming any replies dropped), [`ErrorKind::Unavailable`],
/// [`ErrorKind::TooLarge`], or the target's own error.
pub async fn send_signed(
    requester: &Requester,
    lattice: &str,
    subject: String,
    inv: &mut Invocation,
    key: &MacKey,
) -> Result<Vec<u8>, RpcError> {
    let wait = inv.remaining().unwrap_or(DEFAULT_RPC_TIMEOUT);
    let deadline = tokio::time::Instant::now() + wait;
    let nats = requester.nats();
    // Dropped when this returns: by then the target has pulled what it needed, or failed.
    let _offered = match overflow::offload(nats, lattice, &mut inv.payload, key, wait).await? {
        Some((rest, offered)) => {
            inv.payload_stream = Some(rest);
            Some(offered)
        }
        None => None,
    };
    inv.sign(key);
    let bytes = inv.encode().map_err(RpcError::from)?;
    let mut answer = requester
        .request(subject, bytes.into(), deadline, |msg| verified_response(msg, key, &inv.id))
        .await
        .map_err(|failure| map_failure(nats, &inv.target, wait, failure))?;
    let rest = answer.payload_stream.take();
    let payload = answer.into_result()?;
    let left = deadline.saturating_duration_since(tokio::time::Instant::now()).max(MIN_PULL_WAIT);
    overflow::gather(nats, lattice, payload, rest.as_ref(), key, left).await
}

/// The response in `msg` if it is a signed answer to request `id` under `key`, else why not.
///
/// # Errors
/// Why the reply is not authentic: undecodable, unsigned, for another request, tampered.
pub fn verified_response(msg: &async_nats::Message, key: &MacKey, id: &str) -> Result<InvocationResponse, String> {
    let resp = InvocationResponse::decode(&msg.payload).map_err(|e| format!("undecodable reply: {e}"))?;
    if resp.mac.is_empty() {
        return Err(match &resp.error {
            Some(err) => format!("unsigned reply: {err}"),
            None => "unsigned reply".to_owned(),
        });
    }
    resp.verify(key, id).map_err(|e| format!("reply failed verification: {e}"))?;
    Ok(resp)
}

/// The least a pull of a response's rest waits, however close the deadline.
const MIN_PULL_WAIT: Duration = Duration::from_millis(100);

/// The typed error of a request that failed.
pub fn map_failure(nats: &async_nats::Client, target: &str, wait: Duration, failure: RequestFailure) -> RpcError {
    match failure {
        RequestFailure::Timeout { dropped: 0, .. } => {
            RpcError::new(ErrorKind::Timeout, format!("no answer from {target} within {wait:?}"))
        }
        RequestFailure::Timeout { dropped, last_rejection } => RpcError::new(
            ErrorKind::Timeout,
            format!(
                "no authentic answer from {target} within {wait:?} ({dropped} unauthenticated replies dropped, the last: {})",
                last_rejection.unwrap_or_default()
            ),
        ),
        RequestFailure::NoResponders => RpcError::new(ErrorKind::Unavailable, format!("nobody is serving {target}")),
        RequestFailure::TooLarge => RpcError::new(
            ErrorKind::TooLarge,
            format!(
                "request to {target} exceeds the NATS server's max payload of {} bytes",
                nats.server_info().max_payload
            ),
        ),
        RequestFailure::InvalidSubject => RpcError::bad_request(format!("invalid subject for {target}")),
        RequestFailure::Connection(err) => {
            RpcError::new(ErrorKind::Unavailable, format!("request to {target} failed: {err}"))
        }
    }
}
