//! The key-value capability: a typed trait for `wasi:keyvalue/{store,atomics,batch}` and the
//! dispatcher that decodes invocations into calls on it.

use std::future::Future;

use ferry_proto::{
    ErrorKind, RpcError, codec,
    keyvalue::{
        Empty, ExistsResponse, GetManyResponse, GetResponse, IncrementRequest, IncrementResponse, KeyRequest,
        KeyValue as Pair, KeysRequest, ListKeysRequest, SetManyRequest, SetRequest, op,
    },
};
use serde::{Serialize, de::DeserializeOwned};

use crate::{InvocationContext, Provider};

pub use ferry_proto::keyvalue::{KeyValue as KeyValuePair, ListKeysResponse};

/// What a key-value provider implements. Every call gets the invocation's context: its `link`
/// carries the link's target config, its `state` what the provider built for the link (a
/// backend). There is no `open`: the host answers `store.open` itself, so every call names its
/// bucket and is the place to refuse one.
pub trait KeyValue: Provider {
    /// The value of `key`, if any.
    fn get(
        &self,
        ctx: &InvocationContext<Self::Link>,
        bucket: &str,
        key: &str,
    ) -> impl Future<Output = Result<Option<Vec<u8>>, RpcError>> + Send;
    /// Store `value` under `key`.
    fn set(
        &self,
        ctx: &InvocationContext<Self::Link>,
        bucket: &str,
        key: &str,
        value: Vec<u8>,
    ) -> impl Future<Output = Result<(), RpcError>> + Send;
    /// Remove `key`; removing a missing key succeeds.
    fn delete(
        &self,
        ctx: &InvocationContext<Self::Link>,
        bucket: &str,
        key: &str,
    ) -> impl Future<Output = Result<(), RpcError>> + Send;
    /// Whether `key` exists.
    fn exists(
        &self,
        ctx: &InvocationContext<Self::Link>,
        bucket: &str,
        key: &str,
    ) -> impl Future<Output = Result<bool, RpcError>> + Send;
    /// One page of keys from `cursor`, and the cursor of the next page.
    fn list_keys(
        &self,
        ctx: &InvocationContext<Self::Link>,
        bucket: &str,
        cursor: Option<u64>,
    ) -> impl Future<Output = Result<ListKeysResponse, RpcError>> + Send;
    /// Atomically add `delta` to the number stored at `key` (missing counts as 0).
    fn increment(
        &self,
        ctx: &InvocationContext<Self::Link>,
        bucket: &str,
        key: &str,
        delta: u64,
    ) -> impl Future<Output = Result<u64, RpcError>> + Send;
    /// The values of `keys`, in order, `None` where missing.
    fn get_many(
        &self,
        ctx: &InvocationContext<Self::Link>,
        bucket: &str,
        keys: Vec<String>,
    ) -> impl Future<Output = Result<Vec<Option<Pair>>, RpcError>> + Send;
    /// Store every pair.
    fn set_many(
        &self,
        ctx: &InvocationContext<Self::Link>,
        bucket: &str,
        items: Vec<Pair>,
    ) -> impl Future<Output = Result<(), RpcError>> + Send;
    /// Remove every key.
    fn delete_many(
        &self,
        ctx: &InvocationContext<Self::Link>,
        bucket: &str,
        keys: Vec<String>,
    ) -> impl Future<Output = Result<(), RpcError>> + Send;
}

/// Decode a key-value invocation, call `kv`, and encode the answer. Use it from
/// [`crate::Provider::handle`].
///
/// # Errors
/// [`ErrorKind::UnknownOperation`] for operations outside the interface,
/// [`ErrorKind::BadRequest`] for undecodable payloads, and whatever `kv` returns.
pub async fn dispatch<K: KeyValue>(
    kv: &K,
    ctx: &InvocationContext<K::Link>,
    operation: &str,
    payload: &[u8],
) -> Result<Vec<u8>, RpcError> {
    match operation {
        op::GET => {
            let req: KeyRequest = decode(payload)?;
            encode(&GetResponse { value: kv.get(ctx, &req.bucket, &req.key).await? })
        }
        op::SET => {
            let req: SetRequest = decode(payload)?;
            kv.set(ctx, &req.bucket, &req.key, req.value).await?;
            encode(&Empty {})
        }
        op::DELETE => {
            let req: KeyRequest = decode(payload)?;
            kv.delete(ctx, &req.bucket, &req.key).await?;
            encode(&Empty {})
        }
        op::EXISTS => {
            let req: KeyRequest = decode(payload)?;
            encode(&ExistsResponse { exists: kv.exists(ctx, &req.bucket, &req.key).await? })
        }
        op::LIST_KEYS => {
            let req: ListKeysRequest = decode(payload)?;
            encode(&kv.list_keys(ctx, &req.bucket, req.cursor).await?)
        }
        op::INCREMENT => {
            let req: IncrementRequest = decode(payload)?;
            encode(&IncrementResponse { value: kv.increment(ctx, &req.bucket, &req.key, req.delta).await? })
        }
        op::GET_MANY => {
            let req: KeysRequest = decode(payload)?;
            encode(&GetManyResponse { items: kv.get_many(ctx, &req.bucket, req.keys).await? })
        }
        op::SET_MANY => {
            let req: SetManyRequest = decode(payload)?;
            kv.set_many(ctx, &req.bucket, req.items).await?;
            encode(&Empty {})
        }
        op::DELETE_MANY => {
            let req: KeysRequest = decode(payload)?;
            kv.delete_many(ctx, &req.bucket, req.keys).await?;
            encode(&Empty {})
        }
        other => Err(RpcError::new(ErrorKind::UnknownOperation, format!("key-value has no operation {other:?}"))),
    }
}

fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, RpcError> {
    codec::decode(payload).map_err(|e| RpcError::bad_request(e.to_string()))
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, RpcError> {
    codec::encode(value).map_err(RpcError::from)
}

/// What a watcher link reports to its component: the interface's names and payload.
pub use ferry_proto::keyvalue::{WATCHER_INTERFACE, WIT_NAMESPACE, WIT_PACKAGE, WatchEvent};

/// Hand `event` to `component`'s `wasi:keyvalue/watcher` over the link named `link_name`:
/// `on-set` when it carries a value, `on-delete` when not. Returns once the component has run.
///
/// # Errors
/// The invocation's typed error (the component trapped, is not linked, …).
pub async fn notify(
    client: &crate::LatticeClient,
    component: &str,
    link_name: &str,
    event: &WatchEvent,
) -> Result<(), RpcError> {
    let operation = if event.value.is_some() { op::ON_SET } else { op::ON_DELETE };
    let payload = codec::encode(event).map_err(RpcError::from)?;
    let (span, trace) = crate::server::call_span("notify", component, operation);
    let call = client.invoke_traced(component, link_name, operation, payload, client.timeout(), trace);
    tracing::Instrument::instrument(call, span).await.map(|_| ())
}
