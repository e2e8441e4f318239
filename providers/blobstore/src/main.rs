//! `ferry-provider-blobstore`: `wasi:blobstore@0.2.0-draft` for components, its own process.
//!
//! Backends are chosen per link from its target config: the filesystem (default, under `root`)
//! or NATS JetStream object stores. Objects of any size stream in chunks both ways. See
//! providers/blobstore/README.md.

/// The process's allocator: mimalloc's per-thread caches cost less per request than glibc's
/// malloc, which spent ~10 % of a host's CPU (docs/benchmarks.md, issue 11).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod backend;
mod config;
mod names;
mod provider;

fn main() -> anyhow::Result<()> {
    ferry_provider_sdk::run_process(provider::BlobstoreProvider)?;
    Ok(())
}
