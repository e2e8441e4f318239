//! Test harness for Ferry's end-to-end tests: real `nats-server` (JetStream) and
//! `redis-server` on free ports, the real `ferry` and provider binaries, and test components
//! built from `tests/components`. Every process is killed when its handle drops.
//!
//! ```no_run
//! # #[tokio::main]
//! # async fn main() -> anyhow::Result<()> {
//! let lattice = ferry_tests::Lattice::start().await?;
//! let provider = lattice.start_provider("ferry-provider-keyvalue", "kv").await?;
//! # Ok(())
//! # }
//! ```

pub mod http;
mod lattice;
pub mod leaks;
pub mod origin;
pub mod otlp;
mod process;
mod servers;

pub use lattice::{Lattice, TEST_CLIENT_ID, get, json_post};
pub use process::{Process, bin_dir, binary, build_component, build_example, node, python, repo_path};
pub use servers::{NatsCluster, NatsServer, RedisServer, RegistryServer, free_port};
