//! `ferry-provider-messaging`: `wasmcloud:messaging@0.2.0` over NATS, its own process.
//!
//! Components linked to it over `consumer` publish and request; links from it to components
//! over `handler` subscribe (from the link's source config) and deliver each message to the
//! component. See providers/messaging/README.md.

/// The process's allocator: mimalloc's per-thread caches cost less per request than glibc's
/// malloc, which spent ~10 % of a host's CPU (docs/benchmarks.md, issue 11).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod config;
mod provider;

fn main() -> anyhow::Result<()> {
    ferry_provider_sdk::run_process(provider::MessagingProvider)?;
    Ok(())
}
