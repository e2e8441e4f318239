//! The Ferry host: runs WebAssembly components and turns their capability calls into signed
//! invocations to provider processes over NATS.
//!
//! A host owns no sockets, files or databases on a component's behalf. It serves components'
//! exports on `ferry.rpc.{lattice}.{component}`, answers the control interface on
//! `ferry.ctl.v1.{lattice}.…`, and keeps its view of links and config from the lattice's KV
//! bucket.
//!
//! ```no_run
//! # #[tokio::main]
//! # async fn main() -> anyhow::Result<()> {
//! let host = ferry_host::HostBuilder::new("nats://127.0.0.1:4222", "default").build().await?;
//! println!("host id {}", host.id());
//! host.run(ferry_lattice::shutdown_signal()).await?;
//! # Ok(())
//! # }
//! ```

mod allowed;
pub mod app;
mod budget;
mod capability;
pub mod claims;
pub mod compile;
mod component;
mod components;
mod ctl;
mod engine;
mod error;
mod events;
mod health;
mod host;
mod identity;
mod lattice;
mod link_sync;
mod links;
pub mod oci;
mod rpc;
mod state;
mod supervisor;
mod wit_value;
mod workers;

pub use engine::{Limits, new_engine};
pub use error::HostError;
pub use host::{DEFAULT_RPC_TIMEOUT, Host, HostBuilder, RunningHost, default_workers};
