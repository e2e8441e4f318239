//! The lattice's store of uploaded components: a JetStream object store in which each
//! component lies under the SHA-256 of its bytes. A client uploads a local `.wasm` and names
//! it by digest in `component.start`; a host fetches it by that digest and checks the bytes
//! against it, so a host never runs what it was not asked to and never reads a path it was
//! told to read.

use async_nats::jetstream::object_store;
use ferry_proto::{
    image::{ImageRef, MAX_COMPONENT_BYTES, sha256_hex},
    subject,
};
use tokio::io::AsyncReadExt as _;

use crate::LatticeError;

/// The component store of one lattice.
#[derive(Clone)]
pub struct ComponentStore {
    store: object_store::ObjectStore,
}

impl ComponentStore {
    /// Open the lattice's component store, creating it if this is the first upload.
    ///
    /// # Errors
    /// [`LatticeError::Nats`] when JetStream is unreachable.
    pub async fn open(nats: &async_nats::Client, lattice: &str) -> Result<Self, LatticeError> {
        let bucket = subject::component_store(lattice)?;
        let js = crate::nats::jetstream(nats, None);
        let store = match js.get_object_store(&bucket).await {
            Ok(store) => store,
            Err(_) => js
                .create_object_store(object_store::Config {
                    bucket: bucket.clone(),
                    description: Some("Ferry components, by SHA-256 of their bytes".into()),
                    ..Default::default()
                })
                .await
                .map_err(|e| LatticeError::Nats(format!("cannot open object store {bucket}: {e}")))?,
        };
        Ok(Self { store })
    }

    /// Store `bytes` (once: a second upload of the same bytes is free) and return their
    /// reference, `sha256:{hex}`.
    ///
    /// # Errors
    /// [`LatticeError::Invalid`] over [`MAX_COMPONENT_BYTES`]; [`LatticeError::Nats`] when the
    /// upload fails.
    pub async fn upload(&self, bytes: &[u8]) -> Result<ImageRef, LatticeError> {
        if bytes.len() as u64 > MAX_COMPONENT_BYTES {
            return Err(LatticeError::Invalid(format!(
                "component is {} bytes; the lattice takes at most {MAX_COMPONENT_BYTES}",
                bytes.len()
            )));
        }
        let digest = sha256_hex(bytes);
        if self.store.info(&digest).await.is_ok_and(|info| info.size == bytes.len()) {
            return Ok(ImageRef::Lattice { digest });
        }
        let mut reader = bytes;
        self.store
            .put(digest.as_str(), &mut reader)
            .await
            .map_err(|e| LatticeError::Nats(format!("cannot upload component {digest}: {e}")))?;
        Ok(ImageRef::Lattice { digest })
    }

    /// The bytes stored under `digest`, checked against it.
    ///
    /// # Errors
    /// [`LatticeError::Invalid`] when nothing is stored under the digest, the object is too
    /// large, or its bytes do not hash to the digest (tampered or corrupt);
    /// [`LatticeError::Nats`] when the download fails.
    pub async fn fetch(&self, digest: &str) -> Result<Vec<u8>, LatticeError> {
        let mut object = self.store.get(digest).await.map_err(|e| match e.kind() {
            object_store::GetErrorKind::NotFound => {
                LatticeError::Invalid(format!("no component sha256:{digest} was uploaded to this lattice"))
            }
            _ => LatticeError::Nats(format!("cannot fetch component sha256:{digest}: {e}")),
        })?;
        let size = object.info().size as u64;
        if size > MAX_COMPONENT_BYTES {
            return Err(LatticeError::Invalid(format!(
                "component sha256:{digest} is {size} bytes; a host takes at most {MAX_COMPONENT_BYTES}"
            )));
        }
        let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or_default());
        (&mut object)
            .take(MAX_COMPONENT_BYTES + 1)
            .read_to_end(&mut bytes)
            .await
            .map_err(|e| LatticeError::Nats(format!("cannot fetch component sha256:{digest}: {e}")))?;
        if sha256_hex(&bytes) != digest {
            return Err(LatticeError::Invalid(format!(
                "component stored as sha256:{digest} does not hash to its name: refused"
            )));
        }
        Ok(bytes)
    }
}
