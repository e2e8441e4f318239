//! Payloads of `wasi:blobstore@0.2.0-draft` invocations, component → blobstore provider. Object
//! data travels like HTTP bodies: inline when small, else the first part inline and the rest as
//! a pulled stream ([`crate::stream`]) — the host offers what a component writes, the provider
//! offers what it reads.

use serde::{Deserialize, Serialize};

/// WIT namespace of blob storage.
pub const WIT_NAMESPACE: &str = "wasi";
/// WIT package of blob storage.
pub const WIT_PACKAGE: &str = "blobstore";

/// Operation names.
pub mod op {
    /// `blobstore.create-container`: [`super::ContainerRequest`] → `{}`.
    pub const CREATE_CONTAINER: &str = "wasi:blobstore/blobstore.create-container";
    /// `blobstore.get-container`: [`super::ContainerRequest`] → `{}` (fails when missing).
    pub const GET_CONTAINER: &str = "wasi:blobstore/blobstore.get-container";
    /// `blobstore.delete-container`: [`super::ContainerRequest`] → `{}`.
    pub const DELETE_CONTAINER: &str = "wasi:blobstore/blobstore.delete-container";
    /// `blobstore.container-exists`: [`super::ContainerRequest`] → [`super::ExistsResponse`].
    pub const CONTAINER_EXISTS: &str = "wasi:blobstore/blobstore.container-exists";
    /// `blobstore.copy-object`: [`super::CopyRequest`] → `{}`.
    pub const COPY_OBJECT: &str = "wasi:blobstore/blobstore.copy-object";
    /// `blobstore.move-object`: [`super::CopyRequest`] → `{}`.
    pub const MOVE_OBJECT: &str = "wasi:blobstore/blobstore.move-object";
    /// `container.info`: [`super::ContainerRequest`] → [`super::ContainerInfo`].
    pub const CONTAINER_INFO: &str = "wasi:blobstore/container.info";
    /// `container.get-data`: [`super::GetDataRequest`] → [`super::DataResponse`].
    pub const GET_DATA: &str = "wasi:blobstore/container.get-data";
    /// `container.write-data`: [`super::WriteDataRequest`] → `{}`.
    pub const WRITE_DATA: &str = "wasi:blobstore/container.write-data";
    /// `container.list-objects`: [`super::ListRequest`] → [`super::ListResponse`].
    pub const LIST_OBJECTS: &str = "wasi:blobstore/container.list-objects";
    /// `container.delete-object`: [`super::ObjectRequest`] → `{}`.
    pub const DELETE_OBJECT: &str = "wasi:blobstore/container.delete-object";
    /// `container.delete-objects`: [`super::ObjectsRequest`] → `{}`.
    pub const DELETE_OBJECTS: &str = "wasi:blobstore/container.delete-objects";
    /// `container.has-object`: [`super::ObjectRequest`] → [`super::ExistsResponse`].
    pub const HAS_OBJECT: &str = "wasi:blobstore/container.has-object";
    /// `container.object-info`: [`super::ObjectRequest`] → [`super::ObjectInfo`].
    pub const OBJECT_INFO: &str = "wasi:blobstore/container.object-info";
    /// `container.clear`: [`super::ContainerRequest`] → `{}`.
    pub const CLEAR: &str = "wasi:blobstore/container.clear";

    /// Whether `operation` only reads: replaying it changes nothing, so it needs no entry in the
    /// lattice-wide replay record.
    pub fn is_read_only(operation: &str) -> bool {
        matches!(
            operation,
            GET_CONTAINER | CONTAINER_EXISTS | CONTAINER_INFO | GET_DATA | LIST_OBJECTS | HAS_OBJECT | OBJECT_INFO
        )
    }
}

/// Names a container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerRequest {
    /// Container name.
    pub container: String,
}

/// Names an object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectRequest {
    /// Container name.
    pub container: String,
    /// Object name.
    pub object: String,
}

/// Names several objects of one container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectsRequest {
    /// Container name.
    pub container: String,
    /// Object names.
    pub objects: Vec<String>,
}

/// An object's address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectId {
    /// Container name.
    pub container: String,
    /// Object name.
    pub object: String,
}

/// Copy or move `src` to `dest` (containers may differ).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyRequest {
    /// Source.
    pub src: ObjectId,
    /// Destination (replaced if it exists).
    pub dest: ObjectId,
}

/// Whether something exists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExistsResponse {
    /// It does.
    pub exists: bool,
}

/// A container's metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerInfo {
    /// Container name.
    pub name: String,
    /// Creation time, seconds since the Unix epoch.
    pub created_at: u64,
}

/// An object's metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectInfo {
    /// Object name.
    pub name: String,
    /// Container name.
    pub container: String,
    /// Creation time, seconds since the Unix epoch.
    pub created_at: u64,
    /// Size in bytes.
    pub size: u64,
}

/// Read bytes `start..=end` of an object (`end` past the object's end reads to its end).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetDataRequest {
    /// Container name.
    pub container: String,
    /// Object name.
    pub object: String,
    /// First byte.
    pub start: u64,
    /// Last byte, inclusive.
    pub end: u64,
}

/// Object data: `size` bytes, the first part in `data`, the rest on `data_stream` if set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataResponse {
    /// Bytes in the whole answer.
    pub size: u64,
    /// The data, or its first part.
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
    /// The stream the rest is pulled from, offered by the provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_stream: Option<String>,
}

/// Write (create or replace) an object: the first part in `data`, the rest on `data_stream`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteDataRequest {
    /// Container name.
    pub container: String,
    /// Object name.
    pub object: String,
    /// The data, or its first part.
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
    /// The stream the rest is pulled from, offered by the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_stream: Option<String>,
}

/// One page of a container's object names, in name order, after `after` when set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListRequest {
    /// Container name.
    pub container: String,
    /// Names up to and including this one were listed already.
    #[serde(default)]
    pub after: Option<String>,
    /// Most names wanted.
    pub limit: u32,
}

/// A page of names; `done` when no names follow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListResponse {
    /// Names, in order.
    pub names: Vec<String>,
    /// The listing is complete.
    pub done: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{decode, encode};

    #[test]
    fn payloads_round_trip_and_reject_garbage() {
        let write = WriteDataRequest {
            container: "c".into(),
            object: "o".into(),
            data: vec![1, 2],
            data_stream: Some("s".into()),
        };
        assert_eq!(decode::<WriteDataRequest>(&encode(&write).unwrap()).unwrap(), write);
        let data = DataResponse { size: 9, data: vec![], data_stream: None };
        assert_eq!(decode::<DataResponse>(&encode(&data).unwrap()).unwrap(), data);
        let list = ListRequest { container: "c".into(), after: Some("a".into()), limit: 100 };
        assert_eq!(decode::<ListRequest>(&encode(&list).unwrap()).unwrap(), list);
        let copy = CopyRequest {
            src: ObjectId { container: "a".into(), object: "x".into() },
            dest: ObjectId { container: "b".into(), object: "y".into() },
        };
        assert_eq!(decode::<CopyRequest>(&encode(&copy).unwrap()).unwrap(), copy);
        assert!(decode::<GetDataRequest>(b"\xc1").is_err());
        assert!(decode::<ObjectInfo>(b"junk").is_err());
    }
}
