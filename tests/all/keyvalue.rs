//! Key-value end to end: component → host → NATS → keyvalue provider process → backend.

use std::time::{Duration, Instant};

use ferry_proto::{ErrorKind, link::Link};
use ferry_tests::{Lattice, RedisServer};
use redis::AsyncCommands as _;
use serde_json::json;

const KV: &str = "ferry-provider-keyvalue";

pub(crate) fn kv_link(component: &str, provider: &str, name: &str, target_config: &[&str]) -> Link {
    let mut link =
        Link::new(component, provider, "wasi", "keyvalue", vec!["store".into(), "atomics".into(), "batch".into()]);
    link.name = name.to_owned();
    link.target_config = target_config.iter().map(|c| (*c).to_owned()).collect();
    link
}

/// Every store, atomics and batch operation through the component, against one backend.
pub(crate) async fn exercise_store(lattice: &Lattice, component: &str) -> anyhow::Result<()> {
    let c = component;
    lattice.ok(c, json!({"op": "set", "bucket": "b", "key": "greeting", "value": "hello"})).await?;
    assert_eq!(lattice.ok(c, json!({"op": "get", "bucket": "b", "key": "greeting"})).await?, json!("hello"));
    assert_eq!(lattice.ok(c, json!({"op": "exists", "bucket": "b", "key": "greeting"})).await?, json!(true));
    lattice.ok(c, json!({"op": "delete", "bucket": "b", "key": "greeting"})).await?;
    assert_eq!(lattice.ok(c, json!({"op": "get", "bucket": "b", "key": "greeting"})).await?, json!(null));
    assert_eq!(lattice.ok(c, json!({"op": "exists", "bucket": "b", "key": "greeting"})).await?, json!(false));

    // More than one page of keys: the component follows the cursor to the end.
    let items: serde_json::Map<String, serde_json::Value> =
        (0..150).map(|i| (format!("k{i:03}"), json!(format!("v{i}")))).collect();
    lattice.ok(c, json!({"op": "set_many", "bucket": "b", "items": items})).await?;
    let listed = lattice.ok(c, json!({"op": "list", "bucket": "b"})).await?;
    let mut keys: Vec<String> = serde_json::from_value(listed["keys"].clone())?;
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), 150, "list-keys must return every key exactly once across pages");
    assert!(listed["pages"].as_u64().unwrap_or(0) >= 2, "150 keys must take more than one page: {listed}");

    let many = lattice.ok(c, json!({"op": "get_many", "bucket": "b", "keys": ["k000", "missing", "k149"]})).await?;
    assert_eq!(many, json!([["k000", "v0"], null, ["k149", "v149"]]));
    lattice.ok(c, json!({"op": "delete_many", "bucket": "b", "keys": ["k000", "k149"]})).await?;
    let many = lattice.ok(c, json!({"op": "get_many", "bucket": "b", "keys": ["k000", "k001", "k149"]})).await?;
    assert_eq!(many, json!([null, ["k001", "v1"], null]));

    assert_eq!(lattice.ok(c, json!({"op": "increment", "bucket": "b", "key": "counter", "delta": 5})).await?, json!(5));
    assert_eq!(lattice.ok(c, json!({"op": "increment", "bucket": "b", "key": "counter", "delta": 2})).await?, json!(7));
    assert_eq!(lattice.ok(c, json!({"op": "get", "bucket": "b", "key": "counter"})).await?, json!("7"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn every_keyvalue_operation_works_with_the_nats_backend() -> anyhow::Result<()> {
    let lattice = Lattice::start().await?;
    let _provider = lattice.start_provider(KV, "kv-nats").await?;
    lattice.start_component("kv-http", "kvc", &[]).await?;
    lattice.link(kv_link("kvc", "kv-nats", "default", &[])).await?;
    exercise_store(&lattice, "kvc").await
}

#[tokio::test(flavor = "multi_thread")]
async fn every_keyvalue_operation_works_with_the_redis_backend() -> anyhow::Result<()> {
    let lattice = Lattice::start().await?;
    let redis_server = RedisServer::start().await?;
    // On a pool of worker threads; the NATS backend's test runs on the default single thread.
    let _provider = lattice.start_provider_with(KV, "kv-redis", &["--threads", "3"]).await?;
    lattice.config("redis", &[("backend", "redis"), ("url", &redis_server.url)]).await?;
    lattice.start_component("kv-http", "kvc", &[]).await?;
    lattice.link(kv_link("kvc", "kv-redis", "default", &["redis"])).await?;
    exercise_store(&lattice, "kvc").await?;

    // The data is really in Redis.
    lattice.ok("kvc", json!({"op": "set", "bucket": "b", "key": "from-component", "value": "in redis"})).await?;
    let mut redis = redis::Client::open(redis_server.url.as_str())?.get_multiplexed_async_connection().await?;
    let stored: Option<String> = redis.get("from-component").await?;
    assert_eq!(stored.as_deref(), Some("in redis"));
    let counter: Option<String> = redis.get("counter").await?;
    assert_eq!(counter.as_deref(), Some("7"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn link_names_select_the_backend_and_data_lands_only_there() -> anyhow::Result<()> {
    let lattice = Lattice::start().await?;
    let redis_server = RedisServer::start().await?;
    let _nats_kv = lattice.start_provider(KV, "kv-nats").await?;
    let _redis_kv = lattice.start_provider(KV, "kv-redis").await?;
    lattice.config("redis", &[("url", &redis_server.url)]).await?;
    lattice.start_component("kv-http", "kvc", &[]).await?;
    lattice.link(kv_link("kvc", "kv-nats", "default", &[])).await?;
    lattice.link(kv_link("kvc", "kv-redis", "cache", &["redis"])).await?;

    lattice.ok("kvc", json!({"op": "set", "bucket": "b", "key": "only-cache", "value": "c", "link": "cache"})).await?;
    lattice.ok("kvc", json!({"op": "set", "bucket": "b", "key": "only-default", "value": "d"})).await?;

    let mut redis = redis::Client::open(redis_server.url.as_str())?.get_multiplexed_async_connection().await?;
    let cached: Option<String> = redis.get("only-cache").await?;
    let leaked: Option<String> = redis.get("only-default").await?;
    assert_eq!(cached.as_deref(), Some("c"));
    assert_eq!(leaked, None, "the default link must not write to Redis");
    assert_eq!(
        lattice.ok("kvc", json!({"op": "get", "bucket": "b", "key": "only-cache"})).await?,
        json!(null),
        "the cache key must not be in NATS KV"
    );
    assert_eq!(lattice.ok("kvc", json!({"op": "get", "bucket": "b", "key": "only-default"})).await?, json!("d"));
    assert_eq!(
        lattice.ok("kvc", json!({"op": "get", "bucket": "b", "key": "only-cache", "link": "cache"})).await?,
        json!("c")
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn calls_without_a_link_fail_with_not_linked_until_a_link_is_put() -> anyhow::Result<()> {
    // A long RPC timeout, so "fails at once" and "hangs until the timeout" are far apart even on
    // a loaded machine.
    let rpc_timeout = Duration::from_secs(20);
    let lattice = Lattice::start_with_timeout(rpc_timeout).await?;
    let _provider = lattice.start_provider(KV, "kv-nats").await?;
    lattice.start_component("kv-http", "kvc", &[]).await?;

    let started = Instant::now();
    let (status, answer) = lattice.call("kvc", json!({"op": "get", "bucket": "b", "key": "k"})).await?;
    assert_eq!(status, 500);
    assert!(answer["error"].as_str().unwrap_or_default().starts_with("not-linked:"), "{answer}");
    assert!(started.elapsed() < rpc_timeout / 4, "a missing link must fail at once, not wait for the RPC timeout");

    lattice.link(kv_link("kvc", "kv-nats", "default", &[])).await?;
    lattice.ok("kvc", json!({"op": "set", "bucket": "b", "key": "k", "value": "v"})).await?;

    lattice.unlink(kv_link("kvc", "kv-nats", "default", &[]).key()).await?;
    let (status, answer) = lattice.call("kvc", json!({"op": "get", "bucket": "b", "key": "k"})).await?;
    assert_eq!(status, 500);
    assert!(answer["error"].as_str().unwrap_or_default().starts_with("not-linked:"), "{answer}");

    lattice.link(kv_link("kvc", "kv-nats", "default", &[])).await?;
    assert_eq!(lattice.ok("kvc", json!({"op": "get", "bucket": "b", "key": "k"})).await?, json!("v"));

    // A link name the component selects that does not exist is also not-linked.
    let (_, answer) = lattice.call("kvc", json!({"op": "get", "bucket": "b", "key": "k", "link": "nope"})).await?;
    assert!(answer["error"].as_str().unwrap_or_default().starts_with("not-linked:"), "{answer}");

    // The caller of the component must be linked to it too.
    lattice
        .unlink(Link::new(ferry_tests::TEST_CLIENT_ID, "kvc", "wasi", "http", vec!["incoming-handler".into()]).key())
        .await?;
    let err =
        lattice.call("kvc", json!({"op": "open", "bucket": "b"})).await.expect_err("unlinked caller must be refused");
    assert_eq!(err.kind, ErrorKind::NotLinked);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_provider_gives_typed_errors_and_a_restarted_one_serves_again() -> anyhow::Result<()> {
    let rpc_timeout = Duration::from_secs(2);
    let lattice = Lattice::start_with_timeout(rpc_timeout).await?;
    let mut provider = lattice.start_provider(KV, "kv-nats").await?;
    lattice.start_component("kv-http", "kvc", &[]).await?;
    lattice.link(kv_link("kvc", "kv-nats", "default", &[])).await?;
    lattice.ok("kvc", json!({"op": "set", "bucket": "b", "key": "k", "value": "before"})).await?;

    provider.kill();
    for _ in 0..3 {
        let started = Instant::now();
        let (status, answer) = lattice.call("kvc", json!({"op": "get", "bucket": "b", "key": "k"})).await?;
        let error = answer["error"].as_str().unwrap_or_default().to_owned();
        assert_eq!(status, 500, "{answer}");
        assert!(error.starts_with("unavailable:") || error.starts_with("timeout:"), "{error}");
        assert!(started.elapsed() < rpc_timeout + Duration::from_secs(2), "took {:?}", started.elapsed());
    }

    // The host kept serving; a new provider process reads its links from the bucket.
    let _restarted = lattice.start_provider(KV, "kv-nats").await?;
    assert_eq!(lattice.ok("kvc", json!({"op": "get", "bucket": "b", "key": "k"})).await?, json!("before"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_provider_started_after_its_links_reads_them_from_the_bucket() -> anyhow::Result<()> {
    let lattice = Lattice::start().await?;
    let redis_server = RedisServer::start().await?;
    lattice.config("redis", &[("url", &redis_server.url)]).await?;
    lattice.start_component("kv-http", "kvc", &[]).await?;
    lattice.link(kv_link("kvc", "kv-late", "default", &["redis"])).await?;

    let provider = lattice.start_provider(KV, "kv-late").await?;
    assert!(provider.logs().contains("links=1"), "snapshot not loaded:\n{}", provider.logs());
    lattice.ok("kvc", json!({"op": "set", "bucket": "b", "key": "late", "value": "works"})).await?;
    let mut redis = redis::Client::open(redis_server.url.as_str())?.get_multiplexed_async_connection().await?;
    let stored: Option<String> = redis.get("late").await?;
    assert_eq!(stored.as_deref(), Some("works"), "the snapshot must carry the link's resolved config");
    Ok(())
}
