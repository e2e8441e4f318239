//! The Ferry provider SDK: write a capability provider as an ordinary process.
//!
//! Implement [`Provider`] (and, for key-value, [`keyvalue::KeyValue`]) and call
//! [`run_provider`]. The SDK reads the start-up data (stdin from a host, or flags and
//! environment variables for a sidecar), connects to NATS, verifies and dispatches invocations,
//! tracks links (bucket snapshot at start, put/del notifications after), answers health checks,
//! and stops on a shutdown request or SIGTERM.
//!
//! ```no_run
//! use ferry_provider_sdk::{Provider, ProviderContext, InvocationContext, RpcError};
//!
//! struct Echo;
//!
//! impl Provider for Echo {
//!     async fn handle(&self, _ctx: InvocationContext, _op: &str, payload: Vec<u8>) -> Result<Vec<u8>, RpcError> {
//!         Ok(payload)
//!     }
//! }
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), ferry_provider_sdk::SdkError> {
//! ferry_provider_sdk::run_provider(Echo, ferry_provider_sdk::shutdown_signal()).await
//! # }
//! ```
#![deny(missing_docs)]

mod config;
mod error;
pub mod keyvalue;
mod links;
mod provider;
mod server;

pub use config::StartupArgs;
pub use error::SdkError;
/// What the SDK stands on, for authors who need it: NATS connections and body streams.
pub use ferry_lattice::{
    LatticeClient, NatsAuth, NatsOptions, async_nats, body::LatticeBody, client, http, nats::sync_subscriptions,
    shutdown_signal, stream::ByteStream,
};
pub use ferry_proto::{
    ErrorKind, RpcError, blobstore, codec,
    http::{Header, HttpRequest, HttpResponse},
    keyvalue::Empty,
    link::{Link, LinkKey, LinkPut},
    messaging, redact,
    startup::ProviderStartup,
    subject::is_reserved_store_name,
};
pub use links::LinkStore;
pub use provider::{HealthStatus, InvocationContext, Provider, ProviderContext};
pub use server::{MAX_CONCURRENT_INVOCATIONS, SHUTDOWN_GRACE, run_provider, run_provider_with};
