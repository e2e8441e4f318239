//! Links and config as every process sees them: one revision-ordered view, kept current by
//! watching the lattice bucket and resynced after a lost connection, so a change reaches hosts
//! and providers whatever they were doing when it was made.

use std::time::{Duration, Instant};

use ferry_lattice::LatticeBucket;
use ferry_proto::link::Link;
use ferry_tests::{Lattice, NatsServer, RedisServer};
use redis::AsyncCommands as _;
use serde_json::json;

const KV: &str = "ferry-provider-keyvalue";

fn kv_link(component: &str, provider: &str, target_config: &[&str]) -> Link {
    let mut link =
        Link::new(component, provider, "wasi", "keyvalue", vec!["store".into(), "atomics".into(), "batch".into()]);
    link.target_config = target_config.iter().map(|c| (*c).to_owned()).collect();
    link
}

async fn redis_get(server: &RedisServer, key: &str) -> anyhow::Result<Option<String>> {
    let mut conn = redis::Client::open(server.url.as_str())?.get_multiplexed_async_connection().await?;
    Ok(conn.get(key).await?)
}

/// Set `key` through the component until it lands in `server` (a provider applying a change
/// takes a moment), or fail after `within`.
async fn set_until_in(lattice: &Lattice, server: &RedisServer, key: &str, within: Duration) -> anyhow::Result<()> {
    let start = Instant::now();
    loop {
        let _ = lattice.call("kvc", json!({"op": "set", "bucket": "b", "key": key, "value": "v"})).await;
        if redis_get(server, key).await?.is_some() {
            return Ok(());
        }
        anyhow::ensure!(start.elapsed() < within, "{key} never reached the Redis server the link's config names now");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_config_delete_reaches_the_providers_whose_links_use_it() -> anyhow::Result<()> {
    let lattice = Lattice::start().await?;
    let redis_server = RedisServer::start().await?;
    let _kv = lattice.start_provider(KV, "kv").await?;
    lattice.config("redis", &[("backend", "redis"), ("url", &redis_server.url)]).await?;
    lattice.start_component("kv-http", "kvc", &[]).await?;
    lattice.link(kv_link("kvc", "kv", &["redis"])).await?;
    lattice.ok("kvc", json!({"op": "set", "bucket": "b", "key": "before", "value": "1"})).await?;
    assert!(redis_get(&redis_server, "before").await?.is_some());

    // Without the config the link resolves to the default backend, JetStream KV.
    lattice.delete_config("redis").await?;
    let start = Instant::now();
    loop {
        lattice.ok("kvc", json!({"op": "set", "bucket": "b", "key": "after", "value": "2"})).await?;
        if redis_get(&redis_server, "after").await?.is_none() {
            break;
        }
        let _: () = redis::Client::open(redis_server.url.as_str())?
            .get_multiplexed_async_connection()
            .await?
            .del("after")
            .await?;
        anyhow::ensure!(start.elapsed() < Duration::from_secs(10), "the provider kept using the deleted config");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(lattice.ok("kvc", json!({"op": "get", "bucket": "b", "key": "after"})).await?, json!("2"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_provider_that_lost_its_connection_catches_up_on_changes_made_meanwhile() -> anyhow::Result<()> {
    // The server drops a client that leaves two pings unanswered for a second each.
    let nats = NatsServer::start_with_config("ping_interval: \"1s\"\nping_max: 2\ndebug: true\n").await?;
    let lattice = Lattice::start_on(nats, Duration::from_secs(2)).await?;
    let (first, second) = (RedisServer::start().await?, RedisServer::start().await?);
    let kv = lattice.start_provider(KV, "kv").await?;
    lattice.config("redis", &[("backend", "redis"), ("url", &first.url)]).await?;
    lattice.start_component("kv-http", "kvc", &[]).await?;
    lattice.link(kv_link("kvc", "kv", &["redis"])).await?;
    lattice.ok("kvc", json!({"op": "set", "bucket": "b", "key": "k0", "value": "v"})).await?;
    assert!(redis_get(&first, "k0").await?.is_some());

    // The provider stalls; the server gives up on it; the config changes meanwhile.
    kv.pause();
    let paused = Instant::now();
    while !lattice.nats.process.logs().contains("Stale Client Connection") {
        anyhow::ensure!(paused.elapsed() < Duration::from_secs(20), "the server never dropped the stalled provider");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    lattice.config("redis", &[("backend", "redis"), ("url", &second.url)]).await?;
    kv.resume();

    set_until_in(&lattice, &second, "k1", Duration::from_secs(20)).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_link_of_one_name_and_interface_to_another_target_is_refused() -> anyhow::Result<()> {
    let lattice = Lattice::start().await?;
    lattice.start_component("kv-http", "kvc", &[]).await?;
    lattice.link(kv_link("kvc", "kv-a", &[])).await?;

    let mut overlapping = Link::new("kvc", "kv-b", "wasi", "keyvalue", vec!["atomics".into()]);
    overlapping.target_config = Vec::new();
    let refused = lattice.try_link(overlapping.clone()).await?;
    assert!(!refused.success, "a second default link for wasi:keyvalue/atomics must be refused: {}", refused.message);
    assert!(refused.message.contains("already exists with different target"), "{}", refused.message);
    assert!(refused.message.contains("kv-a"), "the refusal names the link in the way: {}", refused.message);

    // Under another name, or after the first is gone, it is fine.
    overlapping.name = "other".into();
    lattice.link(overlapping).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn conflicting_links_written_in_a_race_resolve_the_same_way_on_every_host() -> anyhow::Result<()> {
    let lattice = Lattice::start().await?;
    let (_second_host, second_id) = lattice.start_host().await?;
    let _kv = lattice.start_provider(KV, "kv").await?;
    lattice.start_component_on("kv-http", "kvc", &[], Some(&lattice.host_id)).await?;
    lattice.start_component_on("kv-http", "kvc", &[], Some(&second_id)).await?;
    lattice
        .link(Link::new(ferry_tests::TEST_CLIENT_ID, "kvc", "wasi", "http", vec!["incoming-handler".into()]))
        .await?;

    // Two hosts that both passed the check wrote both: the older one is the link in force
    // everywhere, the newer one is ignored (here it names a provider nobody runs).
    let bucket = LatticeBucket::open(&lattice.raw, &lattice.name, false).await?;
    bucket.put_link(&kv_link("kvc", "kv", &[])).await?;
    bucket.put_link(&kv_link("kvc", "kv-ghost", &[])).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    for i in 0..16 {
        lattice.ok("kvc", json!({"op": "set", "bucket": "b", "key": format!("k{i}"), "value": "v"})).await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_link_put_waits_for_every_running_instance_and_reports_each_rejection() -> anyhow::Result<()> {
    const TEST_PROVIDER: &str = "ferry-test-provider";
    let lattice = Lattice::start().await?;
    // One instance accepts at once; the other, whose backend (say) is unreachable from its
    // machine, rejects a moment later.
    let _fast = lattice.start_provider(TEST_PROVIDER, "picky").await?;
    let _slow = lattice
        .start_provider_with(
            TEST_PROVIDER,
            "picky",
            &["--config", "reject_links=backend unreachable from here", "--config", "link_delay_ms=500"],
        )
        .await?;
    let link = Link::new("comp", "picky", "ferry", "test", vec!["echo".into()]);
    let answer = lattice.try_link(link).await?;
    assert!(!answer.success, "one instance rejected the link: {} {:?}", answer.message, answer.data);
    let providers = format!("{:?}", answer.data.as_ref().map(|set| &set.providers));
    assert!(providers.contains("backend unreachable from here"), "the rejection is reported: {providers}");
    assert!(providers.contains("rejected by instance"), "{providers}");
    Ok(())
}
