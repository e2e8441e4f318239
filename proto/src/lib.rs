//! The Ferry wire protocol: everything that crosses a process boundary.
//!
//! Hosts, the provider SDK, providers and tests all use this crate, and nothing else builds a
//! subject string or encodes a payload. Data-plane messages are MessagePack with named fields
//! ([`codec`]); control-plane messages and events are JSON ([`ctl`], [`event`]). Every
//! invocation is authenticated with a keyed MAC ([`auth`]).
//!
//! ```
//! use ferry_proto::{envelope::Invocation, subject};
//!
//! let inv = Invocation::new("my-component", "kv-provider", "default", "wasi:keyvalue/store.get", vec![]);
//! let bytes = inv.encode().unwrap();
//! assert_eq!(Invocation::decode(&bytes).unwrap().operation, "wasi:keyvalue/store.get");
//! assert_eq!(subject::rpc("default", "kv-provider").unwrap(), "ferry.rpc.default.kv-provider");
//! ```

pub mod app;
pub mod auth;
pub mod blobstore;
pub mod claims;
pub mod codec;
pub mod ctl;
pub mod delivery;
pub mod envelope;
pub mod error;
pub mod event;
#[cfg(feature = "grpc")]
pub mod grpc;
pub mod health;
pub mod http;
pub mod image;
pub mod keyvalue;
pub mod link;
pub mod messaging;
pub mod permissions;
pub mod redact;
pub mod seal;
pub mod startup;
pub mod state;
pub mod stream;
pub mod subject;
pub mod time;
pub mod trace;

pub use error::{ErrorKind, ProtoError, RpcError};

/// Whether `operation` of a standard interface only reads, so a replay of it changes nothing.
/// Every other operation, those of custom interfaces included, counts as state-changing and is
/// recorded lattice-wide before it runs.
pub fn is_read_only(operation: &str) -> bool {
    keyvalue::op::is_read_only(operation) || blobstore::op::is_read_only(operation)
}

/// The protocol version carried by every envelope; a receiver answers any other with
/// [`ErrorKind::UnsupportedVersion`].
pub const PROTOCOL_VERSION: u16 = 3;
