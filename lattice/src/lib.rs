//! The Ferry lattice runtime: what every process on a lattice shares — the host, the provider
//! SDK, the gRPC bridge and control clients.
//!
//! It holds the NATS connection ([`nats::NatsOptions`]), signed request/reply ([`signed`],
//! [`request`], [`client`] for calls under a provider identity, [`http`] for HTTP through
//! the lattice), payloads and bodies larger than one message ([`overflow`], [`stream`],
//! [`body`]), the lattice bucket and the revision-ordered view of links and config kept from it
//! ([`bucket`], [`view`]), uploaded components ([`components`]), the lattice-wide replay record
//! ([`replay`]), the control-interface client ([`ctl`]), the shutdown signal and log set-up. It links neither wasmtime nor the
//! provider SDK: a control client or a dashboard needs only this and `ferry-proto`.
#![deny(missing_docs)]

pub mod backoff;
pub mod body;
pub mod bucket;
pub mod client;
pub mod components;
pub mod ctl;
mod error;
pub mod http;
pub mod metrics;
pub mod nats;
pub mod overflow;
pub mod replay;
pub mod request;
mod shutdown;
pub mod signed;
pub mod storage;
pub mod stream;
pub mod telemetry;
pub mod view;

pub use async_nats;
pub use bucket::{BucketChange, BucketEvent, BucketMark, LatticeBucket};
pub use client::LatticeClient;
pub use components::ComponentStore;
pub use ctl::CtlClient;
pub use error::LatticeError;
pub use nats::{Connection, NatsAuth, NatsOptions, NatsSecurity};
pub use shutdown::shutdown_signal;
