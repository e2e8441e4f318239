//! `ferry-provider-http-server`: serves linked components over HTTP/1.1, its own process.
//!
//! Each link from this provider to a component over `wasi:http/incoming-handler` is a route:
//! on its own address, or on a shared one by host name and path prefix. Requests and responses
//! stream through the lattice in chunks. See providers/http-server/README.md.

/// The process's allocator: mimalloc's per-thread caches cost less per request than glibc's
/// malloc, which spent ~10 % of a host's CPU (docs/benchmarks.md, issue 11).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod config;
mod cors;
mod provider;
mod router;
mod serve;
mod tls;

fn main() -> anyhow::Result<()> {
    ferry_provider_sdk::run_process(provider::HttpServerProvider::default())?;
    Ok(())
}
