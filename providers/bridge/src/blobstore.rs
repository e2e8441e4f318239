//! `wasi:blobstore` forwarded to the foreign process's `Blobstore` service. Object bodies
//! stream both ways piece by piece — NATS stream to gRPC stream and back — so the bridge holds
//! a few chunks of an object, never the object.

use std::task::Poll;

use bytes::Bytes;
use ferry_provider_sdk::{
    ByteStream, ErrorKind, InvocationContext, RpcError,
    blobstore::{Blobstore, ContainerInfo, ListResponse, ObjectId, ObjectInfo},
    grpc::{
        self,
        v1::{self, blobstore_client::BlobstoreClient},
    },
};
use futures::{StreamExt as _, stream};

use crate::{
    h2::Connection,
    keyvalue::{caller, timed},
    links::BridgeLink,
    provider::Bridge,
};

impl Bridge {
    /// Run one call of the foreign `Blobstore` service within the call's time limit.
    async fn blob<T, Fut>(
        &self,
        ctx: &InvocationContext<BridgeLink>,
        call: impl FnOnce(BlobstoreClient<Connection>, crate::provider::Forwarded) -> Fut,
    ) -> Result<T, RpcError>
    where
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let (foreign, forwarded) = self.admit(ctx)?;
        call(foreign.blobstore(), forwarded)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|status| foreign.failed(&status))
    }
}

fn container(ctx: &InvocationContext<BridgeLink>, container: &str) -> v1::ContainerRequest {
    v1::ContainerRequest { caller: caller(ctx), container: container.to_owned() }
}

fn object(ctx: &InvocationContext<BridgeLink>, id: &ObjectId) -> v1::ObjectRequest {
    v1::ObjectRequest { caller: caller(ctx), container: id.container.clone(), object: id.object.clone() }
}

fn copy(ctx: &InvocationContext<BridgeLink>, src: &ObjectId, dest: &ObjectId) -> v1::CopyRequest {
    let id = |id: &ObjectId| Some(v1::ObjectId { container: id.container.clone(), object: id.object.clone() });
    v1::CopyRequest { caller: caller(ctx), src: id(src), dest: id(dest) }
}

/// Pieces of a body read ahead of the upload: what the bridge holds of an object it writes.
const UPLOAD_AHEAD: usize = 2;

/// What `WriteData` sends: the head, then the body's pieces, as [`forward`] reads them.
struct Upload(tokio::sync::mpsc::Receiver<v1::WriteChunk>);

impl futures::Stream for Upload {
    type Item = v1::WriteChunk;

    fn poll_next(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx)
    }
}

/// Read `data` into the upload. The upload ends when the body does; when the body fails, the
/// failure goes to `failed` and the upload is left open until the call is dropped.
async fn forward(
    mut data: ByteStream,
    chunks: tokio::sync::mpsc::Sender<v1::WriteChunk>,
    failed: tokio::sync::oneshot::Sender<RpcError>,
) {
    while let Some(piece) = data.next().await {
        match piece {
            Ok(bytes) => {
                if chunks.send(v1::WriteChunk { data: bytes.to_vec(), ..Default::default() }).await.is_err() {
                    return; // the call ended
                }
            }
            Err(err) => {
                let _ = failed.send(err);
                chunks.closed().await;
                return;
            }
        }
    }
}

impl Blobstore for Bridge {
    async fn create_container(&self, ctx: &InvocationContext<BridgeLink>, name: &str) -> Result<(), RpcError> {
        let message = container(ctx, name);
        self.blob(ctx, |mut c, t| async move { c.create_container(timed(message, t)).await }).await.map(drop)
    }

    async fn get_container(&self, ctx: &InvocationContext<BridgeLink>, name: &str) -> Result<(), RpcError> {
        let message = container(ctx, name);
        self.blob(ctx, |mut c, t| async move { c.get_container(timed(message, t)).await }).await.map(drop)
    }

    async fn delete_container(&self, ctx: &InvocationContext<BridgeLink>, name: &str) -> Result<(), RpcError> {
        let message = container(ctx, name);
        self.blob(ctx, |mut c, t| async move { c.delete_container(timed(message, t)).await }).await.map(drop)
    }

    async fn container_exists(&self, ctx: &InvocationContext<BridgeLink>, name: &str) -> Result<bool, RpcError> {
        let message = container(ctx, name);
        Ok(self.blob(ctx, |mut c, t| async move { c.container_exists(timed(message, t)).await }).await?.exists)
    }

    async fn container_info(&self, ctx: &InvocationContext<BridgeLink>, name: &str) -> Result<ContainerInfo, RpcError> {
        let message = container(ctx, name);
        let info = self.blob(ctx, |mut c, t| async move { c.container_info(timed(message, t)).await }).await?;
        Ok(ContainerInfo { name: info.name, created_at: info.created_at })
    }

    async fn copy_object(
        &self,
        ctx: &InvocationContext<BridgeLink>,
        src: &ObjectId,
        dest: &ObjectId,
    ) -> Result<(), RpcError> {
        let message = copy(ctx, src, dest);
        self.blob(ctx, |mut c, t| async move { c.copy_object(timed(message, t)).await }).await.map(drop)
    }

    async fn move_object(
        &self,
        ctx: &InvocationContext<BridgeLink>,
        src: &ObjectId,
        dest: &ObjectId,
    ) -> Result<(), RpcError> {
        let message = copy(ctx, src, dest);
        self.blob(ctx, |mut c, t| async move { c.move_object(timed(message, t)).await }).await.map(drop)
    }

    async fn get_data(
        &self,
        ctx: &InvocationContext<BridgeLink>,
        id: &ObjectId,
        start: u64,
        end: u64,
    ) -> Result<(u64, ByteStream), RpcError> {
        let message = v1::GetDataRequest {
            caller: caller(ctx),
            container: id.container.clone(),
            object: id.object.clone(),
            start,
            end,
        };
        let mut chunks = self.blob(ctx, |mut c, t| async move { c.get_data(timed(message, t)).await }).await?;
        // The first message says the size; a stream that ends before it is the provider's bug.
        let first = match chunks.message().await {
            Ok(Some(first)) => first,
            Ok(None) => {
                return Err(RpcError::new(
                    ErrorKind::ProviderError,
                    "the bridged provider ended GetData without a message (the first must carry the size)",
                ));
            }
            Err(status) => return Err(grpc::from_status(&status)),
        };
        let head = stream::iter((!first.data.is_empty()).then(|| Ok(Bytes::from(first.data))));
        let rest = chunks.map(|chunk| chunk.map(|c| Bytes::from(c.data)).map_err(|status| grpc::from_status(&status)));
        Ok((first.size, Box::pin(head.chain(rest))))
    }

    async fn write_data(
        &self,
        ctx: &InvocationContext<BridgeLink>,
        id: &ObjectId,
        data: ByteStream,
    ) -> Result<(), RpcError> {
        let (foreign, limit) = self.admit(ctx)?;
        let head = v1::WriteChunk {
            caller: caller(ctx),
            container: id.container.clone(),
            object: id.object.clone(),
            data: Vec::new(),
        };
        // A body that fails half way must not reach the provider as a shorter body that ended
        // normally: the upload then never ends, and the call is dropped (cancelled) instead.
        let (chunks_tx, chunks) = tokio::sync::mpsc::channel(UPLOAD_AHEAD);
        let (failed_tx, failed) = tokio::sync::oneshot::channel::<RpcError>();
        let _ = chunks_tx.try_send(head);
        tokio::spawn(forward(data, chunks_tx, failed_tx));
        let mut client = foreign.blobstore();
        let upload = client.write_data(timed(Upload(chunks), limit));
        tokio::select! {
            answer = upload => {
                answer.map(drop).map_err(|status| foreign.failed(&status))
            }
            Ok(err) = failed => Err(err),
        }
    }

    async fn list_objects(
        &self,
        ctx: &InvocationContext<BridgeLink>,
        name: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<ListResponse, RpcError> {
        let message = v1::ListObjectsRequest {
            caller: caller(ctx),
            container: name.to_owned(),
            after: after.map(str::to_owned),
            limit,
        };
        let page = self.blob(ctx, |mut c, t| async move { c.list_objects(timed(message, t)).await }).await?;
        Ok(ListResponse { names: page.names, done: page.done })
    }

    async fn delete_object(&self, ctx: &InvocationContext<BridgeLink>, id: &ObjectId) -> Result<(), RpcError> {
        let message = object(ctx, id);
        self.blob(ctx, |mut c, t| async move { c.delete_object(timed(message, t)).await }).await.map(drop)
    }

    async fn delete_objects(
        &self,
        ctx: &InvocationContext<BridgeLink>,
        name: &str,
        objects: &[String],
    ) -> Result<(), RpcError> {
        let message = v1::ObjectsRequest { caller: caller(ctx), container: name.to_owned(), objects: objects.to_vec() };
        self.blob(ctx, |mut c, t| async move { c.delete_objects(timed(message, t)).await }).await.map(drop)
    }

    async fn has_object(&self, ctx: &InvocationContext<BridgeLink>, id: &ObjectId) -> Result<bool, RpcError> {
        let message = object(ctx, id);
        Ok(self.blob(ctx, |mut c, t| async move { c.has_object(timed(message, t)).await }).await?.exists)
    }

    async fn object_info(&self, ctx: &InvocationContext<BridgeLink>, id: &ObjectId) -> Result<ObjectInfo, RpcError> {
        let message = object(ctx, id);
        let info = self.blob(ctx, |mut c, t| async move { c.object_info(timed(message, t)).await }).await?;
        Ok(ObjectInfo { name: info.name, container: info.container, created_at: info.created_at, size: info.size })
    }

    async fn clear(&self, ctx: &InvocationContext<BridgeLink>, name: &str) -> Result<(), RpcError> {
        let message = container(ctx, name);
        self.blob(ctx, |mut c, t| async move { c.clear(timed(message, t)).await }).await.map(drop)
    }
}
