//! Storage behind the blobstore interface: one trait, a backend per link.

pub(crate) mod fs;
pub(crate) mod nats;

use async_trait::async_trait;
use ferry_provider_sdk::{
    ByteStream, RpcError,
    blobstore::{ContainerInfo, ObjectInfo},
};

/// Where a link's containers and objects live. Names are checked by the caller
/// ([`crate::names`]) before any method runs.
#[async_trait]
pub(crate) trait Backend: Send + Sync {
    async fn create_container(&self, container: &str) -> Result<(), RpcError>;
    async fn container_info(&self, container: &str) -> Result<ContainerInfo, RpcError>;
    async fn container_exists(&self, container: &str) -> Result<bool, RpcError>;
    async fn delete_container(&self, container: &str) -> Result<(), RpcError>;
    /// Replace `object` with what `data` yields; readers see the old or the new version, never
    /// a part.
    async fn write(&self, container: &str, object: &str, data: ByteStream) -> Result<(), RpcError>;
    /// Bytes `start..=end` (clamped to the object), as a count and a stream.
    async fn read(&self, container: &str, object: &str, start: u64, end: u64) -> Result<(u64, ByteStream), RpcError>;
    /// Names after `after`, in order, at most `limit`; and whether the listing is complete.
    async fn list(&self, container: &str, after: Option<&str>, limit: usize) -> Result<(Vec<String>, bool), RpcError>;
    async fn object_info(&self, container: &str, object: &str) -> Result<ObjectInfo, RpcError>;
    async fn has_object(&self, container: &str, object: &str) -> Result<bool, RpcError>;
    /// Delete an object; deleting one that does not exist is not an error.
    async fn delete_object(&self, container: &str, object: &str) -> Result<(), RpcError>;
    async fn clear(&self, container: &str) -> Result<(), RpcError>;
    async fn copy(&self, src: (&str, &str), dest: (&str, &str)) -> Result<(), RpcError>;
    async fn rename(&self, src: (&str, &str), dest: (&str, &str)) -> Result<(), RpcError>;
}
