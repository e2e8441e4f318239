//! Key-value watch end to end: a key written by one component → the keyvalue provider's watch
//! on the backend (JetStream KV or Redis keyspace events) → the watcher component's
//! `wasi:keyvalue/watcher`, through the host.

use std::time::Duration;

use ferry_proto::link::Link;
use ferry_tests::{Lattice, Process, RedisServer};
use serde_json::json;

use crate::keyvalue::kv_link;

const KV: &str = "ferry-provider-keyvalue";

/// A writer (kv-http, `kvc`) and a watcher (kv-watcher, `watcher`) on one store: `backend` is
/// the store links' config; the watcher link adds `watch_keys`.
async fn watch_lattice(backend: &[(&str, &str)], keys: &str) -> anyhow::Result<(Lattice, Process)> {
    let lattice = Lattice::start().await?;
    let provider = lattice.start_provider(KV, "kv").await?;
    lattice.start_component("kv-http", "kvc", &[]).await?;
    lattice.start_component("kv-watcher", "watcher", &[]).await?;
    lattice.config("store", backend).await?;
    lattice.link(kv_link("kvc", "kv", "default", &["store"])).await?;
    let mut watch: Vec<(&str, &str)> = backend.to_vec();
    watch.extend([("watch_bucket", "b"), ("watch_keys", keys)]);
    lattice.config("watch", &watch).await?;
    let mut link = Link::new("kv", "watcher", "wasi", "keyvalue", vec!["watcher".into()]);
    link.source_config = vec!["watch".into()];
    lattice.link(link).await?;
    Ok((lattice, provider))
}

/// Wait until the host has logged `line` (the watcher component logs each change).
async fn seen(lattice: &Lattice, line: &str) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !lattice.host.logs().contains(line) {
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "the watcher never logged {line:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// Set, overwrite and delete selected keys, and write one the link does not select.
async fn exercise(lattice: &Lattice, selected: &str, other: &str) -> anyhow::Result<()> {
    let set = |key: &str, value: &str| json!({"op": "set", "bucket": "b", "key": key, "value": value});
    lattice.ok("kvc", set(other, "unwatched")).await?;
    lattice.ok("kvc", set(selected, "one")).await?;
    seen(lattice, &format!("watch on-set {selected}=one")).await?;
    lattice.ok("kvc", set(selected, "two")).await?;
    seen(lattice, &format!("watch on-set {selected}=two")).await?;
    lattice.ok("kvc", json!({"op": "delete", "bucket": "b", "key": selected})).await?;
    seen(lattice, &format!("watch on-delete {selected}")).await?;
    assert!(
        !lattice.host.logs().contains(&format!("watch on-set {other}")),
        "a key the link does not select was reported"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_watcher_sees_set_and_delete_of_its_keys_on_nats() -> anyhow::Result<()> {
    let (lattice, _provider) = watch_lattice(&[("backend", "nats")], "user.*").await?;
    exercise(&lattice, "user.ada", "order.7").await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_watcher_sees_set_and_delete_of_its_keys_on_redis() -> anyhow::Result<()> {
    let redis = RedisServer::start().await?;
    let (lattice, _provider) = watch_lattice(&[("url", &redis.url)], "user:*").await?;
    exercise(&lattice, "user:ada", "order:7").await
}
