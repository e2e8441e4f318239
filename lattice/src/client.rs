//! Calling components (and other targets) on the lattice under a provider identity: signed
//! invocations, verified responses, typed errors. Providers, the bridge and `ferry call` use it.

use std::{fmt, sync::Arc, time::Duration};

use ferry_proto::{
    ErrorKind, RpcError,
    auth::CredentialSet,
    codec,
    envelope::Invocation,
    http::{HttpRequest, HttpResponse, OP_HANDLE},
    subject,
};

pub use crate::signed::DEFAULT_RPC_TIMEOUT;
use crate::{
    LatticeError, NatsOptions,
    body::{self, LatticeBody},
    http::{self, HttpCallOptions},
    request::Requester,
    signed::send_signed,
};

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
    credential: CredentialSet,
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
    /// A client on an existing NATS connection, calling as the credential's provider (signing
    /// with the first of a [`CredentialSet`], taking answers under any).
    ///
    /// # Errors
    /// [`LatticeError::Startup`] when the credential is for another lattice.
    pub fn new(
        nats: async_nats::Client,
        lattice: &str,
        credential: impl Into<CredentialSet>,
        timeout: Option<Duration>,
    ) -> Result<Self, LatticeError> {
        let credential = credential.into();
        subject::validate_id("lattice", lattice)?;
        if credential.lattice() != lattice {
            return Err(LatticeError::Invalid(format!(
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

    /// Connect to NATS at `url` (secured as the environment says, [`crate::NatsSecurity`]) and
    /// build a client.
    ///
    /// # Errors
    /// [`LatticeError::Nats`] when NATS is unreachable, [`LatticeError::Startup`] for a bad credential.
    pub async fn connect(
        url: &str,
        lattice: &str,
        credential: &str,
        timeout: Option<Duration>,
    ) -> Result<Self, LatticeError> {
        let credential = CredentialSet::parse(credential)?;
        let options = NatsOptions::new(url, format!("ferry-client-{}", credential.provider_id()))
            .secured(&crate::NatsSecurity::from_env()?);
        let nats = options.connect().await?.client;
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

    /// The credentials invocations are signed under (the first) and verified under (any).
    pub fn credential(&self) -> &CredentialSet {
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
        self.invoke_traced(target, link_name, operation, payload, timeout, None).await
    }

    /// [`LatticeClient::invoke_with_timeout`] within trace `trace`: the invocation carries it
    /// (under its MAC), so the callee's span is a child of the span it names.
    ///
    /// # Errors
    /// As [`LatticeClient::invoke`].
    pub async fn invoke_traced(
        &self,
        target: &str,
        link_name: &str,
        operation: &str,
        payload: Vec<u8>,
        timeout: Duration,
        trace: Option<ferry_proto::trace::TraceParent>,
    ) -> Result<Vec<u8>, RpcError> {
        let subject = subject::rpc(&self.inner.lattice, target).map_err(RpcError::from)?;
        let mut inv = Invocation::new(self.origin(), target, link_name, operation, payload);
        if let Some(trace) = trace {
            inv.trace_context.insert(ferry_proto::trace::TRACEPARENT.to_owned(), trace.to_string());
        }
        let key = self
            .inner
            .credential
            .key_at(inv.issued_at_ms)
            .map_err(|e| RpcError::new(ErrorKind::Denied, e.to_string()))?;
        inv.set_timeout(timeout);
        send_signed(&self.inner.requester, &self.inner.lattice, subject, &mut inv, &key).await
    }

    /// Ask the lattice's hosts for this provider's links with their config resolved
    /// ([`ferry_proto::subject::link_sync`]); the answer comes sealed under this provider's key
    /// and is opened here. `seen_revision`: the newest bucket revision the caller has seen.
    ///
    /// # Errors
    /// As [`LatticeClient::invoke`]; [`ErrorKind::Denied`] when the answer cannot be opened.
    pub async fn sync_links(&self, seen_revision: u64) -> Result<ferry_proto::link::LinkSyncAnswer, RpcError> {
        let origin = self.origin().to_owned();
        let subject = subject::link_sync(&self.inner.lattice, &origin).map_err(RpcError::from)?;
        let request = codec::encode(&ferry_proto::link::LinkSyncRequest { seen_revision }).map_err(RpcError::from)?;
        let mut inv = Invocation::new(&origin, &origin, "default", subject::OP_LINK_SYNC, request);
        let key = self
            .inner
            .credential
            .key_at(inv.issued_at_ms)
            .map_err(|e| RpcError::new(ErrorKind::Denied, e.to_string()))?;
        inv.set_timeout(self.inner.timeout);
        let sealed = send_signed(&self.inner.requester, &self.inner.lattice, subject, &mut inv, &key).await?;
        let plain = ferry_proto::seal::open(&key, &inv.id, &sealed)
            .map_err(|e| RpcError::new(ErrorKind::Denied, format!("cannot open the link sync answer: {e}")))?;
        codec::decode(&plain).map_err(RpcError::from)
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
        let subject = subject::rpc(&self.inner.lattice, component).map_err(RpcError::from)?;
        let mut inv = Invocation::new(self.origin(), component, &options.link_name, OP_HANDLE, Vec::new());
        if let Some(trace) = &options.trace {
            inv.trace_context.insert(ferry_proto::trace::TRACEPARENT.to_owned(), trace.to_string());
        }
        let key = self
            .inner
            .credential
            .key_at(inv.issued_at_ms)
            .map_err(|e| RpcError::new(ErrorKind::Denied, e.to_string()))?;
        let offer = http::attach_body(
            &self.inner.nats,
            &self.inner.lattice,
            &mut head,
            body,
            &key,
            options.chunk_size,
            options.timeout,
        )
        .await?;
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
            *headers = body::headers_from_wire(request.headers.clone())?;
        }
        let req = builder
            .body(http_body_util::Full::new(bytes::Bytes::from(request.body.clone())))
            .map_err(|e| RpcError::bad_request(format!("invalid request: {e}")))?;
        let response = self.call_http(component, req, &HttpCallOptions::new(self.inner.timeout)).await?;
        let (parts, body) = response.into_parts();
        let body = body.collect_bytes().await?;
        Ok(HttpResponse {
            status: parts.status.as_u16(),
            headers: body::headers_to_wire(&parts.headers),
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
