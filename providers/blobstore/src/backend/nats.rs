//! NATS JetStream object store backend: a container is an object store bucket on the lattice's
//! NATS (named by [`ComponentStoreNames`]: scoped by lattice, or `{bucket_prefix}{container}`),
//! an object an object in it. Objects are
//! written and read in the object store's own 128 KiB chunks, streamed both ways.
//!
//! Writes follow the object store's format (chunks on `$O.{bucket}.C.{nuid}`, then the
//! metadata on `$O.{bucket}.M.{name}` with a subject rollup) but keep the chunk subject in hand,
//! so an upload that fails or is abandoned part-way has its chunks purged instead of left in
//! the stream for good.

use std::{collections::HashMap, sync::Mutex};

use async_trait::async_trait;
use base64::{Engine as _, engine::general_purpose::URL_SAFE};
use ferry_provider_sdk::{
    ByteStream, ComponentStoreNames, ErrorKind, LinkConnection, RpcError,
    async_nats::{
        self,
        jetstream::{
            self,
            context::{GetStreamError, GetStreamErrorKind},
            object_store::{self, GetErrorKind, InfoErrorKind, ObjectStore},
        },
    },
    blobstore::{ContainerInfo, ObjectInfo},
    is_reserved_store_name, object_stream,
};
use futures::{StreamExt as _, TryStreamExt as _};
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncReadExt as _;
use tokio_util::io::{ReaderStream, StreamReader};
use tracing::{debug, warn};

use super::Backend;
use crate::config::StoreSettings;

/// The consumers an object store may hold at once: one per read in progress or just finished.
const MAX_READERS: i32 = 100_000;

/// Bytes read from an object per chunk of a stream.
const READ_CHUNK: usize = 128 * 1024;
/// Bytes per stored chunk: the object store's default, so other clients read what we write.
const WRITE_CHUNK: usize = 128 * 1024;

/// Containers as object stores on one NATS.
pub(crate) struct NatsBackend {
    /// The link's connection (the lattice's, or its own, which it keeps open).
    _connection: LinkConnection,
    js: jetstream::Context,
    names: ComponentStoreNames,
    /// How the object stores it creates are set up.
    settings: StoreSettings,
    /// Containers found to exist, with their object store's name, so each call does not look
    /// the name up again.
    found: Mutex<HashMap<String, String>>,
}

impl NatsBackend {
    pub(crate) fn new(connection: LinkConnection, names: ComponentStoreNames, settings: StoreSettings) -> Self {
        let mut js = connection.jetstream();
        if let Some(wait) = settings.write_wait {
            js.set_timeout(wait);
        }
        Self { _connection: connection, js, names, settings, found: Mutex::new(HashMap::new()) }
    }

    /// The object store of `container`: the existing one (its primary name first, then the name
    /// from before lattice scoping), the primary name if neither exists.
    async fn bucket(&self, container: &str) -> Result<String, RpcError> {
        if !container.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
            return Err(RpcError::bad_request(format!(
                "container name {container:?} is not valid on the NATS backend (letters, digits, _ and -)"
            )));
        }
        if let Some(bucket) = self.found.lock().unwrap_or_else(|p| p.into_inner()).get(container) {
            return Ok(bucket.clone());
        }
        let primary = self.names.primary(container);
        if is_reserved_store_name(&primary) {
            warn!(container, bucket = %primary, "refused a reserved object store name");
            return Err(RpcError::new(
                ErrorKind::Denied,
                format!("container {container:?} maps to {primary:?}, a name reserved for the lattice and JetStream"),
            ));
        }
        let bucket = if self.exists(&primary).await? {
            primary
        } else if let Some(legacy) = self.names.legacy(container)
            && self.exists(&legacy).await?
        {
            warn!(
                container,
                bucket = %legacy,
                scoped = %primary,
                "using a blob container from before containers were scoped by lattice; copy its objects to the scoped container, or set the link's bucket_prefix, to keep lattices apart"
            );
            legacy
        } else {
            return Ok(primary);
        };
        self.allow_readers(&bucket).await;
        self.found.lock().unwrap_or_else(|p| p.into_inner()).insert(container.to_owned(), bucket.clone());
        Ok(bucket)
    }

    /// Let object store `bucket` hold [`MAX_READERS`] consumers. Every read of an object is a
    /// consumer of its own, which the server keeps a few seconds after the read; nats-server
    /// 2.15 limits a stream that sets no limit to 1000, which steady reads of one container
    /// reach (soak run, issue 13). Failing to raise it is logged, not fatal.
    async fn allow_readers(&self, bucket: &str) {
        let stream = object_stream(bucket);
        let raised = async {
            let mut handle = self.js.get_stream(&stream).await.map_err(|e| e.to_string())?;
            let config = handle.info().await.map_err(|e| e.to_string())?.config.clone();
            if config.max_consumers >= MAX_READERS {
                return Ok(());
            }
            let config = async_nats::jetstream::stream::Config { max_consumers: MAX_READERS, ..config };
            self.js.update_stream(config).await.map(drop).map_err(|e| e.to_string())
        };
        if let Err(err) = raised.await {
            warn!(stream, cause = %err, "cannot raise the object store's consumer limit; busy containers may refuse reads");
        }
    }

    /// Whether the object store `bucket` exists.
    async fn exists(&self, bucket: &str) -> Result<bool, RpcError> {
        match self.js.get_stream(object_stream(bucket)).await {
            Ok(_) => Ok(true),
            Err(err) if stream_missing(&err) => Ok(false),
            Err(err) => Err(unavailable("object store lookup", err)),
        }
    }

    async fn store(&self, container: &str) -> Result<ObjectStore, RpcError> {
        let bucket = self.bucket(container).await?;
        match self.js.get_object_store(&bucket).await.map_err(|e| store_error(container, &e)) {
            // Deleted since it was found, perhaps made anew under the other name: look again.
            Err(err) if err.kind == ErrorKind::NotFound && self.forget(container) => {
                let bucket = self.bucket(container).await?;
                self.js.get_object_store(&bucket).await.map_err(|e| store_error(container, &e))
            }
            opened => opened,
        }
    }

    /// Drop what was found about `container`; whether there was anything.
    fn forget(&self, container: &str) -> bool {
        self.found.lock().unwrap_or_else(|p| p.into_inner()).remove(container).is_some()
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

impl NatsBackend {
    /// Publish `data` as chunks on `subject`, each acknowledged; its chunk count, size and
    /// SHA-256.
    async fn put_chunks(&self, subject: &str, data: ByteStream) -> Result<(usize, usize, [u8; 32]), RpcError> {
        let mut reader =
            StreamReader::new(data.map(|chunk| chunk.map_err(|e| std::io::Error::other(ChunkSourceError(e)))));
        let (mut count, mut size, mut sha) = (0, 0, Sha256::new());
        let mut buffer = bytes::BytesMut::with_capacity(WRITE_CHUNK);
        loop {
            // Fill a whole chunk (or reach the end) before publishing it.
            while buffer.len() < WRITE_CHUNK {
                match reader.read_buf(&mut buffer).await {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(err) => return Err(source_error(err)),
                }
                if buffer.capacity() == buffer.len() && buffer.len() < WRITE_CHUNK {
                    buffer.reserve(WRITE_CHUNK - buffer.len());
                }
            }
            if buffer.is_empty() {
                break;
            }
            let payload = buffer.split_to(buffer.len().min(WRITE_CHUNK)).freeze();
            sha.update(&payload);
            size += payload.len();
            count += 1;
            let ack =
                self.js.publish(subject.to_owned(), payload).await.map_err(|e| unavailable("chunk publish", e))?;
            ack.await.map_err(|e| unavailable("chunk ack", e))?;
        }
        Ok((count, size, sha.finalize().into()))
    }

    async fn publish_meta(&self, bucket: &str, info: &object_store::ObjectInfo) -> Result<(), String> {
        let subject = format!("$O.{bucket}.M.{}", URL_SAFE.encode(&info.name));
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(async_nats::header::NATS_ROLLUP, "sub");
        let body = serde_json::to_vec(info).map_err(|e| e.to_string())?;
        self.js
            .publish_with_headers(subject, headers, body.into())
            .await
            .map_err(|e| e.to_string())?
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// Remove every message on `subject` (chunks nobody will read); failures are logged.
    async fn purge(&self, bucket: &str, subject: &str) {
        let purged = match self.js.get_stream(object_stream(bucket)).await {
            Ok(stream) => stream.purge().filter(subject).await.map(|_| ()).map_err(|e| e.to_string()),
            Err(err) => Err(err.to_string()),
        };
        match purged {
            Ok(()) => debug!(%subject, "purged chunks"),
            Err(err) => warn!(%subject, cause = %err, "failed to purge chunks; they stay in the stream"),
        }
    }
}

/// A failure of the data being written (the writer's stream), kept apart from I/O errors so its
/// kind survives the trip through `AsyncRead`.
#[derive(Debug)]
struct ChunkSourceError(RpcError);

impl std::fmt::Display for ChunkSourceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl std::error::Error for ChunkSourceError {}

fn source_error(err: std::io::Error) -> RpcError {
    match err.get_ref().and_then(|inner| inner.downcast_ref::<ChunkSourceError>()) {
        Some(ChunkSourceError(rpc)) => rpc.clone(),
        None => RpcError::provider(format!("reading the data failed: {err}")),
    }
}

fn unavailable(what: &str, err: impl std::fmt::Display) -> RpcError {
    RpcError::new(ErrorKind::Unavailable, format!("object store {what} failed: {err}"))
}

/// Whether a stream lookup failed because the stream does not exist.
fn stream_missing(err: &GetStreamError) -> bool {
    matches!(err.kind(), GetStreamErrorKind::JetStream(j) if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND)
}

/// Why opening a container's object store failed: `not_found` only when the stream is missing.
fn store_error(container: &str, err: &jetstream::context::ObjectStoreError) -> RpcError {
    let missing = std::error::Error::source(err)
        .and_then(|source| source.downcast_ref::<GetStreamError>())
        .is_some_and(stream_missing);
    if missing {
        RpcError::new(ErrorKind::NotFound, format!("container {container} does not exist"))
    } else {
        RpcError::new(ErrorKind::Unavailable, format!("cannot open container {container}: {err}"))
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
        let bucket = self.bucket(container).await?;
        if self.exists(&bucket).await? {
            return Ok(());
        }
        // Gone since it was found (another instance deleted it): made anew under the primary name.
        self.forget(container);
        let bucket = self.bucket(container).await?;
        self.js
            .create_object_store(object_store::Config {
                bucket: bucket.clone(),
                num_replicas: self.settings.replicas,
                max_age: self.settings.max_age.unwrap_or_default(),
                max_bytes: self.settings.max_bytes.unwrap_or(-1),
                storage: if self.settings.memory {
                    async_nats::jetstream::stream::StorageType::Memory
                } else {
                    async_nats::jetstream::stream::StorageType::File
                },
                compression: self.settings.compression,
                ..Default::default()
            })
            .await
            .map_err(|e| RpcError::provider(format!("cannot create container {container}: {e}")))?;
        self.allow_readers(&bucket).await;
        Ok(())
    }

    async fn container_info(&self, container: &str) -> Result<ContainerInfo, RpcError> {
        self.store(container).await?;
        let stream = object_stream(&self.bucket(container).await?);
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
        let deleted = self
            .js
            .delete_object_store(self.bucket(container).await?)
            .await
            .map_err(|e| RpcError::provider(format!("cannot delete container {container}: {e}")));
        self.forget(container);
        deleted.map(|_| ())
    }

    async fn write(&self, container: &str, object: &str, data: ByteStream) -> Result<(), RpcError> {
        let store = self.store(container).await?;
        let bucket = self.bucket(container).await?;
        let previous = store.info(object).await.ok();
        let nuid = uuid::Uuid::new_v4().simple().to_string();
        let chunks = format!("$O.{bucket}.C.{nuid}");
        let written = match self.put_chunks(&chunks, data).await {
            Ok(written) => written,
            Err(err) => {
                self.purge(&bucket, &chunks).await;
                return Err(RpcError::new(err.kind, format!("writing {container}/{object} failed: {}", err.message)));
            }
        };
        let (count, size, digest) = written;
        let info = object_store::ObjectInfo {
            name: object.to_owned(),
            description: None,
            metadata: Default::default(),
            headers: None,
            options: Some(object_store::ObjectOptions { link: None, max_chunk_size: Some(WRITE_CHUNK) }),
            bucket: bucket.clone(),
            nuid,
            size,
            chunks: count,
            modified: Some(async_nats::datetime::now()),
            digest: Some(format!("SHA-256={}", URL_SAFE.encode(digest))),
            deleted: false,
        };
        if let Err(err) = self.publish_meta(&bucket, &info).await {
            self.purge(&bucket, &chunks).await;
            return Err(RpcError::provider(format!("writing {container}/{object} failed: {err}")));
        }
        if let Some(previous) = previous.filter(|p| !p.nuid.is_empty()) {
            self.purge(&bucket, &format!("$O.{bucket}.C.{}", previous.nuid)).await;
        }
        Ok(())
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
