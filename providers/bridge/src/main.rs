//! `ferry-provider-bridge`: a Ferry provider on the lattice that forwards links, health,
//! shutdown and capability calls to a provider written in any language, over gRPC
//! (`proto/ferry/provider/v1`, docs/bridge.md). It either attaches to a process started by
//! anything else (`--connect`) or starts and supervises one itself (`--exec CMD …`).

/// The process's allocator, as every Ferry binary's (docs/benchmarks.md, issue 11).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod blobstore;
mod config;
mod foreign;
mod h2;
mod keyvalue;
mod lattice;
mod links;
mod messaging;
mod provider;
mod supervise;

use clap::Parser as _;

fn main() -> anyhow::Result<()> {
    let args = config::BridgeArgs::parse();
    let bridge = provider::Bridge::new(&args)?;
    ferry_provider_sdk::run_process_with(bridge, args.startup)?;
    Ok(())
}
