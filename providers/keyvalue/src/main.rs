//! `ferry-provider-keyvalue`: the key-value capability provider, its own process.
//!
//! Backends are chosen per link from its target config: NATS JetStream KV (default) or Redis.
//! See providers/keyvalue/README.md for the config keys.

/// The process's allocator: mimalloc's per-thread caches cost less per request than glibc's
/// malloc, which spent ~10 % of a host's CPU (docs/benchmarks.md, issue 11).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod backend;
mod config;
mod provider;

fn main() -> anyhow::Result<()> {
    ferry_provider_sdk::run_process(provider::KeyValueProvider)?;
    Ok(())
}
