//! The blobstore capability: a typed trait for `wasi:blobstore` (the `blobstore` and
//! `container` interfaces) and the dispatcher that decodes invocations into calls on it.
//! Object bodies are streams both ways: the dispatcher pulls what a caller writes and offers
//! what a provider reads, so a provider never holds a whole object.

use std::future::Future;

use bytes::Bytes;
use ferry_proto::{ErrorKind, RpcError, codec, keyvalue::Empty};
use futures::StreamExt as _;
use serde::{Serialize, de::DeserializeOwned};

use crate::{ByteStream, InvocationContext, Provider};

/// The interface's names, operations and payloads, as the wire protocol defines them.
pub use ferry_proto::blobstore::*;

/// What a blobstore provider implements. Every call gets the invocation's context: its `link`
/// carries the link's config, its `state` what the provider built for the link (a backend).
/// Names arrive as the caller sent them: checking them is the provider's policy.
pub trait Blobstore: Provider {
    /// Create `container`.
    fn create_container(
        &self,
        ctx: &InvocationContext<Self::Link>,
        container: &str,
    ) -> impl Future<Output = Result<(), RpcError>> + Send;
    /// Succeed when `container` exists (`not_found` otherwise).
    fn get_container(
        &self,
        ctx: &InvocationContext<Self::Link>,
        container: &str,
    ) -> impl Future<Output = Result<(), RpcError>> + Send;
    /// Delete `container` and everything in it.
    fn delete_container(
        &self,
        ctx: &InvocationContext<Self::Link>,
        container: &str,
    ) -> impl Future<Output = Result<(), RpcError>> + Send;
    /// Whether `container` exists.
    fn container_exists(
        &self,
        ctx: &InvocationContext<Self::Link>,
        container: &str,
    ) -> impl Future<Output = Result<bool, RpcError>> + Send;
    /// What is known of `container`.
    fn container_info(
        &self,
        ctx: &InvocationContext<Self::Link>,
        container: &str,
    ) -> impl Future<Output = Result<ContainerInfo, RpcError>> + Send;
    /// Copy `src` to `dest`.
    fn copy_object(
        &self,
        ctx: &InvocationContext<Self::Link>,
        src: &ObjectId,
        dest: &ObjectId,
    ) -> impl Future<Output = Result<(), RpcError>> + Send;
    /// Move `src` to `dest`.
    fn move_object(
        &self,
        ctx: &InvocationContext<Self::Link>,
        src: &ObjectId,
        dest: &ObjectId,
    ) -> impl Future<Output = Result<(), RpcError>> + Send;
    /// The object's size and its bytes `start..=end` (clamped to the object), as a stream.
    fn get_data(
        &self,
        ctx: &InvocationContext<Self::Link>,
        object: &ObjectId,
        start: u64,
        end: u64,
    ) -> impl Future<Output = Result<(u64, ByteStream), RpcError>> + Send;
    /// Store `data` as the object, replacing what was there once all of it arrived.
    fn write_data(
        &self,
        ctx: &InvocationContext<Self::Link>,
        object: &ObjectId,
        data: ByteStream,
    ) -> impl Future<Output = Result<(), RpcError>> + Send;
    /// One page of at most `limit` object names after `after`, and whether it is the last.
    fn list_objects(
        &self,
        ctx: &InvocationContext<Self::Link>,
        container: &str,
        after: Option<&str>,
        limit: u32,
    ) -> impl Future<Output = Result<ListResponse, RpcError>> + Send;
    /// Delete one object; a missing one is fine.
    fn delete_object(
        &self,
        ctx: &InvocationContext<Self::Link>,
        object: &ObjectId,
    ) -> impl Future<Output = Result<(), RpcError>> + Send;
    /// Delete `objects` of `container`.
    fn delete_objects(
        &self,
        ctx: &InvocationContext<Self::Link>,
        container: &str,
        objects: &[String],
    ) -> impl Future<Output = Result<(), RpcError>> + Send;
    /// Whether the object exists.
    fn has_object(
        &self,
        ctx: &InvocationContext<Self::Link>,
        object: &ObjectId,
    ) -> impl Future<Output = Result<bool, RpcError>> + Send;
    /// What is known of the object.
    fn object_info(
        &self,
        ctx: &InvocationContext<Self::Link>,
        object: &ObjectId,
    ) -> impl Future<Output = Result<ObjectInfo, RpcError>> + Send;
    /// Delete every object of `container`, keeping it.
    fn clear(
        &self,
        ctx: &InvocationContext<Self::Link>,
        container: &str,
    ) -> impl Future<Output = Result<(), RpcError>> + Send;
}

/// Decode a blobstore invocation, call `store`, and encode the answer, streaming object bodies
/// both ways. Use it from [`crate::Provider::handle`].
///
/// # Errors
/// [`ErrorKind::UnknownOperation`] for operations outside the interface,
/// [`ErrorKind::BadRequest`] for undecodable payloads or an empty range, and whatever `store`
/// returns.
pub async fn dispatch<B: Blobstore>(
    store: &B,
    ctx: &InvocationContext<B::Link>,
    operation: &str,
    payload: &[u8],
) -> Result<Vec<u8>, RpcError> {
    let object = |req: ObjectRequest| ObjectId { container: req.container, object: req.object };
    match operation {
        op::CREATE_CONTAINER => {
            store.create_container(ctx, &decode::<ContainerRequest>(payload)?.container).await?;
            empty()
        }
        op::GET_CONTAINER => {
            store.get_container(ctx, &decode::<ContainerRequest>(payload)?.container).await?;
            empty()
        }
        op::DELETE_CONTAINER => {
            store.delete_container(ctx, &decode::<ContainerRequest>(payload)?.container).await?;
            empty()
        }
        op::CONTAINER_EXISTS => {
            let container = decode::<ContainerRequest>(payload)?.container;
            encode(&ExistsResponse { exists: store.container_exists(ctx, &container).await? })
        }
        op::CONTAINER_INFO => {
            encode(&store.container_info(ctx, &decode::<ContainerRequest>(payload)?.container).await?)
        }
        op::COPY_OBJECT => {
            let req: CopyRequest = decode(payload)?;
            store.copy_object(ctx, &req.src, &req.dest).await?;
            empty()
        }
        op::MOVE_OBJECT => {
            let req: CopyRequest = decode(payload)?;
            store.move_object(ctx, &req.src, &req.dest).await?;
            empty()
        }
        op::GET_DATA => {
            let req: GetDataRequest = decode(payload)?;
            if req.start > req.end {
                return Err(RpcError::bad_request(format!("range start {} is after its end {}", req.start, req.end)));
            }
            let id = ObjectId { container: req.container, object: req.object };
            let (size, data) = store.get_data(ctx, &id, req.start, req.end).await?;
            let (data, data_stream) = ctx.offer_body(data).await?;
            encode(&DataResponse { size, data, data_stream })
        }
        op::WRITE_DATA => {
            let mut req: WriteDataRequest = decode(payload)?;
            let body = ctx.pull_body(std::mem::take(&mut req.data), req.data_stream.as_deref())?;
            let data: ByteStream = Box::pin(body.map(|chunk: Result<Bytes, RpcError>| chunk));
            store.write_data(ctx, &ObjectId { container: req.container, object: req.object }, data).await?;
            empty()
        }
        op::LIST_OBJECTS => {
            let req: ListRequest = decode(payload)?;
            encode(&store.list_objects(ctx, &req.container, req.after.as_deref(), req.limit).await?)
        }
        op::DELETE_OBJECT => {
            store.delete_object(ctx, &object(decode(payload)?)).await?;
            empty()
        }
        op::DELETE_OBJECTS => {
            let req: ObjectsRequest = decode(payload)?;
            store.delete_objects(ctx, &req.container, &req.objects).await?;
            empty()
        }
        op::HAS_OBJECT => encode(&ExistsResponse { exists: store.has_object(ctx, &object(decode(payload)?)).await? }),
        op::OBJECT_INFO => encode(&store.object_info(ctx, &object(decode(payload)?)).await?),
        op::CLEAR => {
            store.clear(ctx, &decode::<ContainerRequest>(payload)?.container).await?;
            empty()
        }
        other => Err(RpcError::new(ErrorKind::UnknownOperation, format!("blobstore has no operation {other:?}"))),
    }
}

fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, RpcError> {
    codec::decode(payload).map_err(|e| RpcError::bad_request(e.to_string()))
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, RpcError> {
    codec::encode(value).map_err(RpcError::from)
}

fn empty() -> Result<Vec<u8>, RpcError> {
    encode(&Empty {})
}
