//! The provider: one backend per link (held by the SDK as the link's state), and the
//! blobstore operations on it, names checked first.

use ferry_provider_sdk::{
    ByteStream, ComponentStoreKind, ComponentStoreNames, ErrorKind, InvocationContext, LinkPut, Provider,
    ProviderContext, RpcError,
    blobstore::{self, Blobstore, ContainerInfo, ListResponse, ObjectId, ObjectInfo, WIT_NAMESPACE, WIT_PACKAGE},
};
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
pub(crate) struct BlobstoreProvider;

/// A link's state: where its containers live.
type LinkBackend = Box<dyn Backend>;
type Ctx = InvocationContext<LinkBackend>;

/// Check an object's names.
fn checked(id: &ObjectId) -> Result<(&str, &str), RpcError> {
    names::container(&id.container)?;
    names::object(&id.object)?;
    Ok((&id.container, &id.object))
}

impl Provider for BlobstoreProvider {
    type Link = LinkBackend;

    async fn handle(&self, ctx: Ctx, operation: &str, payload: Vec<u8>) -> Result<Vec<u8>, RpcError> {
        let result = blobstore::dispatch(self, &ctx, operation, &payload).await;
        if let Err(err) = &result
            && matches!(err.kind, ErrorKind::BadRequest | ErrorKind::Denied)
        {
            tracing::warn!(component = %ctx.origin, operation, kind = ?err.kind, cause = %err.message, "refused");
        }
        result
    }

    async fn on_link_put(&self, ctx: &ProviderContext, put: &LinkPut) -> Result<LinkBackend, String> {
        let link = &put.link;
        if link.wit_namespace != WIT_NAMESPACE || link.wit_package != WIT_PACKAGE || link.target_id != ctx.provider_id()
        {
            return Err("link components to this provider over wasi:blobstore".into());
        }
        let config = BackendConfig::from_link(&put.target_config, ctx.config())?;
        let backend: LinkBackend = match &config {
            BackendConfig::Fs { root } => Box::new(FsBackend::new(root)?),
            BackendConfig::Nats { nats, bucket_prefix, store } => {
                let names = match bucket_prefix {
                    Some(prefix) => ComponentStoreNames::Prefixed(prefix.clone()),
                    None => ComponentStoreNames::lattice(ComponentStoreKind::Blob, ctx.lattice())
                        .map_err(|e| e.to_string())?,
                };
                let connection = nats.connect_store(ctx, "ferry-blobstore-backend").await?;
                if nats.needs_own_connection() || nats.js_domain.is_some() {
                    // Fail the link now if JetStream is off there, not on the first call.
                    connection
                        .jetstream()
                        .query_account()
                        .await
                        .map_err(|e| format!("JetStream unavailable for this link: {e}"))?;
                }
                Box::new(NatsBackend::new(connection, names, store.clone()))
            }
        };
        info!(component = %link.source_id, name = %link.name, backend = ?config, "blobstore link ready");
        Ok(backend)
    }
}

impl Blobstore for BlobstoreProvider {
    async fn create_container(&self, ctx: &Ctx, container: &str) -> Result<(), RpcError> {
        names::container(container)?;
        ctx.state.create_container(container).await
    }

    async fn get_container(&self, ctx: &Ctx, container: &str) -> Result<(), RpcError> {
        names::container(container)?;
        ctx.state.container_info(container).await.map(|_| ())
    }

    async fn delete_container(&self, ctx: &Ctx, container: &str) -> Result<(), RpcError> {
        names::container(container)?;
        ctx.state.delete_container(container).await
    }

    async fn container_exists(&self, ctx: &Ctx, container: &str) -> Result<bool, RpcError> {
        names::container(container)?;
        ctx.state.container_exists(container).await
    }

    async fn container_info(&self, ctx: &Ctx, container: &str) -> Result<ContainerInfo, RpcError> {
        names::container(container)?;
        ctx.state.container_info(container).await
    }

    async fn copy_object(&self, ctx: &Ctx, src: &ObjectId, dest: &ObjectId) -> Result<(), RpcError> {
        let (src, dest) = (checked(src)?, checked(dest)?);
        if src == dest { Ok(()) } else { ctx.state.copy(src, dest).await }
    }

    async fn move_object(&self, ctx: &Ctx, src: &ObjectId, dest: &ObjectId) -> Result<(), RpcError> {
        let (src, dest) = (checked(src)?, checked(dest)?);
        if src == dest { Ok(()) } else { ctx.state.rename(src, dest).await }
    }

    async fn get_data(
        &self,
        ctx: &Ctx,
        object: &ObjectId,
        start: u64,
        end: u64,
    ) -> Result<(u64, ByteStream), RpcError> {
        let (container, object) = checked(object)?;
        ctx.state.read(container, object, start, end).await
    }

    async fn write_data(&self, ctx: &Ctx, object: &ObjectId, data: ByteStream) -> Result<(), RpcError> {
        let (container, object) = checked(object)?;
        ctx.state.write(container, object, data).await
    }

    async fn list_objects(
        &self,
        ctx: &Ctx,
        container: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<ListResponse, RpcError> {
        names::container(container)?;
        let limit = (limit as usize).clamp(1, MAX_PAGE);
        let (names, done) = ctx.state.list(container, after, limit).await?;
        Ok(ListResponse { names, done })
    }

    async fn delete_object(&self, ctx: &Ctx, object: &ObjectId) -> Result<(), RpcError> {
        let (container, object) = checked(object)?;
        ctx.state.delete_object(container, object).await
    }

    async fn delete_objects(&self, ctx: &Ctx, container: &str, objects: &[String]) -> Result<(), RpcError> {
        names::container(container)?;
        for object in objects {
            names::object(object)?;
        }
        for object in objects {
            ctx.state.delete_object(container, object).await?;
        }
        Ok(())
    }

    async fn has_object(&self, ctx: &Ctx, object: &ObjectId) -> Result<bool, RpcError> {
        let (container, object) = checked(object)?;
        ctx.state.has_object(container, object).await
    }

    async fn object_info(&self, ctx: &Ctx, object: &ObjectId) -> Result<ObjectInfo, RpcError> {
        let (container, object) = checked(object)?;
        ctx.state.object_info(container, object).await
    }

    async fn clear(&self, ctx: &Ctx, container: &str) -> Result<(), RpcError> {
        names::container(container)?;
        ctx.state.clear(container).await
    }
}
