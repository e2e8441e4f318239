//! The Ferry provider SDK: write a capability provider as an ordinary process.
//!
//! Implement [`Provider`] (and the capability's typed trait: [`keyvalue::KeyValue`],
//! [`blobstore::Blobstore`], [`messaging::Messaging`]) and call [`run_process`] from `main`
//! ([`run_provider`] inside a runtime of your own). The SDK reads the start-up data (stdin from
//! a host, or flags and environment variables for a sidecar), connects to NATS, verifies and
//! dispatches invocations, tracks links (bucket snapshot at start, put/del notifications after)
//! and holds the state the provider builds for each ([`Provider::Link`]), answers health
//! checks, and stops on a shutdown request or SIGTERM.
//!
//! ```no_run
//! use ferry_provider_sdk::{InvocationContext, LinkPut, Provider, ProviderContext, RpcError};
//!
//! struct Echo;
//!
//! impl Provider for Echo {
//!     /// What each link keeps: here, the caller's greeting from the link's config.
//!     type Link = String;
//!
//!     async fn on_link_put(&self, _ctx: &ProviderContext, link: &LinkPut) -> Result<String, String> {
//!         Ok(link.target_config.get("greeting").cloned().unwrap_or_default())
//!     }
//!
//!     async fn handle(&self, ctx: InvocationContext<String>, _op: &str, payload: Vec<u8>) -> Result<Vec<u8>, RpcError> {
//!         Ok([ctx.state.as_bytes(), &payload].concat())
//!     }
//! }
//!
//! fn main() -> Result<(), ferry_provider_sdk::SdkError> {
//!     ferry_provider_sdk::run_process(Echo)
//! }
//! ```
#![deny(missing_docs)]

pub mod blobstore;
mod config;
mod error;
pub mod http_client;
pub mod keyvalue;
mod link_config;
mod links;
pub mod messaging;
mod provider;
mod server;

pub use config::StartupArgs;
pub use error::SdkError;
/// What the SDK stands on, for authors who need it: NATS connections and body streams.
pub use ferry_lattice::{
    LatticeClient, NatsAuth, NatsOptions, async_nats, backoff::Backoff, body::LatticeBody, client, http,
    nats::sync_subscriptions, shutdown_signal, storage::parse_replicas, stream::ByteStream,
};
/// The gRPC contract of the sidecar bridge: messages, clients, servers and the status mapping.
#[cfg(feature = "grpc")]
pub use ferry_proto::grpc;
pub use ferry_proto::{
    ErrorKind, RpcError, codec,
    http::{Header, HttpRequest, HttpResponse},
    keyvalue::Empty,
    link::{DEFAULT_LINK_NAME, Link, LinkKey, LinkPut},
    redact,
    startup::ProviderStartup,
    subject::{ComponentStoreKind, ComponentStoreNames, is_reserved_store_name, object_stream},
};
/// W3C trace context as Ferry carries it, and the place of a provider's own spans in a trace:
/// what a provider that starts calls (an HTTP server, a message consumer) uses to continue the
/// trace its caller began, or begin one when spans are exported.
pub mod trace {
    pub use ferry_lattice::telemetry::{exporting, follow};
    pub use ferry_proto::trace::*;
}
pub use link_config::{LINK_NATS_KEYS, LinkConfig, LinkConnection, LinkNats};
pub use links::LinkStore;
pub use provider::{HealthStatus, InvocationContext, Provider, ProviderContext};
pub use server::{
    MAX_CONCURRENT_INVOCATIONS, SHUTDOWN_GRACE, run_process, run_process_with, run_provider, run_provider_with,
};
