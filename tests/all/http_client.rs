//! Outgoing HTTP end to end: a component's `wasi:http/outgoing-handler` request → the host →
//! NATS → the http-client provider process → a real HTTP server, and back, bodies streamed.

use std::time::Duration;

use ferry_proto::link::Link;
use ferry_tests::{
    Lattice, Process,
    http::rss,
    origin::{Origin, pattern_sha256},
};
use serde_json::{Value, json};

const HTTP_CLIENT: &str = "ferry-provider-http-client";
const MIB: u64 = 1 << 20;

/// The http-client provider, the http-fetch component `fetch`, and a link between them whose
/// target config is `config`.
async fn fetch_lattice(config: &[(&str, &str)]) -> anyhow::Result<(Lattice, Process)> {
    let lattice = Lattice::start().await?;
    let provider = lattice.start_provider(HTTP_CLIENT, "http-client").await?;
    lattice.start_component("http-fetch", "fetch", &[]).await?;
    lattice.config("fetch-link", config).await?;
    let mut link = Link::new("fetch", "http-client", "wasi", "http", vec!["outgoing-handler".into()]);
    link.target_config = vec!["fetch-link".into()];
    lattice.link(link).await?;
    Ok((lattice, provider))
}

fn header<'a>(answer: &'a Value, name: &str) -> Option<&'a str> {
    answer["headers"].as_array()?.iter().find(|h| h[0] == name).and_then(|h| h[1].as_str())
}

/// A command that must fail in the component; returns the error code it saw.
async fn fails(lattice: &Lattice, command: Value) -> anyhow::Result<String> {
    let (status, answer) = lattice.call("fetch", command.clone()).await?;
    anyhow::ensure!(status == 502, "{command} did not fail: {status} {answer}");
    Ok(answer["error"].as_str().unwrap_or_default().to_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn methods_headers_and_32_mib_each_way_reach_the_server_and_come_back() -> anyhow::Result<()> {
    let origin = Origin::start().await?;
    let allowed = format!("127.0.0.1:{}", origin.address.port());
    let (lattice, provider) = fetch_lattice(&[("allowed_hosts", &allowed)]).await?;
    let base = format!("http://{}", origin.address);

    // Methods, the path and query, headers both ways, a status that is not 200.
    for method in ["GET", "POST", "PUT", "DELETE", "PATCH"] {
        let answer = lattice
            .ok(
                "fetch",
                json!({"method": method, "url": format!("{base}/things/7?q=a%20b"), "headers": [["x-trace", "abc"], ["x-multi", "1"]]}),
            )
            .await?;
        assert_eq!(answer["status"], 200, "{method}: {answer}");
        assert_eq!(header(&answer, "x-method"), Some(method));
        assert_eq!(header(&answer, "x-path"), Some("/things/7?q=a%20b"));
        assert_eq!(header(&answer, "x-echo-x-trace"), Some("abc"));
    }
    let teapot = lattice.ok("fetch", json!({"url": format!("{base}/teapot")})).await?;
    assert_eq!(teapot["status"], 418);
    assert_eq!(teapot["len"], 2);

    // 32 MiB up, hashed by the server as it arrives; 32 MiB down, hashed by the component.
    let before = rss(provider.pid())?;
    let up =
        lattice.ok("fetch", json!({"method": "POST", "url": format!("{base}/upload"), "send_len": 32 * MIB})).await?;
    assert_eq!(header(&up, "x-received-len"), Some((32 * MIB).to_string().as_str()));
    assert_eq!(header(&up, "x-received-sha256"), Some(pattern_sha256(32 * MIB).as_str()));
    let down = lattice.ok("fetch", json!({"url": format!("{base}/download?len={}", 32 * MIB)})).await?;
    assert_eq!(down["len"], 32 * MIB);
    assert_eq!(down["sha256"], pattern_sha256(32 * MIB));
    let grown = rss(provider.pid())?.saturating_sub(before);
    println!("http-client RSS grew {} KiB over 64 MiB of bodies", grown / 1024);
    assert!(grown < 24 * MIB, "the provider held bodies whole: RSS grew {grown} bytes");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_host_outside_the_allow_list_or_no_link_is_refused_with_a_typed_error() -> anyhow::Result<()> {
    let origin = Origin::start().await?;
    let (lattice, provider) = fetch_lattice(&[("allowed_hosts", "api.example.com,127.0.0.1:1")]).await?;
    let code = fails(&lattice, json!({"url": format!("http://{}/", origin.address)})).await?;
    assert_eq!(code, "ErrorCode::HttpRequestDenied");
    assert!(provider.logs().contains("not in the link's allowed_hosts"), "the refusal is logged:\n{}", provider.logs());
    // Nothing listens on port 1, which is allowed: refused by the server's machine, not the link.
    let code = fails(&lattice, json!({"url": "http://127.0.0.1:1/"})).await?;
    assert_eq!(code, "ErrorCode::ConnectionRefused");

    // With no link, the request is denied by the host, as before there was a provider.
    let bare = Lattice::start().await?;
    bare.start_component("http-fetch", "fetch", &[]).await?;
    let code = fails(&bare, json!({"url": format!("http://{}/", origin.address)})).await?;
    assert_eq!(code, "ErrorCode::HttpRequestDenied");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn timeouts_come_from_the_link_or_the_component() -> anyhow::Result<()> {
    let origin = Origin::start().await?;
    let (lattice, _provider) = fetch_lattice(&[("first_byte_timeout_ms", "500")]).await?;
    let started = std::time::Instant::now();
    let code = fails(&lattice, json!({"url": format!("http://{}/slow", origin.address)})).await?;
    assert_eq!(code, "ErrorCode::ConnectionReadTimeout");
    assert!(started.elapsed() < Duration::from_secs(4), "the link's timeout did not hold: {:?}", started.elapsed());
    // A component's own, shorter timeout wins over a link that allows more.
    let (patient, _provider) = fetch_lattice(&[]).await?;
    let code = fails(&patient, json!({"url": format!("http://{}/slow", origin.address), "first_byte_timeout_ms": 300}))
        .await?;
    assert_eq!(code, "ErrorCode::ConnectionReadTimeout");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_traced_call_s_outgoing_request_carries_the_trace_under_the_provider_s_span() -> anyhow::Result<()> {
    let origin = Origin::start().await?;
    let allowed = format!("127.0.0.1:{}", origin.address.port());
    let (lattice, _provider) = fetch_lattice(&[("allowed_hosts", &allowed)]).await?;
    let url = format!("http://{}/traced", origin.address);
    let command =
        json!({"url": url, "headers": [["traceparent", "00-11111111111111111111111111111111-2222222222222222-01"]]});
    let caller = ferry_proto::trace::TraceParent::root();
    let mut options = ferry_lattice::http::HttpCallOptions::new(Duration::from_secs(10));
    options.trace = Some(caller);
    let request = hyper::Request::post("http://localhost/")
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from(command.to_string())))?;
    let response = lattice.client.call_http("fetch", request, &options).await?;
    let (parts, body) = response.into_parts();
    let body = body.collect_bytes().await?;
    assert_eq!(parts.status, 200, "{}", String::from_utf8_lossy(&body));
    let answer: Value = serde_json::from_slice(&body)?;
    let sent = header(&answer["ok"], "x-echo-traceparent").unwrap_or_default();
    let sent = ferry_proto::trace::TraceParent::parse(sent)
        .unwrap_or_else(|| panic!("the origin got no valid traceparent: {answer}"));
    // The component's own header (a stale trace it forwarded) is replaced by the call's trace,
    // under a span of the chain's own, not the caller's.
    assert_eq!(sent.trace_id, caller.trace_id, "{answer}");
    assert_ne!(sent.span_id, caller.span_id, "{answer}");

    // An untraced call's request goes out as the component built it.
    let plain = lattice.ok("fetch", json!({"url": url, "headers": [["traceparent", "00-11111111111111111111111111111111-2222222222222222-01"]]})).await?;
    assert_eq!(
        header(&plain, "x-echo-traceparent"),
        Some("00-11111111111111111111111111111111-2222222222222222-01"),
        "{plain}"
    );
    Ok(())
}
