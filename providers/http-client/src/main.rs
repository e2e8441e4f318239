//! `ferry-provider-http-client`: `wasi:http/outgoing-handler` for components, its own process.
//!
//! A component's outgoing request arrives as an invocation over its link; the provider checks
//! the destination against the link's allowed hosts, sends it with hyper (TLS by rustls with the
//! system's roots), and streams the response back. See providers/http-client/README.md.

/// The process's allocator: mimalloc's per-thread caches cost less per request than glibc's
/// malloc (docs/benchmarks.md, issue 11).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod config;
mod errors;
mod provider;

fn main() -> anyhow::Result<()> {
    ferry_provider_sdk::run_process(provider::HttpClientProvider::default())?;
    Ok(())
}
