//! Every configured timeout is the real one: longer than async-nats's own 10 s default as well
//! as shorter, and the caller's deadline stops the work behind it.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use ferry_proto::link::Link;
use ferry_tests::{
    Lattice, RedisServer, free_port,
    http::{empty, fetch, request, wait_for_route},
};
use hyper::StatusCode;
use serde_json::json;

/// A component that sleeps 15 s behind a 30 s HTTP timeout answers; one that sleeps 45 s gets a
/// 504 at 30 s, and the host stops running it then.
#[tokio::test(flavor = "multi_thread")]
async fn the_http_timeout_holds_exactly_and_stops_the_component() -> anyhow::Result<()> {
    let mut lattice = Lattice::start().await?;
    let address: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
    let _provider = lattice
        .start_provider_with("ferry-provider-http-server", "http", &["--config", &format!("address={address}")])
        .await?;
    lattice.start_component("http-echo", "echo", &[]).await?;
    lattice.config("route", &[("path", "/"), ("timeout_ms", "30000")]).await?;
    let mut link = Link::new("http", "echo", "wasi", "http", vec!["incoming-handler".into()]);
    link.source_config = vec!["route".into()];
    lattice.link(link).await?;
    wait_for_route(address, "localhost", "/").await?;

    let timed = |ms: u64| async move {
        let started = Instant::now();
        let answer = fetch(address, request("GET", "localhost", &format!("/sleep?ms={ms}"), empty())?).await;
        anyhow::Ok((answer?, started.elapsed()))
    };
    let (within, beyond) = tokio::join!(timed(15_000), timed(45_000));
    let ((status, _, body), took) = within?;
    assert_eq!(status, StatusCode::OK, "a 15 s component behind a 30 s timeout must answer (took {took:?})");
    assert_eq!(body.as_ref(), b"awake");
    let ((status, _, _), took) = beyond?;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    assert!(
        took >= Duration::from_secs(29) && took <= Duration::from_secs(31),
        "the 504 must come at 30 s ± 1 s, came after {took:?}"
    );
    lattice.host.wait_for_log("stopped work past its caller's deadline", Duration::from_secs(5)).await?;
    Ok(())
}

/// A key-value call that takes 12 s succeeds under a 20 s `--rpc-timeout-ms`.
#[tokio::test(flavor = "multi_thread")]
async fn the_host_rpc_timeout_holds_beyond_ten_seconds() -> anyhow::Result<()> {
    let lattice = Lattice::start_with_timeout(Duration::from_secs(20)).await?;
    let redis_server = RedisServer::start().await?;
    let _provider = lattice.start_provider("ferry-provider-keyvalue", "kv-redis").await?;
    lattice.config("redis", &[("url", &redis_server.url)]).await?;
    lattice.start_component("kv-http", "kvc", &[]).await?;
    let mut link = Link::new("kvc", "kv-redis", "wasi", "keyvalue", vec!["store".into()]);
    link.target_config = vec!["redis".into()];
    lattice.link(link).await?;
    lattice.ok("kvc", json!({"op": "set", "bucket": "b", "key": "k", "value": "slow"})).await?;

    // Redis answers nobody for 12 s.
    let mut redis = redis::Client::open(redis_server.url.as_str())?.get_multiplexed_async_connection().await?;
    redis::cmd("CLIENT").arg("PAUSE").arg(12_000).arg("ALL").query_async::<()>(&mut redis).await?;
    let started = Instant::now();
    let value = lattice.ok("kvc", json!({"op": "get", "bucket": "b", "key": "k"})).await?;
    assert_eq!(value, json!("slow"), "answered after {:?}", started.elapsed());
    assert!(started.elapsed() >= Duration::from_secs(11), "Redis was not paused: {:?}", started.elapsed());
    Ok(())
}

/// A component's messaging request with a 20 s timeout gets a reply that takes 12 s.
#[tokio::test(flavor = "multi_thread")]
async fn a_messaging_request_timeout_holds_beyond_ten_seconds() -> anyhow::Result<()> {
    let lattice = Lattice::start_with_timeout(Duration::from_secs(25)).await?;
    let _provider = lattice.start_provider("ferry-provider-messaging", "msg").await?;
    lattice.start_component("messaging-echo", "echo", &[]).await?;
    lattice.link(Link::new("echo", "msg", "wasmcloud", "messaging", vec!["consumer".into()])).await?;

    let mut slow = lattice.raw.subscribe("slow.service").await?;
    lattice.raw.flush().await?;
    let responder = lattice.raw.clone();
    tokio::spawn(async move {
        use futures::StreamExt as _;
        if let Some(msg) = slow.next().await
            && let Some(reply) = msg.reply
        {
            tokio::time::sleep(Duration::from_secs(12)).await;
            let _ = responder.publish(reply, "late but in time".into()).await;
        }
    });
    let request = ferry_proto::http::HttpRequest {
        method: "POST".into(),
        scheme: "http".into(),
        authority: "localhost".into(),
        path_with_query: "/request?subject=slow.service&timeout=20000".into(),
        headers: Vec::new(),
        body: b"hello".to_vec(),
        body_stream: None,
    };
    let started = Instant::now();
    let response = lattice.client.handle_http("echo", &request).await?;
    let body = String::from_utf8_lossy(&response.body).into_owned();
    assert_eq!(response.status, 200, "{body} after {:?}", started.elapsed());
    assert!(body.contains("late but in time"), "{body}");
    Ok(())
}
