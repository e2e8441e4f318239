//! `ferry-provider-keyvalue`: the key-value capability provider, its own process.
//!
//! Backends are chosen per link from its target config: NATS JetStream KV (default) or Redis.
//! See providers/keyvalue/README.md for the config keys.

mod backend;
mod config;
mod provider;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    ferry_provider_sdk::run_provider(provider::KeyValueProvider, ferry_provider_sdk::shutdown_signal()).await?;
    Ok(())
}
