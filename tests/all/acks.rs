//! When receivers acknowledge what they take up (docs/protocol.md, "Delivery"): a provider
//! answers a fast call with its answer alone and acknowledges a slow one within 500 ms, so its
//! caller never sends it again; a host acknowledges a component's invocation before its answer.

use std::time::{Duration, Instant};

use ferry_proto::{
    auth::{MacKey, period_of},
    codec,
    envelope::{Invocation, InvocationResponse},
    http::OP_HANDLE,
    keyvalue::{self as kv, op},
    subject,
};
use ferry_tests::{Lattice, RedisServer, TEST_CLIENT_ID};
use futures::StreamExt as _;
use serde_json::json;

/// What arrived on a call's reply subject, in order: each message's time since the call was
/// sent and whether it was a progress message, up to and including the answer.
async fn exchange(lattice: &Lattice, mut inv: Invocation, key: &MacKey) -> anyhow::Result<Vec<(Duration, bool)>> {
    inv.set_timeout(Duration::from_secs(10));
    inv.sign(key);
    let inbox = lattice.raw.new_inbox();
    let mut replies = lattice.raw.subscribe(inbox.clone()).await?;
    let sent = Instant::now();
    lattice.raw.publish_with_reply(subject::rpc(&lattice.name, &inv.target)?, inbox, inv.encode()?.into()).await?;
    let mut seen = Vec::new();
    loop {
        let reply = tokio::time::timeout(Duration::from_secs(10), replies.next()).await?.expect("a reply");
        let resp = InvocationResponse::decode(&reply.payload)?;
        resp.verify(key, &inv.id).map_err(|e| anyhow::anyhow!("reply failed verification: {e}"))?;
        seen.push((sent.elapsed(), resp.progress));
        if !resp.progress {
            anyhow::ensure!(resp.error.is_none(), "the call failed: {:?}", resp.error);
            return Ok(seen);
        }
    }
}

/// A get of `key`, as the host sends it for component `kvc` to provider `kv-redis`.
fn get(lattice: &Lattice, key: &str) -> anyhow::Result<(Invocation, MacKey)> {
    let payload = codec::encode(&kv::KeyRequest { bucket: "b".into(), key: key.into() })?;
    let inv = Invocation::new("kvc", "kv-redis", "default", op::GET, payload);
    let key = lattice.cluster.provider_key(&lattice.name, "kv-redis", period_of(inv.issued_at_ms));
    Ok((inv, key))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fast_provider_call_is_one_message_a_slow_one_is_acknowledged_and_a_component_call_first()
-> anyhow::Result<()> {
    let lattice = Lattice::start().await?;
    let redis_server = RedisServer::start().await?;
    let _provider = lattice.kv_on_redis(&redis_server).await?;
    lattice.ok("kvc", json!({"op": "set", "bucket": "b", "key": "k", "value": "v"})).await?;

    // Fast: the answer alone, every time.
    for _ in 0..20 {
        let (inv, key) = get(&lattice, "k")?;
        let seen = exchange(&lattice, inv, &key).await?;
        assert_eq!(seen.len(), 1, "a fast get was answered with more than its answer: {seen:?}");
    }

    // Slow (Redis answers nobody for 4 s): acknowledged within 500 ms of being taken up, and
    // every second after, so the caller, which waits 3 s for a sign, never sends it again.
    let mut redis = redis::Client::open(redis_server.url.as_str())?.get_multiplexed_async_connection().await?;
    redis::cmd("CLIENT").arg("PAUSE").arg(4_000).arg("ALL").query_async::<()>(&mut redis).await?;
    let (inv, key) = get(&lattice, "k")?;
    let seen = exchange(&lattice, inv, &key).await?;
    println!("slow get: {seen:?}");
    let (first_sign, progress) = seen[0];
    assert!(progress, "a slow get was not acknowledged: {seen:?}");
    assert!(first_sign >= Duration::from_millis(400), "acknowledged before it was due: {seen:?}");
    assert!(first_sign < Duration::from_millis(1500), "acknowledged late: {seen:?}");
    assert!(seen.windows(2).all(|w| w[1].0 - w[0].0 < Duration::from_millis(2500)), "a gap in the signs: {seen:?}");
    assert!(seen.last().is_some_and(|(at, _)| *at >= Duration::from_millis(3500)), "Redis was not paused: {seen:?}");

    // A component's invocation (linked from the test client by `start_component`):
    // acknowledged before the answer, however fast.
    for _ in 0..5 {
        let mut request = ferry_tests::get("/");
        request.method = "POST".into();
        request.body = serde_json::to_vec(&json!({"op": "noop"}))?;
        let inv = Invocation::new(TEST_CLIENT_ID, "kvc", "default", OP_HANDLE, codec::encode(&request)?);
        let key = lattice.client.credential().key_at(inv.issued_at_ms)?;
        let seen = exchange(&lattice, inv, &key).await?;
        assert!(
            seen.len() == 2 && seen[0].1 && !seen[1].1,
            "a component's invocation was not acknowledged before its answer: {seen:?}"
        );
    }
    Ok(())
}
