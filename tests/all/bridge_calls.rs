//! The bridge beyond key-value: blobstore bodies streamed both ways, the messaging consumer,
//! and the `Lattice` service a foreign process calls components through (the timer example,
//! HTTP with streamed bodies, links, config).

use std::{path::Path, time::Duration};

use ferry_proto::link::Link;
use ferry_tests::{
    Lattice, Process,
    http::{peak_rss, rss},
    python, repo_path,
};
use serde_json::json;

use crate::{
    blobstore::{MIB, pattern_sha},
    bridge::{BRIDGE, text},
};

/// A bridge (`blob-py`) that starts the Python blobstore example, the blob-test component
/// `blobs`, and a link between them whose target config names `root`.
async fn python_blobstore_behind_bridge(lattice: &Lattice, root: &Path) -> anyhow::Result<Process> {
    let script = text(&repo_path("examples/python-blobstore/provider.py"));
    let python = text(&python()?);
    let bridge = lattice.start_provider_with(BRIDGE, "blob-py", &["--exec", &python, &script]).await?;
    lattice.start_component("blob-test", "blobs", &[]).await?;
    lattice.config("blob-root", &[("root", &text(root))]).await?;
    let mut link = Link::new(
        "blobs",
        "blob-py",
        "wasi",
        "blobstore",
        vec!["blobstore".into(), "container".into(), "types".into()],
    );
    link.target_config = vec!["blob-root".into()];
    lattice.link(link).await?;
    Ok(bridge)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_python_blobstore_provider_behind_the_bridge_passes_the_blobstore_tests() -> anyhow::Result<()> {
    let lattice = Lattice::start_with_timeout(Duration::from_secs(10)).await?;
    let root = tempfile::tempdir()?;
    let _bridge = python_blobstore_behind_bridge(&lattice, root.path()).await?;
    crate::blobstore::exercise(&lattice).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_64_mib_object_crosses_the_bridge_both_ways_in_bounded_memory() -> anyhow::Result<()> {
    let lattice = Lattice::start_with_timeout(Duration::from_secs(60)).await?;
    let root = tempfile::tempdir()?;
    let bridge = python_blobstore_behind_bridge(&lattice, root.path()).await?;
    lattice.ok("blobs", json!({"op": "create", "container": "big"})).await?;
    let before = rss(bridge.pid())?;
    let size = 64 * MIB;
    lattice.ok("blobs", json!({"op": "write", "container": "big", "object": "blob", "size": size})).await?;
    assert_eq!(std::fs::metadata(root.path().join("big/blob"))?.len(), size, "the whole object is on disk");
    let read = lattice.ok("blobs", json!({"op": "read", "container": "big", "object": "blob"})).await?;
    let expected = pattern_sha(size);
    assert_eq!((read["len"].clone(), read["sha256"].clone()), (json!(size), json!(expected)));
    let peak = peak_rss(bridge.pid())?;
    let growth = peak.saturating_sub(before);
    println!(
        "64 MiB object through the bridge both ways, sha256 {expected}: bridge RSS {} KiB before, peak {} KiB (+{} KiB)",
        before >> 10,
        peak >> 10,
        growth >> 10
    );
    assert!(growth < 16 * MIB, "the bridge's memory grew with the object: +{} KiB", growth >> 10);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_timer_example_ticks_a_linked_handler_until_the_link_is_deleted() -> anyhow::Result<()> {
    use crate::messaging::{consumer_link, handler_link};
    use futures::StreamExt as _;

    let lattice = Lattice::start().await?;
    let _messaging = lattice.start_provider("ferry-provider-messaging", "msg").await?;
    let script = text(&repo_path("examples/python-timer/provider.py"));
    let python = text(&python()?);
    let _timer = lattice.start_provider_with(BRIDGE, "timer-py", &["--exec", &python, &script]).await?;
    // The echo component reports each message it handles on `seen.{subject}`.
    lattice.start_component("messaging-echo", "echo", &[]).await?;
    lattice.link(consumer_link("echo", "msg")).await?;
    let mut seen = lattice.raw.subscribe("seen.tick").await?;
    lattice.raw.flush().await?;

    lattice.config("ticks", &[("interval_ms", "200"), ("subject", "tick")]).await?;
    lattice.link(handler_link("timer-py", "echo", &["ticks"])).await?;
    let mut ticks = Vec::new();
    while ticks.len() < 3 {
        let message = tokio::time::timeout(Duration::from_secs(10), seen.next())
            .await
            .map_err(|_| anyhow::anyhow!("only {} ticks reached the handler in 10 s", ticks.len()))?
            .ok_or_else(|| anyhow::anyhow!("subscription ended"))?;
        let body: serde_json::Value = serde_json::from_slice(&message.payload)?;
        ticks.push(body["tick"].as_u64().unwrap_or_default());
    }
    assert!(ticks.windows(2).all(|w| w[0] < w[1]), "ticks arrive in order: {ticks:?}");

    // A bad config is the timer's to refuse.
    lattice.config("too-fast", &[("interval_ms", "1")]).await?;
    let mut too_fast = handler_link("timer-py", "echo", &["too-fast"]);
    too_fast.name = "fast".into();
    let refused = lattice.try_link(too_fast).await?;
    assert!(!refused.success, "{}", refused.message);
    let why = format!("{:?}", refused.data.as_ref().map(|set| &set.providers));
    assert!(why.contains("interval_ms must be"), "the timer's reason reaches the caller: {why}");

    lattice.unlink(handler_link("timer-py", "echo", &[]).key()).await?;
    // What was in flight when the link went may still land; then nothing.
    tokio::time::sleep(Duration::from_millis(500)).await;
    while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(50), seen.next()).await {}
    let late = tokio::time::timeout(Duration::from_millis(1500), seen.next()).await;
    assert!(late.is_err(), "a tick reached the handler after the link was deleted");
    Ok(())
}

/// The stub foreign provider (tests/src/bin/ferry-test-grpc-provider.rs) started by the bridge.
async fn stub_behind_bridge(lattice: &Lattice, provider_id: &str, extra: &[&str]) -> anyhow::Result<Process> {
    let stub = text(&ferry_tests::binary("ferry-test-grpc-provider")?);
    let args: Vec<&str> = extra.iter().copied().chain(["--exec", stub.as_str()]).collect();
    lattice.start_provider_with(BRIDGE, provider_id, &args).await
}

#[tokio::test(flavor = "multi_thread")]
async fn components_publish_and_request_through_a_bridged_messaging_provider() -> anyhow::Result<()> {
    use crate::messaging::{command, consumer_link};

    let lattice = Lattice::start().await?;
    let mut bridge = stub_behind_bridge(&lattice, "msg-stub", &[]).await?;
    lattice.start_component("messaging-echo", "echo", &[]).await?;
    lattice.link(consumer_link("echo", "msg-stub")).await?;

    let post = |path: &'static str, body: &'static str| command(&lattice, "echo", path, body.as_bytes());
    assert_eq!(post("/publish?subject=news", "hello").await?, (200, "published".to_owned()));
    bridge.wait_for_log("published news hello", Duration::from_secs(5)).await?;
    assert_eq!(post("/request?subject=q", "ping").await?, (200, "stub: ping".to_owned()));
    let (status, error) = post("/request?subject=fail.now", "ping").await?;
    assert_eq!(status, 500, "{error}");
    assert!(error.contains("no responders on fail.now"), "the provider's own message reaches the component: {error}");
    // The process answered `unavailable` of its own: it is reachable, and the bridge keeps
    // sending it calls (only a failure to reach it makes calls fail at once).
    assert!(!bridge.logs().contains("bridged provider unreachable"), "{}", bridge.logs());
    assert_eq!(post("/request?subject=q", "again").await?, (200, "stub: again".to_owned()));
    Ok(())
}

/// A gRPC channel over a Unix socket, as a foreign process opens one to the bridge.
async fn unix_channel(path: std::path::PathBuf) -> anyhow::Result<tonic::transport::Channel> {
    let connector = tower::service_fn(move |_: tonic::transport::Uri| {
        let path = path.clone();
        async move { Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tokio::net::UnixStream::connect(path).await?)) }
    });
    Ok(tonic::transport::Endpoint::from_static("http://localhost").connect_with_connector(connector).await?)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_lattice_service_calls_linked_components_with_streamed_bodies_and_reads_links_and_config()
-> anyhow::Result<()> {
    use ferry_proto::grpc::v1::{self, lattice_client::LatticeClient};
    use sha2::{Digest as _, Sha256};

    let lattice = Lattice::start().await?;
    let dir = tempfile::tempdir()?;
    let (provider_socket, lattice_socket) = (dir.path().join("provider.sock"), dir.path().join("lattice.sock"));
    let stub_listen = format!("unix:{}", provider_socket.display());
    let mut stub_command = std::process::Command::new(ferry_tests::binary("ferry-test-grpc-provider")?);
    stub_command.args(["--listen", &stub_listen]);
    let mut stub = Process::spawn("grpc-stub", stub_command)?;
    stub.wait_for_log("serving on", Duration::from_secs(10)).await?;
    let lattice_listen = format!("unix:{}", lattice_socket.display());
    let _bridge = lattice
        .start_provider_with(
            BRIDGE,
            "caller",
            &["--connect", &stub_listen, "--lattice-listen", &lattice_listen, "--config", "color=blue"],
        )
        .await?;
    lattice.start_component("http-echo", "web", &[]).await?;
    lattice.link(Link::new("caller", "web", "wasi", "http", vec!["incoming-handler".into()])).await?;
    let mut client = LatticeClient::new(unix_channel(lattice_socket).await?);

    let links = client.list_links(v1::ListLinksRequest {}).await?.into_inner().links;
    assert!(links.iter().any(|l| l.source_id == "caller" && l.target_id == "web"), "{links:?}");
    let config = client.get_config(v1::GetConfigRequest {}).await?.into_inner().config;
    assert_eq!(config.get("color").map(String::as_str), Some("blue"));

    // A 3 MiB upload in 64 KiB pieces: the component hashes what it reads.
    let body: Vec<u8> = (0..3 * MIB).map(|i| (i % 251) as u8).collect();
    let head = v1::HttpRequestHead {
        component_id: "web".into(),
        method: "POST".into(),
        path_with_query: "/upload".into(),
        ..Default::default()
    };
    let parts = [v1::HttpRequestPart { part: Some(v1::http_request_part::Part::Head(head)) }]
        .into_iter()
        .chain(
            body.chunks(64 << 10)
                .map(|c| v1::HttpRequestPart { part: Some(v1::http_request_part::Part::Body(c.to_vec())) }),
        )
        .collect::<Vec<_>>();
    let (status, answer) = http_call(&mut client, parts).await?;
    let sha: String = Sha256::digest(&body).iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!((status, String::from_utf8(answer)?), (200, format!("{sha} {}", body.len())));

    // A 5 MB download streams back.
    let head = v1::HttpRequestHead {
        component_id: "web".into(),
        method: "GET".into(),
        path_with_query: "/download?bytes=5000000".into(),
        ..Default::default()
    };
    let (status, answer) =
        http_call(&mut client, vec![v1::HttpRequestPart { part: Some(v1::http_request_part::Part::Head(head)) }])
            .await?;
    assert_eq!((status, answer.len()), (200, 5_000_000));

    // A component this provider has no link to: the host refuses, and the kind comes through.
    let head = v1::HttpRequestHead {
        component_id: "web".into(),
        link_name: "other".into(),
        method: "GET".into(),
        path_with_query: "/".into(),
        ..Default::default()
    };
    let err = http_call(&mut client, vec![v1::HttpRequestPart { part: Some(v1::http_request_part::Part::Head(head)) }])
        .await
        .expect_err("no link named other");
    let status = err.downcast::<tonic::Status>()?;
    assert_eq!(ferry_proto::grpc::from_status(&status).kind, ferry_proto::ErrorKind::NotLinked, "{status:?}");
    Ok(())
}

/// One `HandleHttp` call: the response's status and whole body.
async fn http_call(
    client: &mut ferry_proto::grpc::v1::lattice_client::LatticeClient<tonic::transport::Channel>,
    parts: Vec<ferry_proto::grpc::v1::HttpRequestPart>,
) -> anyhow::Result<(u32, Vec<u8>)> {
    use ferry_proto::grpc::v1::http_response_part::Part;
    use futures::StreamExt as _;

    let mut answer = client.handle_http(futures::stream::iter(parts)).await?.into_inner();
    let (mut status, mut body) = (0, Vec::new());
    while let Some(part) = answer.next().await {
        match part?.part {
            Some(Part::Head(head)) => status = head.status,
            Some(Part::Body(bytes)) => body.extend_from_slice(&bytes),
            None => {}
        }
    }
    Ok((status, body))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_traced_call_reaches_the_foreign_process_with_its_trace_under_the_bridge_s_span() -> anyhow::Result<()> {
    let lattice = Lattice::start().await?;
    let _bridge = stub_behind_bridge(&lattice, "kvstub", &[]).await?;
    lattice.start_component("kv-http", "kvc", &[]).await?;
    lattice.link(crate::keyvalue::kv_link("kvc", "kvstub", "default", &[])).await?;

    // The stub answers a get of `traceparent-seen` with the traceparent metadata it received.
    let get = json!({"op": "get", "bucket": "b", "key": "traceparent-seen"});
    let caller = ferry_proto::trace::TraceParent::root();
    let mut options = ferry_lattice::http::HttpCallOptions::new(Duration::from_secs(10));
    options.trace = Some(caller);
    let request = hyper::Request::post("http://localhost/")
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from(get.to_string())))?;
    let response = lattice.client.call_http("kvc", request, &options).await?;
    let body = response.into_body().collect_bytes().await?;
    let answer: serde_json::Value = serde_json::from_slice(&body)?;
    let seen = answer["ok"].as_str().and_then(ferry_proto::trace::TraceParent::parse);
    let seen = seen.unwrap_or_else(|| panic!("the foreign process got no traceparent: {answer}"));
    assert_eq!(seen.trace_id, caller.trace_id, "{answer}");
    assert_ne!(seen.span_id, caller.span_id, "the bridge forwards its own span, not its caller's: {answer}");

    // An untraced call forwards none.
    assert_eq!(lattice.ok("kvc", get).await?, json!(null));
    Ok(())
}
