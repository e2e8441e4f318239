//! Filesystem backend: a container is a directory under the link's `root`, an object a file in
//! it (`/` in a name makes subdirectories). Nothing outside the root is read or written:
//! names are checked first ([`crate::names`]), and every path is walked from the root refusing
//! symlinks, with the final open made `O_NOFOLLOW`. Writes go to a temporary file in the
//! container that is synced and renamed over the object, so readers see the old or the new
//! version and a crash leaves the old one intact.

use std::{
    io::ErrorKind as IoKind,
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use async_trait::async_trait;
use ferry_provider_sdk::{
    ByteStream, ErrorKind, RpcError,
    blobstore::{ContainerInfo, ObjectInfo},
};
use futures::StreamExt as _;
use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _, AsyncWriteExt as _};
use tokio_util::io::ReaderStream;
use tracing::{info, warn};

use super::Backend;
use crate::names::TEMP_PREFIX;

/// Bytes read from a file per chunk of a stream.
const READ_CHUNK: usize = 128 * 1024;
/// A temporary file untouched this long belongs to a write that will never finish (its
/// provider was killed): a live write keeps appending, and stream pulls give up far sooner.
const STALE_TEMP_AGE: Duration = Duration::from_secs(3600);

/// Containers under one root directory.
pub(crate) struct FsBackend {
    root: PathBuf,
}

impl FsBackend {
    /// Use (creating if needed) `root`; it is resolved once, so a symlinked root is fine.
    pub(crate) fn new(root: &Path) -> Result<Self, String> {
        std::fs::create_dir_all(root).map_err(|e| format!("cannot create blobstore root {}: {e}", root.display()))?;
        let root = root.canonicalize().map_err(|e| format!("cannot resolve {}: {e}", root.display()))?;
        let sweep = root.clone();
        tokio::task::spawn_blocking(move || remove_stale_temps(&sweep, STALE_TEMP_AGE));
        Ok(Self { root })
    }

    /// Create `dir` and any missing ancestors below the root, syncing the parent of each new
    /// directory so its entry survives a crash.
    async fn create_dirs(&self, dir: &Path) -> Result<(), RpcError> {
        let mut missing = Vec::new();
        let mut probe = dir;
        while probe.starts_with(&self.root) && probe != self.root && tokio::fs::symlink_metadata(probe).await.is_err() {
            missing.push(probe.to_path_buf());
            match probe.parent() {
                Some(parent) => probe = parent,
                None => break,
            }
        }
        tokio::fs::create_dir_all(dir).await.map_err(|e| io_error(dir, &e))?;
        for created in missing.iter().rev() {
            if let Some(parent) = created.parent() {
                sync_dir(parent).await;
            }
        }
        Ok(())
    }

    /// The path of `container[/object]`, after checking that no existing component of it
    /// below the root is a symlink.
    async fn path(&self, container: &str, object: Option<&str>) -> Result<PathBuf, RpcError> {
        let mut path = self.root.clone();
        let parts = std::iter::once(container).chain(object.into_iter().flat_map(|o| o.split('/')));
        for part in parts {
            path.push(part);
            match tokio::fs::symlink_metadata(&path).await {
                Ok(meta) if meta.file_type().is_symlink() => {
                    return Err(RpcError::new(
                        ErrorKind::Denied,
                        format!("{} is a symlink; the blobstore does not follow links", path.display()),
                    ));
                }
                Ok(_) => {}
                Err(e) if e.kind() == IoKind::NotFound => break,
                Err(e) => return Err(io_error(&path, &e)),
            }
        }
        let mut full = self.root.join(container);
        if let Some(object) = object {
            full.push(object);
        }
        Ok(full)
    }

    async fn existing_container(&self, container: &str) -> Result<PathBuf, RpcError> {
        let dir = self.path(container, None).await?;
        match tokio::fs::metadata(&dir).await {
            Ok(meta) if meta.is_dir() => Ok(dir),
            Ok(_) => Err(RpcError::new(ErrorKind::NotFound, format!("container {container} does not exist"))),
            Err(e) if e.kind() == IoKind::NotFound => {
                Err(RpcError::new(ErrorKind::NotFound, format!("container {container} does not exist")))
            }
            Err(e) => Err(io_error(&dir, &e)),
        }
    }

    async fn open_object(
        &self,
        container: &str,
        object: &str,
    ) -> Result<(tokio::fs::File, std::fs::Metadata), RpcError> {
        self.existing_container(container).await?;
        let path = self.path(container, Some(object)).await?;
        let file = tokio::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .await
            .map_err(|e| not_found_or(&e, &path, container, object))?;
        let meta = file.metadata().await.map_err(|e| io_error(&path, &e))?;
        if !meta.is_file() {
            return Err(RpcError::new(ErrorKind::NotFound, format!("object {container}/{object} does not exist")));
        }
        Ok((file, meta))
    }

    /// Write `data` to a temporary file in `container_dir`, synced; returns its path.
    async fn spool(&self, container_dir: &Path, mut data: ByteStream) -> Result<PathBuf, RpcError> {
        let temp = container_dir.join(format!("{TEMP_PREFIX}{}", uuid::Uuid::new_v4().simple()));
        let mut file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&temp)
            .await
            .map_err(|e| io_error(&temp, &e))?;
        let written = async {
            while let Some(chunk) = data.next().await {
                file.write_all(&chunk?).await.map_err(|e| io_error(&temp, &e))?;
            }
            file.sync_all().await.map_err(|e| io_error(&temp, &e))
        }
        .await;
        if let Err(err) = written {
            let _ = tokio::fs::remove_file(&temp).await;
            return Err(err);
        }
        Ok(temp)
    }

    /// Move a finished temporary file over `container/object`, creating subdirectories.
    async fn commit(&self, temp: &Path, container: &str, object: &str) -> Result<(), RpcError> {
        let target = self.path(container, Some(object)).await?;
        if let Some(parent) = target.parent() {
            self.create_dirs(parent).await?;
            // Re-check: a directory created above must not have been swapped for a link.
            self.path(container, Some(object)).await?;
        }
        if tokio::fs::symlink_metadata(&target).await.is_ok_and(|m| m.is_dir()) {
            let _ = tokio::fs::remove_file(temp).await;
            return Err(RpcError::bad_request(format!("{container}/{object} is a directory of objects")));
        }
        if let Err(e) = tokio::fs::rename(temp, &target).await {
            let _ = tokio::fs::remove_file(temp).await;
            return Err(io_error(&target, &e));
        }
        if let Some(parent) = target.parent() {
            sync_dir(parent).await;
        }
        Ok(())
    }

    /// Every object name in `dir`, relative to it, unsorted.
    async fn walk(&self, dir: &Path) -> Result<Vec<String>, RpcError> {
        let mut names = Vec::new();
        let mut pending = vec![(dir.to_path_buf(), String::new())];
        while let Some((path, prefix)) = pending.pop() {
            let mut entries = tokio::fs::read_dir(&path).await.map_err(|e| io_error(&path, &e))?;
            while let Some(entry) = entries.next_entry().await.map_err(|e| io_error(&path, &e))? {
                let Ok(name) = entry.file_name().into_string() else { continue };
                if name.starts_with(TEMP_PREFIX) {
                    continue;
                }
                let kind = entry.file_type().await.map_err(|e| io_error(&entry.path(), &e))?;
                let full = if prefix.is_empty() { name } else { format!("{prefix}/{name}") };
                if kind.is_dir() {
                    pending.push((entry.path(), full));
                } else if kind.is_file() {
                    names.push(full);
                }
            }
        }
        Ok(names)
    }
}

/// Flush a directory's entries to disk; a failure only costs durability, so it is logged.
async fn sync_dir(dir: &Path) {
    let synced = match tokio::fs::File::open(dir).await {
        Ok(file) => file.sync_all().await,
        Err(err) => Err(err),
    };
    if let Err(err) = synced {
        warn!(dir = %dir.display(), cause = %err, "failed to sync directory");
    }
}

/// Remove temporary files under `root` that no write has touched for `age`: what a provider
/// killed mid-write left behind. Runs when a link opens the root.
fn remove_stale_temps(root: &Path, age: Duration) -> usize {
    let mut removed = 0;
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let Ok(kind) = entry.file_type() else { continue };
            if kind.is_dir() {
                pending.push(entry.path());
                continue;
            }
            let stale = entry.file_name().to_str().is_some_and(|n| n.starts_with(TEMP_PREFIX))
                && kind.is_file()
                && entry.metadata().and_then(|m| m.modified()).is_ok_and(|m| m.elapsed().is_ok_and(|e| e >= age));
            if stale && std::fs::remove_file(entry.path()).is_ok() {
                removed += 1;
            }
        }
    }
    if removed > 0 {
        info!(root = %root.display(), removed, "removed temporary files of writes that never finished");
    }
    removed
}

fn io_error(path: &Path, err: &std::io::Error) -> RpcError {
    RpcError::provider(format!("{}: {err}", path.display()))
}

fn not_found_or(err: &std::io::Error, path: &Path, container: &str, object: &str) -> RpcError {
    match err.kind() {
        IoKind::NotFound | IoKind::NotADirectory => {
            RpcError::new(ErrorKind::NotFound, format!("object {container}/{object} does not exist"))
        }
        // O_NOFOLLOW on a symlink.
        _ if err.raw_os_error() == Some(libc::ELOOP) => RpcError::new(
            ErrorKind::Denied,
            format!("{} is a symlink; the blobstore does not follow links", path.display()),
        ),
        _ => io_error(path, err),
    }
}

fn seconds(time: std::io::Result<SystemTime>) -> u64 {
    time.ok().and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok()).map_or(0, |d| d.as_secs())
}

fn created(meta: &std::fs::Metadata) -> u64 {
    match seconds(meta.created()) {
        0 => seconds(meta.modified()),
        s => s,
    }
}

#[async_trait]
impl Backend for FsBackend {
    async fn create_container(&self, container: &str) -> Result<(), RpcError> {
        let dir = self.path(container, None).await?;
        match tokio::fs::create_dir(&dir).await {
            Ok(()) => {
                sync_dir(&self.root).await;
                Ok(())
            }
            Err(e) if e.kind() == IoKind::AlreadyExists && dir.is_dir() => Ok(()),
            Err(e) => Err(io_error(&dir, &e)),
        }
    }

    async fn container_info(&self, container: &str) -> Result<ContainerInfo, RpcError> {
        let dir = self.existing_container(container).await?;
        let meta = tokio::fs::metadata(&dir).await.map_err(|e| io_error(&dir, &e))?;
        Ok(ContainerInfo { name: container.to_owned(), created_at: created(&meta) })
    }

    async fn container_exists(&self, container: &str) -> Result<bool, RpcError> {
        match self.existing_container(container).await {
            Ok(_) => Ok(true),
            Err(err) if err.kind == ErrorKind::NotFound => Ok(false),
            Err(err) => Err(err),
        }
    }

    async fn delete_container(&self, container: &str) -> Result<(), RpcError> {
        let dir = self.existing_container(container).await?;
        tokio::fs::remove_dir_all(&dir).await.map_err(|e| io_error(&dir, &e))
    }

    async fn write(&self, container: &str, object: &str, data: ByteStream) -> Result<(), RpcError> {
        let dir = self.existing_container(container).await?;
        let temp = self.spool(&dir, data).await?;
        let committed = self.commit(&temp, container, object).await;
        if committed.is_err() {
            let _ = tokio::fs::remove_file(&temp).await;
        }
        committed
    }

    async fn read(&self, container: &str, object: &str, start: u64, end: u64) -> Result<(u64, ByteStream), RpcError> {
        let (mut file, meta) = self.open_object(container, object).await?;
        let size = meta.len();
        if start > end {
            return Err(RpcError::bad_request(format!("range start {start} is after its end {end}")));
        }
        let len = if start >= size { 0 } else { end.min(size - 1) - start + 1 };
        file.seek(std::io::SeekFrom::Start(start.min(size))).await.map_err(|e| io_error(Path::new(object), &e))?;
        let stream = ReaderStream::with_capacity(file.take(len), READ_CHUNK)
            .map(|chunk| chunk.map_err(|e| RpcError::provider(format!("reading failed: {e}"))));
        Ok((len, Box::pin(stream)))
    }

    async fn list(&self, container: &str, after: Option<&str>, limit: usize) -> Result<(Vec<String>, bool), RpcError> {
        let dir = self.existing_container(container).await?;
        let mut names = self.walk(&dir).await?;
        names.sort_unstable();
        let start = after.map_or(0, |after| names.partition_point(|n| n.as_str() <= after));
        let rest = &names[start..];
        let page: Vec<String> = rest.iter().take(limit).cloned().collect();
        let done = rest.len() <= limit;
        Ok((page, done))
    }

    async fn object_info(&self, container: &str, object: &str) -> Result<ObjectInfo, RpcError> {
        let (_, meta) = self.open_object(container, object).await?;
        Ok(ObjectInfo {
            name: object.to_owned(),
            container: container.to_owned(),
            created_at: created(&meta),
            size: meta.len(),
        })
    }

    async fn has_object(&self, container: &str, object: &str) -> Result<bool, RpcError> {
        match self.open_object(container, object).await {
            Ok(_) => Ok(true),
            Err(err) if err.kind == ErrorKind::NotFound => Ok(false),
            Err(err) => Err(err),
        }
    }

    async fn delete_object(&self, container: &str, object: &str) -> Result<(), RpcError> {
        self.existing_container(container).await?;
        let path = self.path(container, Some(object)).await?;
        match tokio::fs::symlink_metadata(&path).await {
            Ok(meta) if meta.is_file() => tokio::fs::remove_file(&path).await.map_err(|e| io_error(&path, &e)),
            Ok(_) => Err(RpcError::bad_request(format!("{container}/{object} is not an object"))),
            Err(e) if matches!(e.kind(), IoKind::NotFound | IoKind::NotADirectory) => Ok(()),
            Err(e) => Err(io_error(&path, &e)),
        }
    }

    async fn clear(&self, container: &str) -> Result<(), RpcError> {
        let dir = self.existing_container(container).await?;
        let mut entries = tokio::fs::read_dir(&dir).await.map_err(|e| io_error(&dir, &e))?;
        while let Some(entry) = entries.next_entry().await.map_err(|e| io_error(&dir, &e))? {
            let path = entry.path();
            let kind = entry.file_type().await.map_err(|e| io_error(&path, &e))?;
            let removed = if kind.is_dir() {
                tokio::fs::remove_dir_all(&path).await
            } else {
                tokio::fs::remove_file(&path).await
            };
            removed.map_err(|e| io_error(&path, &e))?;
        }
        Ok(())
    }

    async fn copy(&self, src: (&str, &str), dest: (&str, &str)) -> Result<(), RpcError> {
        let (_, data) = self.read(src.0, src.1, 0, u64::MAX).await?;
        self.write(dest.0, dest.1, data).await
    }

    async fn rename(&self, src: (&str, &str), dest: (&str, &str)) -> Result<(), RpcError> {
        self.open_object(src.0, src.1).await?;
        self.existing_container(dest.0).await?;
        let from = self.path(src.0, Some(src.1)).await?;
        let to = self.path(dest.0, Some(dest.1)).await?;
        if let Some(parent) = to.parent() {
            self.create_dirs(parent).await?;
            self.path(dest.0, Some(dest.1)).await?;
        }
        tokio::fs::rename(&from, &to).await.map_err(|e| io_error(&to, &e))?;
        // Both directory entries changed: make the move durable.
        for dir in [to.parent(), from.parent()].into_iter().flatten() {
            sync_dir(dir).await;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    async fn read_all(backend: &FsBackend, container: &str, object: &str) -> Vec<u8> {
        let (_, mut stream) = backend.read(container, object, 0, u64::MAX).await.unwrap();
        let mut out = Vec::new();
        while let Some(chunk) = stream.next().await {
            out.extend_from_slice(&chunk.unwrap());
        }
        out
    }

    fn temp_root(tag: &str) -> PathBuf {
        std::env::temp_dir().join(format!("ferry-fs-test-{tag}-{}", uuid::Uuid::new_v4().simple()))
    }

    #[tokio::test]
    async fn a_failed_write_leaves_the_previous_version_and_no_temporary_file() {
        let root = temp_root("fail");
        let backend = FsBackend::new(&root).unwrap();
        backend.create_container("c").await.unwrap();
        let v1: ByteStream = Box::pin(futures::stream::iter([Ok(Bytes::from_static(b"version one"))]));
        backend.write("c", "o", v1).await.unwrap();
        // The writer dies half way (a crashed component, a lost connection).
        let broken: ByteStream = Box::pin(futures::stream::iter([
            Ok(Bytes::from(vec![b'x'; 100_000])),
            Err(RpcError::provider("connection lost")),
        ]));
        assert!(backend.write("c", "o", broken).await.is_err());
        assert_eq!(read_all(&backend, "c", "o").await, b"version one");
        let leftovers: Vec<_> =
            std::fs::read_dir(root.join("c")).unwrap().filter_map(Result::ok).map(|e| e.file_name()).collect();
        assert_eq!(leftovers, ["o"], "temporary files left behind");
        let _ = std::fs::remove_dir_all(&root);
    }

    #[tokio::test]
    async fn readers_see_the_old_version_until_a_write_completes() {
        let root = temp_root("atomic");
        let backend = std::sync::Arc::new(FsBackend::new(&root).unwrap());
        backend.create_container("c").await.unwrap();
        let v1: ByteStream = Box::pin(futures::stream::iter([Ok(Bytes::from_static(b"old"))]));
        backend.write("c", "o", v1).await.unwrap();
        // A write whose data arrives slowly: half now, the rest when the test says so.
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, RpcError>>(4);
        tx.send(Ok(Bytes::from(vec![b'n'; 50_000]))).await.unwrap();
        let slow: ByteStream =
            Box::pin(futures::stream::unfold(rx, |mut rx| async { rx.recv().await.map(|item| (item, rx)) }));
        let writer = tokio::spawn({
            let backend = backend.clone();
            async move { backend.write("c", "o", slow).await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        assert_eq!(read_all(&backend, "c", "o").await, b"old", "a reader saw a partial write");
        tx.send(Ok(Bytes::from(vec![b'n'; 50_000]))).await.unwrap();
        drop(tx);
        writer.await.unwrap().unwrap();
        assert_eq!(read_all(&backend, "c", "o").await, vec![b'n'; 100_000]);
        let _ = std::fs::remove_dir_all(&root);
    }
}
