//! The messaging capability: a typed trait for `wasmcloud:messaging/consumer` (what linked
//! components call), its dispatcher, and [`deliver`], which hands a message to a linked
//! component's `wasmcloud:messaging/handler`.

use std::{future::Future, time::Duration};

use ferry_proto::{ErrorKind, RpcError, codec, keyvalue::Empty};

use crate::{InvocationContext, LatticeClient, Provider};

/// The interface's names, operations and payloads, as the wire protocol defines them.
pub use ferry_proto::messaging::*;

/// What a messaging provider implements for its consumer links. Every call gets the
/// invocation's context: its `link` carries the link's config, its `state` what the provider
/// built for the link (a connection).
pub trait Messaging: Provider {
    /// Publish `message`.
    fn publish(
        &self,
        ctx: &InvocationContext<Self::Link>,
        message: BrokerMessage,
    ) -> impl Future<Output = Result<(), RpcError>> + Send;
    /// Publish `request` and wait (up to its timeout) for one reply.
    fn request(
        &self,
        ctx: &InvocationContext<Self::Link>,
        request: RequestMessage,
    ) -> impl Future<Output = Result<BrokerMessage, RpcError>> + Send;
}

/// Decode a consumer invocation, call `messaging`, and encode the answer. Use it from
/// [`crate::Provider::handle`].
///
/// # Errors
/// [`ErrorKind::UnknownOperation`] for operations outside the interface,
/// [`ErrorKind::BadRequest`] for undecodable payloads, and whatever `messaging` returns.
pub async fn dispatch<M: Messaging>(
    messaging: &M,
    ctx: &InvocationContext<M::Link>,
    operation: &str,
    payload: &[u8],
) -> Result<Vec<u8>, RpcError> {
    match operation {
        OP_PUBLISH => {
            messaging.publish(ctx, decode(payload)?).await?;
            codec::encode(&Empty {}).map_err(RpcError::from)
        }
        OP_REQUEST => {
            let reply = messaging.request(ctx, decode(payload)?).await?;
            codec::encode(&reply).map_err(RpcError::from)
        }
        other => Err(RpcError::new(ErrorKind::UnknownOperation, format!("messaging has no operation {other:?}"))),
    }
}

/// Hand `message` to `component`'s `wasmcloud:messaging/handler` over the link named
/// `link_name`, waiting up to `timeout` (the client's own when `None`). A handler's own error
/// comes back as [`ErrorKind::ComponentError`].
///
/// # Errors
/// The invocation's typed error.
pub async fn deliver(
    client: &LatticeClient,
    component: &str,
    link_name: &str,
    message: &BrokerMessage,
    timeout: Option<Duration>,
) -> Result<(), RpcError> {
    let payload = codec::encode(message).map_err(RpcError::from)?;
    let timeout = timeout.unwrap_or_else(|| client.timeout());
    // A delivery starts a trace when spans are exported; the handler's span is its child.
    let (span, trace) = crate::server::call_span("deliver", component, OP_HANDLE_MESSAGE);
    let call = client.invoke_traced(component, link_name, OP_HANDLE_MESSAGE, payload, timeout, trace);
    tracing::Instrument::instrument(call, span).await.map(|_| ())
}

fn decode<T: serde::de::DeserializeOwned>(payload: &[u8]) -> Result<T, RpcError> {
    codec::decode(payload).map_err(|e| RpcError::bad_request(e.to_string()))
}
