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
    let _provider = lattice.kv_on_redis(&redis_server).await?;
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
    ferry_lattice::nats::sync_subscriptions(&lattice.raw).await?;
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

/// The calls a component makes while serving an invocation carry that invocation's deadline
/// (when it is nearer than the host's own call timeout), so a provider stops what the caller
/// no longer waits for. Seen on the bus by a plain NATS subscriber.
#[tokio::test(flavor = "multi_thread")]
async fn a_components_calls_carry_its_callers_deadline() -> anyhow::Result<()> {
    let lattice = Lattice::start_with_timeout(Duration::from_secs(20)).await?;
    let _kv = lattice.start_provider("ferry-provider-keyvalue", "kv").await?;
    lattice.start_component("kv-http", "kvc", &[]).await?;
    let link = Link::new("kvc", "kv", "wasi", "keyvalue", vec!["store".into()]);
    lattice.link(link).await?;
    let mut seen = lattice.raw.subscribe(ferry_proto::subject::rpc(&lattice.name, "kv")?).await?;
    ferry_lattice::nats::sync_subscriptions(&lattice.raw).await?;

    let request = ferry_proto::http::HttpRequest {
        method: "POST".into(),
        scheme: "http".into(),
        authority: "localhost".into(),
        path_with_query: "/".into(),
        headers: Vec::new(),
        body: serde_json::to_vec(&json!({"op": "get", "bucket": "b", "key": "k"}))?,
        body_stream: None,
    };
    let issued = ferry_proto::time::now_ms();
    let answer = lattice
        .client
        .invoke_with_timeout(
            "kvc",
            "default",
            ferry_proto::http::OP_HANDLE,
            ferry_proto::codec::encode(&request)?,
            Duration::from_secs(3),
        )
        .await?;
    let response: ferry_proto::http::HttpResponse = ferry_proto::codec::decode(&answer)?;
    assert_eq!(response.status, 200, "{}", String::from_utf8_lossy(&response.body));
    let call = tokio::time::timeout(Duration::from_secs(5), futures::StreamExt::next(&mut seen))
        .await?
        .ok_or_else(|| anyhow::anyhow!("no call reached the provider"))?;
    let call = ferry_proto::envelope::Invocation::decode(&call.payload)?;
    assert!(call.deadline_ms != 0, "a component's call carries a deadline");
    assert!(
        call.deadline_ms <= issued + 3_000 + 100,
        "the call's deadline ({} ms after the request) is the request's (3000 ms), not the host's 20 s",
        call.deadline_ms.saturating_sub(issued)
    );
    Ok(())
}

/// A component that sent its response head and then waits in a host call (here: writing a
/// body nobody reads) is stopped at the invocation's deadline and frees its instance.
#[tokio::test(flavor = "multi_thread")]
async fn a_guest_stuck_after_its_response_head_is_stopped_at_the_deadline() -> anyhow::Result<()> {
    // The host gives up on a body nobody pulls after its 20 s RPC timeout; the request's own
    // deadline (2 s) must come first.
    let lattice = Lattice::start_with_timeout(Duration::from_secs(20)).await?;
    let address: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
    let _provider = lattice
        .start_provider_with("ferry-provider-http-server", "http", &["--config", &format!("address={address}")])
        .await?;
    let start = ferry_proto::ctl::ComponentStart {
        request_id: "one".into(),
        component_id: "echo".into(),
        image: lattice.image("http-echo").await?,
        max_instances: Some(1),
        config: Vec::new(),
    };
    let resp = lattice.ctl.send(&start, None).await?;
    anyhow::ensure!(resp.success, "{}", resp.message);
    lattice.config("route", &[("path", "/"), ("timeout_ms", "2000")]).await?;
    let mut link = Link::new("http", "echo", "wasi", "http", vec!["incoming-handler".into()]);
    link.source_config = vec!["route".into()];
    lattice.link(link).await?;
    wait_for_route(address, "localhost", "/").await?;

    // The head arrives; the body (1 GiB) is never read, so the guest blocks writing it.
    let stuck =
        ferry_tests::http::send(address, request("GET", "localhost", "/download?bytes=1073741824", empty())?).await?;
    assert_eq!(stuck.status(), StatusCode::OK);
    tokio::time::sleep(Duration::from_secs(3)).await;
    // Its only instance is free again.
    let (status, _, body) = fetch(address, request("GET", "localhost", "/hello", empty())?).await?;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    lattice
        .host
        .logs()
        .contains("still running after sending its response head")
        .then_some(())
        .ok_or_else(|| anyhow::anyhow!("the host did not say it stopped the instance"))?;
    drop(stuck);
    Ok(())
}

/// `ferry ctl --timeout-ms` holds beyond async-nats's own 10 s default: a host (here a plain
/// NATS client standing in for one) that answers after 12 s is heard.
#[tokio::test(flavor = "multi_thread")]
async fn ferry_ctl_waits_as_long_as_its_timeout_says() -> anyhow::Result<()> {
    let nats = ferry_tests::NatsServer::start().await?;
    let slow_host = async_nats::connect(&nats.url).await?;
    let mut commands = slow_host.subscribe(ferry_proto::subject::ctl_shared("slow")?).await?;
    ferry_lattice::nats::sync_subscriptions(&slow_host).await?;
    tokio::spawn(async move {
        if let Some(msg) = futures::StreamExt::next(&mut commands).await {
            tokio::time::sleep(Duration::from_secs(12)).await;
            let answer = ferry_proto::ctl::CtlResponse::ok("late", "answered late", json!([]));
            if let (Some(reply), Ok(bytes)) = (msg.reply, serde_json::to_vec(&answer)) {
                let _ = slow_host.publish(reply, bytes.into()).await;
                let _ = slow_host.flush().await;
            }
        }
    });
    let ferry = ferry_tests::binary("ferry")?;
    let url = nats.url.clone();
    let started = Instant::now();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(ferry)
            .args(["ctl", "--nats-url", &url, "--lattice", "slow", "--timeout-ms", "20000", "link", "get"])
            .output()
    })
    .await??;
    let took = started.elapsed();
    assert!(output.status.success(), "ferry ctl gave up after {took:?}: {}", String::from_utf8_lossy(&output.stderr));
    assert!(String::from_utf8_lossy(&output.stdout).contains("answered late"));
    assert!(took >= Duration::from_secs(12), "the answer came after {took:?}");
    Ok(())
}

/// A blob write whose provider takes 12 s succeeds under a 20 s `--rpc-timeout-ms`.
#[tokio::test(flavor = "multi_thread")]
async fn a_blob_write_may_take_longer_than_ten_seconds() -> anyhow::Result<()> {
    let lattice = Lattice::start_with_timeout(Duration::from_secs(20)).await?;
    let provider = lattice.start_provider("ferry-provider-blobstore", "blob").await?;
    lattice.start_component("blob-test", "blobs", &[]).await?;
    let root = std::env::temp_dir().join(format!("ferry-slow-blob-{}-{}", std::process::id(), free_port()?));
    std::fs::create_dir_all(&root)?;
    lattice.config("blob-backend", &[("root", &root.display().to_string())]).await?;
    let mut link =
        Link::new("blobs", "blob", "wasi", "blobstore", vec!["blobstore".into(), "container".into(), "types".into()]);
    link.target_config = vec!["blob-backend".into()];
    lattice.link(link).await?;
    lattice.ok("blobs", json!({"op": "create", "container": "c"})).await?;

    // The provider answers nobody for 12 s.
    provider.pause();
    let resume = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(12)).await;
        provider.resume();
        provider
    });
    let started = Instant::now();
    lattice.ok("blobs", json!({"op": "write", "container": "c", "object": "o", "text": "slow but whole"})).await?;
    assert!(started.elapsed() >= Duration::from_secs(11), "the provider was not paused: {:?}", started.elapsed());
    let _provider = resume.await?;
    let read = lattice.ok("blobs", json!({"op": "read", "container": "c", "object": "o", "mode": "sync"})).await?;
    assert_eq!(read["text"], json!("slow but whole"));
    let _ = std::fs::remove_dir_all(&root);
    Ok(())
}
