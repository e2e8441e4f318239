//! The provider: one backend per link, and the dispatch of blobstore operations to it, names
//! checked first.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
};

use bytes::Bytes;
use ferry_provider_sdk::{
    ByteStream, Empty, ErrorKind, InvocationContext, LinkKey, LinkPut, Provider, ProviderContext, RpcError,
    blobstore::{
        ContainerRequest, CopyRequest, DataResponse, ExistsResponse, GetDataRequest, ListRequest, ListResponse,
        ObjectRequest, ObjectsRequest, WIT_NAMESPACE, WIT_PACKAGE, WriteDataRequest, op,
    },
    codec,
};
use futures::StreamExt as _;
use serde::{Serialize, de::DeserializeOwned};
use tracing::info;

use crate::{
    backend::{Backend, fs::FsBackend, nats::NatsBackend},
    config::BackendConfig,
    names,
};

/// Most names one `list-objects` page carries.
const MAX_PAGE: usize = 1000;

/// Blob storage for linked components.
#[derive(Default)]
pub(crate) struct BlobstoreProvider {
    backends: RwLock<HashMap<LinkKey, Arc<dyn Backend>>>,
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

impl BlobstoreProvider {
    fn backend(&self, ctx: &InvocationContext) -> Result<Arc<dyn Backend>, RpcError> {
        self.backends
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&ctx.link.link.key())
            .cloned()
            .ok_or_else(|| RpcError::not_linked("the link's backend is not ready"))
    }

    async fn dispatch(&self, ctx: &InvocationContext, operation: &str, payload: &[u8]) -> Result<Vec<u8>, RpcError> {
        let backend = self.backend(ctx)?;
        match operation {
            op::CREATE_CONTAINER => {
                let req: ContainerRequest = decode(payload)?;
                names::container(&req.container)?;
                backend.create_container(&req.container).await?;
                empty()
            }
            op::GET_CONTAINER => {
                let req: ContainerRequest = decode(payload)?;
                names::container(&req.container)?;
                backend.container_info(&req.container).await?;
                empty()
            }
            op::DELETE_CONTAINER => {
                let req: ContainerRequest = decode(payload)?;
                names::container(&req.container)?;
                backend.delete_container(&req.container).await?;
                empty()
            }
            op::CONTAINER_EXISTS => {
                let req: ContainerRequest = decode(payload)?;
                names::container(&req.container)?;
                encode(&ExistsResponse { exists: backend.container_exists(&req.container).await? })
            }
            op::CONTAINER_INFO => {
                let req: ContainerRequest = decode(payload)?;
                names::container(&req.container)?;
                encode(&backend.container_info(&req.container).await?)
            }
            op::COPY_OBJECT | op::MOVE_OBJECT => {
                let req: CopyRequest = decode(payload)?;
                for id in [&req.src, &req.dest] {
                    names::container(&id.container)?;
                    names::object(&id.object)?;
                }
                let (src, dest) = (
                    (req.src.container.as_str(), req.src.object.as_str()),
                    (req.dest.container.as_str(), req.dest.object.as_str()),
                );
                if src == dest {
                    return empty();
                }
                if operation == op::COPY_OBJECT {
                    backend.copy(src, dest).await?;
                } else {
                    backend.rename(src, dest).await?;
                }
                empty()
            }
            op::GET_DATA => {
                let req: GetDataRequest = decode(payload)?;
                names::container(&req.container)?;
                names::object(&req.object)?;
                if req.start > req.end {
                    return Err(RpcError::bad_request(format!(
                        "range start {} is after its end {}",
                        req.start, req.end
                    )));
                }
                let (size, data) = backend.read(&req.container, &req.object, req.start, req.end).await?;
                let (data, data_stream) = ctx.offer_body(data).await?;
                encode(&DataResponse { size, data, data_stream })
            }
            op::WRITE_DATA => {
                let mut req: WriteDataRequest = decode(payload)?;
                names::container(&req.container)?;
                names::object(&req.object)?;
                let body = ctx.pull_body(std::mem::take(&mut req.data), req.data_stream.as_deref())?;
                let data: ByteStream = Box::pin(body.map(|chunk: Result<Bytes, RpcError>| chunk));
                backend.write(&req.container, &req.object, data).await?;
                empty()
            }
            op::LIST_OBJECTS => {
                let req: ListRequest = decode(payload)?;
                names::container(&req.container)?;
                let limit = (req.limit as usize).clamp(1, MAX_PAGE);
                let (names, done) = backend.list(&req.container, req.after.as_deref(), limit).await?;
                encode(&ListResponse { names, done })
            }
            op::DELETE_OBJECT => {
                let req: ObjectRequest = decode(payload)?;
                names::container(&req.container)?;
                names::object(&req.object)?;
                backend.delete_object(&req.container, &req.object).await?;
                empty()
            }
            op::DELETE_OBJECTS => {
                let req: ObjectsRequest = decode(payload)?;
                names::container(&req.container)?;
                for object in &req.objects {
                    names::object(object)?;
                }
                for object in &req.objects {
                    backend.delete_object(&req.container, object).await?;
                }
                empty()
            }
            op::HAS_OBJECT => {
                let req: ObjectRequest = decode(payload)?;
                names::container(&req.container)?;
                names::object(&req.object)?;
                encode(&ExistsResponse { exists: backend.has_object(&req.container, &req.object).await? })
            }
            op::OBJECT_INFO => {
                let req: ObjectRequest = decode(payload)?;
                names::container(&req.container)?;
                names::object(&req.object)?;
                encode(&backend.object_info(&req.container, &req.object).await?)
            }
            op::CLEAR => {
                let req: ContainerRequest = decode(payload)?;
                names::container(&req.container)?;
                backend.clear(&req.container).await?;
                empty()
            }
            other => Err(RpcError::new(ErrorKind::UnknownOperation, format!("blobstore does not serve {other:?}"))),
        }
    }
}

impl Provider for BlobstoreProvider {
    async fn handle(&self, ctx: InvocationContext, operation: &str, payload: Vec<u8>) -> Result<Vec<u8>, RpcError> {
        let result = self.dispatch(&ctx, operation, &payload).await;
        if let Err(err) = &result
            && matches!(err.kind, ErrorKind::BadRequest | ErrorKind::Denied)
        {
            tracing::warn!(component = %ctx.origin, operation, kind = ?err.kind, cause = %err.message, "refused");
        }
        result
    }

    async fn on_link_put(&self, ctx: &ProviderContext, put: &LinkPut) -> Result<(), String> {
        let link = &put.link;
        if link.wit_namespace != WIT_NAMESPACE || link.wit_package != WIT_PACKAGE || link.target_id != ctx.provider_id()
        {
            return Err("link components to this provider over wasi:blobstore".into());
        }
        let config = BackendConfig::from_link(&put.target_config, ctx.config())?;
        let backend: Arc<dyn Backend> = match &config {
            BackendConfig::Fs { root } => Arc::new(FsBackend::new(root)?),
            BackendConfig::Nats { bucket_prefix } => Arc::new(NatsBackend::new(ctx.nats().clone(), bucket_prefix)),
        };
        info!(component = %link.source_id, name = %link.name, backend = ?config, "blobstore link ready");
        self.backends.write().unwrap_or_else(|p| p.into_inner()).insert(link.key(), backend);
        Ok(())
    }

    async fn on_link_del(&self, _ctx: &ProviderContext, put: &LinkPut) {
        self.backends.write().unwrap_or_else(|p| p.into_inner()).remove(&put.link.key());
    }
}
