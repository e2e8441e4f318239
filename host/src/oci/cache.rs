//! The host's cache of registry content on disk: blobs (manifests and layers) under their
//! SHA-256 digest, checked against it on every read, and the manifest digest each tag was last
//! resolved to. A blob that no longer matches its name (a disk error, a tampered file) is
//! removed, so it is pulled again. Provider executables are kept apart (`bin/sha256/{hex}`,
//! executable by the owner only) and checked against their digest before each start.

use std::{
    io::Write as _,
    path::{Path, PathBuf},
};

use ferry_proto::image::{OciRef, sha256_hex};
use tracing::warn;

/// The cache directory's layout: `blobs/sha256/{hex}`, `bin/sha256/{hex}` and
/// `tags/{registry}/{repository}/{tag}`.
#[derive(Debug, Clone)]
pub(crate) struct Cache {
    root: PathBuf,
}

impl Cache {
    pub(crate) fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    fn blob_path(&self, digest: &str) -> Option<PathBuf> {
        self.path_in("blobs", digest)
    }

    fn path_in(&self, dir: &str, digest: &str) -> Option<PathBuf> {
        let hex = digest.strip_prefix("sha256:")?;
        (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| self.root.join(dir).join("sha256").join(hex.to_ascii_lowercase()))
    }

    fn tag_path(&self, image: &OciRef) -> Option<PathBuf> {
        let tag = image.tag.as_deref()?;
        // Registry and repository are validated by OciRef::parse: no `..`, no absolute parts.
        Some(self.root.join("tags").join(image.registry.replace(':', "_")).join(&image.repository).join(tag))
    }

    /// The blob stored under `digest`, if it is there and still matches it.
    pub(crate) async fn blob(&self, digest: &str) -> Option<Vec<u8>> {
        let path = self.blob_path(digest)?;
        let bytes = tokio::fs::read(&path).await.ok()?;
        if format!("sha256:{}", sha256_hex(&bytes)) == digest {
            return Some(bytes);
        }
        warn!(path = %path.display(), %digest, "cached blob does not match its digest (damaged or tampered with); removing it to pull it again");
        let _ = tokio::fs::remove_file(&path).await;
        None
    }

    /// Keep `bytes` under `digest` (which they must match).
    pub(crate) async fn put_blob(&self, digest: &str, bytes: &[u8]) -> std::io::Result<()> {
        let path =
            self.blob_path(digest).ok_or_else(|| std::io::Error::other(format!("not a sha256 digest: {digest}")))?;
        if format!("sha256:{}", sha256_hex(bytes)) != digest {
            return Err(std::io::Error::other(format!("content does not match {digest}")));
        }
        write_atomically(&path, bytes, 0o644).await
    }

    /// The executable stored under `digest`, if it is there and still matches it (read in
    /// pieces: executables are large); a file that does not match is removed.
    pub(crate) async fn executable(&self, digest: &str) -> Option<PathBuf> {
        let path = self.path_in("bin", digest)?;
        let checked = path.clone();
        let actual = tokio::task::spawn_blocking(move || file_sha256(&checked)).await.ok()?.ok()?;
        if format!("sha256:{actual}") == digest {
            return Some(path);
        }
        warn!(path = %path.display(), %digest, "cached executable does not match its digest (damaged or tampered with); removing it to pull it again");
        let _ = tokio::fs::remove_file(&path).await;
        None
    }

    /// Keep the executable `bytes` under `digest` (which they must match); returns its path.
    pub(crate) async fn put_executable(&self, digest: &str, bytes: &[u8]) -> std::io::Result<PathBuf> {
        let path = self
            .path_in("bin", digest)
            .ok_or_else(|| std::io::Error::other(format!("not a sha256 digest: {digest}")))?;
        if format!("sha256:{}", sha256_hex(bytes)) != digest {
            return Err(std::io::Error::other(format!("content does not match {digest}")));
        }
        write_atomically(&path, bytes, 0o700).await?;
        Ok(path)
    }

    /// The manifest digest `image`'s tag was last resolved to.
    pub(crate) async fn tag(&self, image: &OciRef) -> Option<String> {
        let text = tokio::fs::read_to_string(self.tag_path(image)?).await.ok()?;
        let digest = text.trim();
        self.blob_path(digest).is_some().then(|| digest.to_owned())
    }

    /// Remember that `image`'s tag resolved to `digest`.
    pub(crate) async fn put_tag(&self, image: &OciRef, digest: &str) -> std::io::Result<()> {
        let Some(path) = self.tag_path(image) else { return Ok(()) };
        write_atomically(&path, digest.as_bytes(), 0o644).await
    }
}

/// The SHA-256 of a file's content, lower-case hex.
fn file_sha256(path: &Path) -> std::io::Result<String> {
    use sha2::Digest as _;
    use std::io::Read as _;
    let mut file = std::fs::File::open(path)?;
    let mut hasher = sha2::Sha256::new();
    let mut buffer = vec![0; 1 << 16];
    loop {
        let read = file.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
    }
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// Write `bytes` to `path` with permissions `mode` through a temporary file beside it, so a
/// reader (or `exec`) never sees half.
async fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let (path, bytes) = (path.to_owned(), bytes.to_vec());
    tokio::task::spawn_blocking(move || {
        let dir = path.parent().ok_or_else(|| std::io::Error::other("no parent directory"))?;
        std::fs::create_dir_all(dir)?;
        let mut file = tempfile::NamedTempFile::new_in(dir)?;
        file.write_all(&bytes)?;
        file.as_file().set_permissions(std::os::unix::fs::PermissionsExt::from_mode(mode))?;
        file.as_file().sync_all()?;
        file.persist(&path).map_err(|e| e.error)?;
        Ok(())
    })
    .await
    .map_err(std::io::Error::other)?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn blobs_are_checked_on_read_and_a_damaged_one_is_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = Cache::new(dir.path());
        let digest = format!("sha256:{}", sha256_hex(b"component"));
        assert!(cache.put_blob(&digest, b"other").await.is_err(), "content must match its digest");
        cache.put_blob(&digest, b"component").await.expect("put");
        assert_eq!(cache.blob(&digest).await.as_deref(), Some(&b"component"[..]));
        let path = cache.blob_path(&digest).expect("path");
        std::fs::write(&path, b"tampered").expect("tamper");
        assert_eq!(cache.blob(&digest).await, None);
        assert!(!path.exists(), "a damaged entry is removed");

        let image = OciRef::parse("localhost:5000/org/app:1.0").expect("ref");
        assert_eq!(cache.tag(&image).await, None);
        cache.put_tag(&image, &digest).await.expect("tag");
        assert_eq!(cache.tag(&image).await.as_deref(), Some(digest.as_str()));
    }
}
