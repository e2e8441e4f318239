//! Key-value values larger than one NATS message, through the real http-server provider: a
//! component's `set`, `get`, `set-many` and `get-many` of megabytes reach the backend and come
//! back whole, and a backend limit of its own is a typed error that names it.

use std::net::SocketAddr;

use ferry_proto::link::Link;
use ferry_tests::{
    Lattice, Process, RedisServer, free_port,
    http::{fetch, full, request, wait_for_route},
};
use redis::AsyncCommands as _;
use serde_json::{Value, json};

const KV: &str = "ferry-provider-keyvalue";
const HTTP: &str = "ferry-provider-http-server";
const MIB: usize = 1 << 20;

/// An ASCII value of `len` bytes whose content depends on the offset, so a lost, repeated or
/// reordered chunk shows.
fn pattern(len: usize, salt: usize) -> String {
    (0..len).map(|i| char::from(b'a' + ((i.wrapping_mul(31) + i / 4096 + salt) % 26) as u8)).collect()
}

/// The kv-http component served over HTTP, linked to the key-value provider `kv` with the
/// named target configs.
async fn kv_over_http(lattice: &Lattice, kv: &str, target_config: &[&str]) -> anyhow::Result<(Process, SocketAddr)> {
    let address: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
    let http = lattice.start_provider_with(HTTP, "http", &["--config", &format!("address={address}")]).await?;
    lattice.start_component("kv-http", "kvc", &[]).await?;
    lattice.config("kvc-route", &[("path", "/")]).await?;
    let mut route = Link::new("http", "kvc", "wasi", "http", vec!["incoming-handler".into()]);
    route.source_config = vec!["kvc-route".into()];
    lattice.link(route).await?;
    let mut link = Link::new("kvc", kv, "wasi", "keyvalue", vec!["store".into(), "atomics".into(), "batch".into()]);
    link.target_config = target_config.iter().map(|c| (*c).to_owned()).collect();
    lattice.link(link).await?;
    wait_for_route(address, "localhost", "/").await?;
    Ok((http, address))
}

/// POST one command to the component over HTTP: the status and the JSON answer.
async fn command(address: SocketAddr, cmd: &Value) -> anyhow::Result<(u16, Value)> {
    let (status, _, body) = fetch(address, request("POST", "localhost", "/", full(serde_json::to_vec(cmd)?))?).await?;
    let answer = serde_json::from_slice(&body).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into()));
    Ok((status.as_u16(), answer))
}

async fn ok(address: SocketAddr, cmd: Value) -> anyhow::Result<Value> {
    let (status, answer) = command(address, &cmd).await?;
    anyhow::ensure!(status == 200, "{} answered {status}: {answer}", cmd["op"]);
    Ok(answer["ok"].clone())
}

#[tokio::test(flavor = "multi_thread")]
async fn megabyte_values_round_trip_through_the_redis_backend_single_and_batched() -> anyhow::Result<()> {
    let lattice = Lattice::start().await?;
    let redis_server = RedisServer::start().await?;
    let _kv = lattice.start_provider(KV, "kv-redis").await?;
    lattice.config("redis", &[("backend", "redis"), ("url", &redis_server.url)]).await?;
    let (_http, address) = kv_over_http(&lattice, "kv-redis", &["redis"]).await?;

    let big = pattern(8 * MIB, 0);
    ok(address, json!({"op": "set", "bucket": "b", "key": "big", "value": big})).await?;
    let mut redis = redis::Client::open(redis_server.url.as_str())?.get_multiplexed_async_connection().await?;
    let stored: usize = redis.strlen("big").await?;
    assert_eq!(stored, 8 * MIB, "Redis must hold the whole value");
    let back = ok(address, json!({"op": "get", "bucket": "b", "key": "big"})).await?;
    assert!(
        back.as_str() == Some(big.as_str()),
        "the value read back differs ({} bytes)",
        back.as_str().map_or(0, str::len)
    );

    // A batch whose values are small one by one but together exceed a NATS message.
    let items: serde_json::Map<String, Value> =
        (0..4).map(|i| (format!("part{i}"), json!(pattern(400 * 1024, i)))).collect();
    ok(address, json!({"op": "set_many", "bucket": "b", "items": items})).await?;
    let many = ok(address, json!({"op": "get_many", "bucket": "b", "keys": ["part0", "part3", "nope"]})).await?;
    assert_eq!(many, json!([["part0", pattern(400 * 1024, 0)], ["part3", pattern(400 * 1024, 3)], null]));
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_value_over_the_jetstream_limit_is_refused_with_a_typed_error_that_names_it() -> anyhow::Result<()> {
    let lattice = Lattice::start().await?;
    let _kv = lattice.start_provider(KV, "kv-nats").await?;
    let (_http, address) = kv_over_http(&lattice, "kv-nats", &[]).await?;

    // Larger than what travels inline, smaller than the server's max payload: stored whole.
    let medium = pattern(700 * 1024, 7);
    ok(address, json!({"op": "set", "bucket": "b", "key": "medium", "value": medium})).await?;
    assert_eq!(ok(address, json!({"op": "get", "bucket": "b", "key": "medium"})).await?, json!(medium));

    let (status, answer) =
        command(address, &json!({"op": "set", "bucket": "b", "key": "big", "value": pattern(8 * MIB, 1)})).await?;
    assert_eq!(status, 500, "{answer}");
    let error = answer["error"].as_str().unwrap_or_default();
    assert!(error.starts_with("too-large:"), "the error must be typed: {error}");
    assert!(error.contains("1048576"), "the error must name the limit: {error}");
    // Nothing was stored, and the bucket still serves.
    assert_eq!(ok(address, json!({"op": "get", "bucket": "b", "key": "big"})).await?, Value::Null);
    assert_eq!(ok(address, json!({"op": "get", "bucket": "b", "key": "medium"})).await?, json!(medium));
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn listing_a_jetstream_bucket_page_by_page_reads_each_key_about_once() -> anyhow::Result<()> {
    // The server's monitoring endpoint counts the messages it delivers.
    let monitor: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
    let nats = ferry_tests::NatsServer::start_with_config(&format!("http: \"{monitor}\"\n")).await?;
    let lattice = Lattice::start_on(nats, std::time::Duration::from_secs(10)).await?;
    let _kv = lattice.start_provider(KV, "kv-nats").await?;
    lattice.start_component("kv-http", "kvc", &[]).await?;
    let link = Link::new("kvc", "kv-nats", "wasi", "keyvalue", vec!["store".into(), "batch".into()]);
    lattice.link(link).await?;
    const KEYS: usize = 600;
    let items: serde_json::Map<String, Value> = (0..KEYS).map(|i| (format!("key{i:04}"), json!("v"))).collect();
    lattice.ok("kvc", json!({"op": "set_many", "bucket": "many", "items": items})).await?;

    let before = delivered(monitor).await?;
    let listed = lattice.ok("kvc", json!({"op": "list", "bucket": "many"})).await?;
    let during = delivered(monitor).await? - before;
    let mut keys: Vec<String> = serde_json::from_value(listed["keys"].clone())?;
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), KEYS, "every key, once");
    let pages = listed["pages"].as_u64().unwrap_or(0);
    assert!(pages >= 6, "{KEYS} keys take several pages: {pages}");
    // Reading every key for each page would deliver pages × keys messages (3600 here).
    assert!(during < 3 * KEYS as u64, "listing {KEYS} keys in {pages} pages made the server deliver {during} messages");
    Ok(())
}

/// Messages the NATS server has delivered so far, from its monitoring endpoint.
async fn delivered(monitor: SocketAddr) -> anyhow::Result<u64> {
    let (_, _, body) = fetch(monitor, request("GET", "localhost", "/varz", ferry_tests::http::empty())?).await?;
    let varz: Value = serde_json::from_slice(&body)?;
    varz["out_msgs"].as_u64().ok_or_else(|| anyhow::anyhow!("no out_msgs in /varz"))
}
