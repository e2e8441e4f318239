//! NATS JetStream object store backend: a container is an object store bucket
//! `{bucket_prefix}{container}` on the lattice's NATS, an object an object in it. Objects are
//! written and read in the object store's own 128 KiB chunks, streamed both ways.

use async_trait::async_trait;
use ferry_provider_sdk::{
    ErrorKind, RpcError,
    async_nats::{
        self,
        jetstream::{
            self,
            object_store::{self, GetErrorKind, InfoErrorKind, ObjectStore},
        },
    },
    blobstore::{ContainerInfo, ObjectInfo},
    is_reserved_store_name,
    stream::ByteStream,
};
use futures::{StreamExt as _, TryStreamExt as _};
use tokio::io::AsyncReadExt as _;
use tokio_util::io::{ReaderStream, StreamReader};
use tracing::warn;

use super::Backend;

/// Bytes read from an object per chunk of a stream.
const READ_CHUNK: usize = 128 * 1024;

/// Containers as object stores on one NATS.
pub(crate) struct NatsBackend {
    js: jetstream::Context,
    prefix: String,
}

impl NatsBackend {
    pub(crate) fn new(nats: async_nats::Client, bucket_prefix: &str) -> Self {
        Self { js: jetstream::new(nats), prefix: bucket_prefix.to_owned() }
    }

    /// The bucket of `container`; object store buckets allow fewer characters than names do.
    fn bucket(&self, container: &str) -> Result<String, RpcError> {
        if !container.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
            return Err(RpcError::bad_request(format!(
                "container name {container:?} is not valid on the NATS backend (letters, digits, _ and -)"
            )));
        }
        let bucket = format!("{}{container}", self.prefix);
        if is_reserved_store_name(&bucket) {
            warn!(container, bucket = %bucket, "refused a reserved object store name");
            return Err(RpcError::new(
                ErrorKind::Denied,
                format!("container {container:?} maps to {bucket:?}, a name reserved for the lattice and JetStream"),
            ));
        }
        Ok(bucket)
    }

    async fn store(&self, container: &str) -> Result<ObjectStore, RpcError> {
        let bucket = self.bucket(container)?;
        self.js
            .get_object_store(&bucket)
            .await
            .map_err(|_| RpcError::new(ErrorKind::NotFound, format!("container {container} does not exist")))
    }

    async fn info(
        &self,
        store: &ObjectStore,
        container: &str,
        object: &str,
    ) -> Result<object_store::ObjectInfo, RpcError> {
        match store.info(object).await {
            Ok(info) if !info.deleted => Ok(info),
            Ok(_) => Err(not_found(container, object)),
            Err(err) if err.kind() == InfoErrorKind::NotFound => Err(not_found(container, object)),
            Err(err) => Err(RpcError::provider(format!("object store: {err}"))),
        }
    }
}

fn not_found(container: &str, object: &str) -> RpcError {
    RpcError::new(ErrorKind::NotFound, format!("object {container}/{object} does not exist"))
}

fn seconds(time: Option<async_nats::jetstream::object_store::ObjectInfo>) -> u64 {
    time.and_then(|info| info.modified).map_or(0, |t| u64::try_from(t.unix_timestamp()).unwrap_or(0))
}

#[async_trait]
impl Backend for NatsBackend {
    async fn create_container(&self, container: &str) -> Result<(), RpcError> {
        let bucket = self.bucket(container)?;
        if self.js.get_object_store(&bucket).await.is_ok() {
            return Ok(());
        }
        self.js
            .create_object_store(object_store::Config { bucket, ..Default::default() })
            .await
            .map(|_| ())
            .map_err(|e| RpcError::provider(format!("cannot create container {container}: {e}")))
    }

    async fn container_info(&self, container: &str) -> Result<ContainerInfo, RpcError> {
        self.store(container).await?;
        let stream = format!("OBJ_{}", self.bucket(container)?);
        let created_at = match self.js.get_stream(&stream).await {
            Ok(mut stream) => stream.info().await.map_or(0, |i| u64::try_from(i.created.unix_timestamp()).unwrap_or(0)),
            Err(_) => 0,
        };
        Ok(ContainerInfo { name: container.to_owned(), created_at })
    }

    async fn container_exists(&self, container: &str) -> Result<bool, RpcError> {
        match self.store(container).await {
            Ok(_) => Ok(true),
            Err(err) if err.kind == ErrorKind::NotFound => Ok(false),
            Err(err) => Err(err),
        }
    }

    async fn delete_container(&self, container: &str) -> Result<(), RpcError> {
        self.store(container).await?;
        self.js
            .delete_object_store(self.bucket(container)?)
            .await
            .map_err(|e| RpcError::provider(format!("cannot delete container {container}: {e}")))
    }

    async fn write(&self, container: &str, object: &str, data: ByteStream) -> Result<(), RpcError> {
        let store = self.store(container).await?;
        let mut reader = StreamReader::new(data.map(|chunk| chunk.map_err(std::io::Error::other)));
        store
            .put(object, &mut reader)
            .await
            .map(|_| ())
            .map_err(|e| RpcError::provider(format!("writing {container}/{object} failed: {e}")))
    }

    async fn read(&self, container: &str, object: &str, start: u64, end: u64) -> Result<(u64, ByteStream), RpcError> {
        let store = self.store(container).await?;
        let size = self.info(&store, container, object).await?.size as u64;
        let len = if start >= size { 0 } else { end.min(size - 1) - start + 1 };
        let mut reader = match store.get(object).await {
            Ok(reader) => reader,
            Err(err) if err.kind() == GetErrorKind::NotFound => return Err(not_found(container, object)),
            Err(err) => return Err(RpcError::provider(format!("reading {container}/{object} failed: {err}"))),
        };
        // The object store reads from the start: skip what comes before the range.
        let skipped = tokio::io::copy(&mut (&mut reader).take(start.min(size)), &mut tokio::io::sink())
            .await
            .map_err(|e| RpcError::provider(format!("reading {container}/{object} failed: {e}")))?;
        if skipped < start.min(size) {
            return Err(RpcError::provider(format!("{container}/{object} ended early")));
        }
        let stream = ReaderStream::with_capacity(reader.take(len), READ_CHUNK)
            .map(|chunk| chunk.map_err(|e| RpcError::provider(format!("reading failed: {e}"))));
        Ok((len, Box::pin(stream)))
    }

    async fn list(&self, container: &str, after: Option<&str>, limit: usize) -> Result<(Vec<String>, bool), RpcError> {
        let store = self.store(container).await?;
        let list = store.list().await.map_err(|e| RpcError::provider(format!("listing {container} failed: {e}")))?;
        let mut names: Vec<String> = list
            .try_filter_map(|info| async move { Ok((!info.deleted).then_some(info.name)) })
            .try_collect()
            .await
            .map_err(|e| RpcError::provider(format!("listing {container} failed: {e}")))?;
        names.sort_unstable();
        let start = after.map_or(0, |after| names.partition_point(|n| n.as_str() <= after));
        let rest = &names[start..];
        Ok((rest.iter().take(limit).cloned().collect(), rest.len() <= limit))
    }

    async fn object_info(&self, container: &str, object: &str) -> Result<ObjectInfo, RpcError> {
        let store = self.store(container).await?;
        let info = self.info(&store, container, object).await?;
        let size = info.size as u64;
        Ok(ObjectInfo {
            name: object.to_owned(),
            container: container.to_owned(),
            created_at: seconds(Some(info)),
            size,
        })
    }

    async fn has_object(&self, container: &str, object: &str) -> Result<bool, RpcError> {
        let store = self.store(container).await?;
        match self.info(&store, container, object).await {
            Ok(_) => Ok(true),
            Err(err) if err.kind == ErrorKind::NotFound => Ok(false),
            Err(err) => Err(err),
        }
    }

    async fn delete_object(&self, container: &str, object: &str) -> Result<(), RpcError> {
        let store = self.store(container).await?;
        if !self.has_object(container, object).await? {
            return Ok(());
        }
        store.delete(object).await.map_err(|e| RpcError::provider(format!("deleting {container}/{object} failed: {e}")))
    }

    async fn clear(&self, container: &str) -> Result<(), RpcError> {
        let (names, _) = self.list(container, None, usize::MAX).await?;
        for name in names {
            self.delete_object(container, &name).await?;
        }
        Ok(())
    }

    async fn copy(&self, src: (&str, &str), dest: (&str, &str)) -> Result<(), RpcError> {
        self.store(dest.0).await?;
        let (_, data) = self.read(src.0, src.1, 0, u64::MAX).await?;
        self.write(dest.0, dest.1, data).await
    }

    async fn rename(&self, src: (&str, &str), dest: (&str, &str)) -> Result<(), RpcError> {
        self.copy(src, dest).await?;
        self.delete_object(src.0, src.1).await
    }
}
