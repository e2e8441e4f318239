//! Payloads of `wasi:keyvalue/{store,atomics,batch}@0.2.0-draft` invocations.
//!
//! One request and one response type per operation; operation names are the WIT function
//! names ([`op`]). A bucket is named by the identifier the component passed to `open`, which
//! the host answers itself: every call carries its bucket, and the provider checks it there.

use serde::{Deserialize, Serialize};

/// WIT namespace of key-value.
pub const WIT_NAMESPACE: &str = "wasi";
/// WIT package of key-value.
pub const WIT_PACKAGE: &str = "keyvalue";
/// WIT interface a component exports to hear of changes (`on-set`, `on-delete`); links over it
/// go from the key-value provider to the component.
pub const WATCHER_INTERFACE: &str = "watcher";

/// Operation names.
pub mod op {
    /// `bucket.get`.
    pub const GET: &str = "wasi:keyvalue/store.get";
    /// `bucket.set`.
    pub const SET: &str = "wasi:keyvalue/store.set";
    /// `bucket.delete`.
    pub const DELETE: &str = "wasi:keyvalue/store.delete";
    /// `bucket.exists`.
    pub const EXISTS: &str = "wasi:keyvalue/store.exists";
    /// `bucket.list-keys`.
    pub const LIST_KEYS: &str = "wasi:keyvalue/store.list-keys";
    /// `atomics.increment`.
    pub const INCREMENT: &str = "wasi:keyvalue/atomics.increment";
    /// `batch.get-many`.
    pub const GET_MANY: &str = "wasi:keyvalue/batch.get-many";
    /// `batch.set-many`.
    pub const SET_MANY: &str = "wasi:keyvalue/batch.set-many";
    /// `batch.delete-many`.
    pub const DELETE_MANY: &str = "wasi:keyvalue/batch.delete-many";

    /// `watcher.on-set`, invoked on a component: [`super::WatchEvent`] with a value.
    pub const ON_SET: &str = "wasi:keyvalue/watcher.on-set";
    /// `watcher.on-delete`, invoked on a component: [`super::WatchEvent`] without a value.
    pub const ON_DELETE: &str = "wasi:keyvalue/watcher.on-delete";

    /// Whether `operation` only reads: replaying it changes nothing, so it needs no entry in the
    /// lattice-wide replay record.
    pub fn is_read_only(operation: &str) -> bool {
        matches!(operation, GET | EXISTS | LIST_KEYS | GET_MANY)
    }
}

/// A change a watcher link selects, delivered to the component's `wasi:keyvalue/watcher`:
/// `on-set` carries the new value, `on-delete` none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchEvent {
    /// The bucket identifier the component opens to reach the key.
    pub bucket: String,
    /// The key.
    pub key: String,
    /// The value set; absent for a delete.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "serde_bytes")]
    pub value: Option<Vec<u8>>,
}

/// Names one key: `get`, `delete`, `exists`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRequest {
    /// The bucket identifier.
    pub bucket: String,
    /// The key.
    pub key: String,
}

/// `set`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetRequest {
    /// The bucket identifier.
    pub bucket: String,
    /// The key.
    pub key: String,
    /// The value.
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
}

/// `list-keys`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListKeysRequest {
    /// The bucket identifier.
    pub bucket: String,
    /// Where to continue; `None` starts from the beginning.
    pub cursor: Option<u64>,
}

/// `increment`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncrementRequest {
    /// The bucket identifier.
    pub bucket: String,
    /// The key; a missing key counts as 0.
    pub key: String,
    /// How much to add.
    pub delta: u64,
}

/// `get-many` and `delete-many`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeysRequest {
    /// The bucket identifier.
    pub bucket: String,
    /// The keys.
    pub keys: Vec<String>,
}

/// A key and its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyValue {
    /// The key.
    pub key: String,
    /// The value.
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
}

/// `set-many`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetManyRequest {
    /// The bucket identifier.
    pub bucket: String,
    /// What to store.
    pub items: Vec<KeyValue>,
}

/// Answer of `get`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetResponse {
    /// The value, if the key exists.
    #[serde(with = "serde_bytes")]
    pub value: Option<Vec<u8>>,
}

/// Answer of `exists`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExistsResponse {
    /// Whether the key exists.
    pub exists: bool,
}

/// Answer of `list-keys`: a page of keys and where to continue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListKeysResponse {
    /// The keys of this page.
    pub keys: Vec<String>,
    /// Cursor of the next page; `None` when this was the last.
    pub cursor: Option<u64>,
}

/// Answer of `increment`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncrementResponse {
    /// The value after the increment.
    pub value: u64,
}

/// Answer of `get-many`: one entry per requested key, in order, `None` where missing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetManyResponse {
    /// The entries.
    pub items: Vec<Option<KeyValue>>,
}

/// Answer of operations that return nothing (`set`, `delete`, `set-many`, …).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Empty {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{decode, encode};

    fn round_trip<T: Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug>(value: T) {
        let bytes = encode(&value).unwrap();
        assert_eq!(decode::<T>(&bytes).unwrap(), value);
        for garbage in [&b"\xc1"[..], b"\x93\xff", b""] {
            assert!(decode::<T>(garbage).is_err());
        }
    }

    #[test]
    fn every_payload_round_trips_and_rejects_garbage() {
        round_trip(KeyRequest { bucket: "b".into(), key: "k".into() });
        round_trip(SetRequest { bucket: "b".into(), key: "k".into(), value: vec![0, 255] });
        round_trip(ListKeysRequest { bucket: "b".into(), cursor: Some(100) });
        round_trip(IncrementRequest { bucket: "b".into(), key: "k".into(), delta: 3 });
        round_trip(KeysRequest { bucket: "b".into(), keys: vec!["a".into()] });
        round_trip(SetManyRequest { bucket: "b".into(), items: vec![KeyValue { key: "a".into(), value: vec![1] }] });
        round_trip(GetResponse { value: Some(vec![1, 2]) });
        round_trip(GetResponse { value: None });
        round_trip(ExistsResponse { exists: true });
        round_trip(ListKeysResponse { keys: vec!["a".into()], cursor: None });
        round_trip(IncrementResponse { value: 9 });
        round_trip(GetManyResponse { items: vec![None, Some(KeyValue { key: "a".into(), value: vec![] })] });
        round_trip(WatchEvent { bucket: "b".into(), key: "k".into(), value: Some(vec![7]) });
        round_trip(WatchEvent { bucket: "b".into(), key: "k".into(), value: None });
        assert!(decode::<WatchEvent>(b"\x81").is_err());
    }

    #[test]
    fn empty_encodes_as_an_empty_map() {
        assert_eq!(encode(&Empty {}).unwrap(), vec![0x80]);
    }
}
