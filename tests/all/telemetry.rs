//! JSON logs: a host started with `--log-format json`, the provider it supervises (handed the
//! format in its start-up data) and a sidecar provider with `FERRY_LOG_FORMAT=json` write JSON
//! objects only, one per line, each with its level, target and message, while they serve calls.
//! Hosts and providers count the invocations they serve on a Prometheus scrape endpoint, and a
//! call that carries a W3C `traceparent` is followed, in every process's log, under its trace,
//! and exported over OTLP to a receiver in the test with each span's parent, metrics alike.

use std::net::SocketAddr;

use ferry_proto::link::Link;
use ferry_tests::{
    Lattice, bin_dir, free_port,
    http::{fetch, full, request, wait_for_route},
};

use crate::keyvalue::kv_link;

/// Every line of `logs` is a JSON object with string `level`, `target` and `message`; the
/// messages, in order.
fn json_lines(who: &str, logs: &str) -> Vec<String> {
    logs.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let value: serde_json::Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("{who}: not a JSON line ({e}): {line}"));
            for field in ["level", "target", "message", "timestamp"] {
                assert!(value[field].is_string(), "{who}: no {field} in {line}");
            }
            value["message"].as_str().unwrap_or_default().to_owned()
        })
        .collect()
}

/// A sidecar http-server provider `web` (with `web_env`) serving the `kv-http` component `kvc`
/// on host `host_id` at `/`, the component linked to key-value provider `kv`; the provider and
/// its address, once the route answers.
async fn web_to_kvc(
    lattice: &Lattice,
    host_id: &str,
    web_env: &[(&str, &str)],
) -> anyhow::Result<(ferry_tests::Process, SocketAddr)> {
    let address: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
    let web = lattice
        .start_provider_env("ferry-provider-http-server", "web", &["--config", &format!("address={address}")], web_env)
        .await?;
    lattice.start_component_on("kv-http", "kvc", &[], Some(host_id)).await?;
    lattice.config("route", &[("path", "/")]).await?;
    let mut route = Link::new("web", "kvc", "wasi", "http", vec!["incoming-handler".into()]);
    route.source_config = vec!["route".into()];
    lattice.link(route).await?;
    lattice.link(kv_link("kvc", "kv", "default", &[])).await?;
    wait_for_route(address, "localhost", "/").await?;
    Ok((web, address))
}

#[tokio::test(flavor = "multi_thread")]
async fn hosts_and_providers_write_json_lines_with_level_target_and_message() -> anyhow::Result<()> {
    let lattice = Lattice::start().await?;
    let (host, host_id) = lattice.start_host_with(&["--log-format", "json", "--allow-file-dir", &bin_dir()?]).await?;
    lattice.supervise(&host_id, "kv", "ferry-provider-keyvalue", "kv", &[]).await?;
    let (web, address) = web_to_kvc(&lattice, &host_id, &[("FERRY_LOG_FORMAT", "json")]).await?;
    for body in [r#"{"op":"set","bucket":"b","key":"k","value":"json"}"#, r#"{"op":"get","bucket":"b","key":"k"}"#] {
        let (status, _, answer) = fetch(address, request("POST", "localhost", "/", full(body.to_owned()))?).await?;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
    }

    let host_messages = json_lines("host", &host.logs());
    assert!(host_messages.iter().any(|m| m == "host ready"), "{host_messages:?}");
    // The supervised provider writes to its host's stderr, in the host's format.
    assert!(host_messages.iter().any(|m| m == "provider ready"), "{host_messages:?}");
    let web_messages = json_lines("web", &web.logs());
    assert!(web_messages.iter().any(|m| m == "provider ready"), "{web_messages:?}");
    Ok(())
}

/// `GET /metrics` on `address`: the body.
async fn scrape(address: SocketAddr) -> anyhow::Result<String> {
    let (status, _, body) =
        fetch(address, request("GET", "localhost", "/metrics", ferry_tests::http::empty())?).await?;
    assert_eq!(status, 200);
    Ok(String::from_utf8(body.to_vec())?)
}

/// The value of the series whose line starts with `series` (name and labels), 0 when absent.
fn value(text: &str, series: &str) -> f64 {
    text.lines().find_map(|line| line.strip_prefix(series).and_then(|rest| rest.trim().parse().ok())).unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread")]
async fn host_and_provider_metrics_count_invocations_on_their_scrape_endpoints() -> anyhow::Result<()> {
    let lattice = Lattice::start().await?;
    let host_metrics: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
    let kv_metrics: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
    let (_host, host_id) = lattice.start_host_with(&["--metrics-listen", &host_metrics.to_string()]).await?;
    let _kv = lattice
        .start_provider_with("ferry-provider-keyvalue", "kv", &["--metrics-listen", &kv_metrics.to_string()])
        .await?;
    lattice.start_component_on("kv-http", "kvc", &[], Some(&host_id)).await?;
    lattice
        .link(Link::new(ferry_tests::TEST_CLIENT_ID, "kvc", "wasi", "http", vec!["incoming-handler".into()]))
        .await?;
    lattice.link(kv_link("kvc", "kv", "default", &[])).await?;

    let handled =
        r#"ferry_invocations_total{component="kvc",operation="wasi:http/incoming-handler.handle",outcome="ok"}"#;
    let stored = r#"ferry_provider_invocations_total{provider="kv",operation="wasi:keyvalue/store.set",outcome="ok"}"#;
    let (host_before, kv_before) = (scrape(host_metrics).await?, scrape(kv_metrics).await?);
    for n in 0..3 {
        lattice
            .ok("kvc", serde_json::json!({"op": "set", "bucket": "b", "key": format!("k{n}"), "value": "v"}))
            .await?;
    }
    let (host_after, kv_after) = (scrape(host_metrics).await?, scrape(kv_metrics).await?);
    assert_eq!(value(&host_after, handled) - value(&host_before, handled), 3.0, "{host_after}");
    assert_eq!(value(&kv_after, stored) - value(&kv_before, stored), 3.0, "{kv_after}");
    let latency =
        r#"ferry_invocation_duration_seconds_count{component="kvc",operation="wasi:http/incoming-handler.handle"}"#;
    assert!(value(&host_after, latency) >= 3.0, "{host_after}");
    assert!(host_after.contains("# TYPE ferry_invocation_duration_seconds histogram"), "{host_after}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn gauges_show_instances_in_use_waiting_invocations_provider_health_and_bytes_streamed() -> anyhow::Result<()> {
    let lattice = Lattice::start().await?;
    let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
    let (_host, host_id) =
        lattice.start_host_with(&["--metrics-listen", &metrics.to_string(), "--health-interval-ms", "300"]).await?;
    let _kv = lattice.start_provider("ferry-provider-keyvalue", "kv").await?;
    lattice.start_component_on("kv-http", "kvc", &[], Some(&host_id)).await?;
    lattice.link(kv_link("kvc", "kv", "default", &[])).await?;
    let start = ferry_proto::ctl::ComponentStart {
        request_id: "echo".into(),
        component_id: "echo".into(),
        image: lattice.image("http-echo").await?,
        max_instances: Some(1),
        config: Vec::new(),
    };
    let resp = lattice.ctl.send(&start, Some(&host_id)).await?;
    anyhow::ensure!(resp.success, "{}", resp.message);
    lattice
        .link(Link::new(ferry_tests::TEST_CLIENT_ID, "echo", "wasi", "http", vec!["incoming-handler".into()]))
        .await?;

    // One instance: of two slow calls at once, one runs and one waits.
    let slow = |client: ferry_lattice::LatticeClient| async move {
        let mut request = ferry_tests::json_post(&serde_json::json!({}));
        request.path_with_query = "/sleep?ms=1500".into();
        client.handle_http("echo", &request).await
    };
    let calls = [tokio::spawn(slow(lattice.client.clone())), tokio::spawn(slow(lattice.client.clone()))];
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    let busy = scrape(metrics).await?;
    assert_eq!(value(&busy, r#"ferry_component_instances_in_use{component="echo"}"#), 1.0, "{busy}");
    assert_eq!(value(&busy, r#"ferry_component_queued_invocations{component="echo"}"#), 1.0, "{busy}");
    assert!(busy.contains("# TYPE ferry_component_instances_in_use gauge"), "{busy}");
    for call in calls {
        assert_eq!(call.await??.status, 200);
    }
    let idle = scrape(metrics).await?;
    assert!(idle.contains(r#"ferry_component_instances_in_use{component="echo"} 0"#), "{idle}");
    assert!(idle.contains(r#"ferry_component_queued_invocations{component="echo"} 0"#), "{idle}");

    // The key-value provider kvc links to is checked, and healthy.
    let healthy = r#"ferry_provider_healthy{provider="kv"}"#;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while value(&scrape(metrics).await?, healthy) != 1.0 {
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "no healthy reading: {}", scrape(metrics).await?);
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }

    // A body too large to travel inline is streamed to the host and back (all but the head
    // that travels inline with the invocation).
    let before = scrape(metrics).await?;
    let mut echo = ferry_tests::json_post(&serde_json::json!({}));
    echo.path_with_query = "/echo".into();
    echo.body = vec![b'x'; 3 << 20];
    let answer = lattice.client.handle_http("echo", &echo).await?;
    assert_eq!(answer.body.len(), 3 << 20);
    let after = scrape(metrics).await?;
    for direction in ["received", "sent"] {
        let series = format!("ferry_streamed_bytes_total{{direction=\"{direction}\"}}");
        let grew = value(&after, &series) - value(&before, &series);
        assert!((f64::from(2u32 << 20)..=f64::from(3u32 << 20)).contains(&grew), "{direction} grew by {grew}: {after}");
    }
    Ok(())
}

/// The JSON log lines of `logs` that belong to trace `trace_id`.
fn lines_of_trace<'a>(logs: &'a str, trace_id: &str) -> Vec<&'a str> {
    logs.lines()
        .filter(|line| {
            serde_json::from_str::<serde_json::Value>(line)
                .is_ok_and(|v| v["span"]["trace_id"].as_str() == Some(trace_id))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_traceparent_is_followed_through_the_provider_the_host_and_the_next_provider() -> anyhow::Result<()> {
    let lattice = Lattice::start().await?;
    let (host, host_id) = lattice.start_host_with(&["--log-format", "json"]).await?;
    let json = ("FERRY_LOG_FORMAT", "json");
    let kv = lattice.start_provider_env("ferry-provider-keyvalue", "kv", &[], &[json]).await?;
    let (web, address) =
        web_to_kvc(&lattice, &host_id, &[json, ("FERRY_LOG", "info,ferry_provider_http_server=debug")]).await?;

    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller = format!("00-{trace_id}-00f067aa0ba902b7-01");
    let mut traced =
        request("POST", "localhost", "/", full(r#"{"op":"set","bucket":"b","key":"t","value":"x"}"#.to_owned()))?;
    traced.headers_mut().insert("traceparent", caller.parse()?);
    let (status, headers, body) = fetch(address, traced).await?;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    // The response names the provider's span: the same trace, a span of its own.
    let answered = headers.get("traceparent").and_then(|v| v.to_str().ok()).unwrap_or_default();
    let answered = ferry_proto::trace::TraceParent::parse(answered).expect("a valid traceparent in the response");
    assert_eq!(answered.trace_id_hex(), trace_id);
    assert_ne!(answered.span_id_hex(), "00f067aa0ba902b7");

    // Each process logged its part of the call under the trace.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    for (who, logs) in [("http-server", web.logs()), ("host", host.logs()), ("key-value", kv.logs())] {
        assert!(!lines_of_trace(&logs, trace_id).is_empty(), "{who} logged nothing under trace {trace_id}:\n{logs}");
    }
    // A request without a traceparent starts none and is answered without one.
    let (status, headers, _) =
        fetch(address, request("POST", "localhost", "/", full(r#"{"op":"get","bucket":"b","key":"t"}"#.to_owned()))?)
            .await?;
    assert_eq!(status, 200);
    assert!(headers.get("traceparent").is_none());
    Ok(())
}

/// Poll `check` every 100 ms for up to `within`; its last answer.
async fn eventually<T>(within: std::time::Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(found) = check() {
            return Some(found);
        }
        if tokio::time::Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn spans_of_one_call_reach_an_otlp_receiver_from_three_processes_with_their_parents_and_metrics_follow()
-> anyhow::Result<()> {
    use ferry_tests::otlp::{OtlpReceiver, ReceivedPoint, ReceivedSpan};

    let receiver = OtlpReceiver::start().await?;
    let endpoint = receiver.endpoint();
    let lattice = Lattice::start().await?;
    let export = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "200"),
        ("OTEL_METRIC_EXPORT_INTERVAL", "500"),
    ];
    // The host takes the endpoint as a flag; how often it exports, from the environment: its
    // spans every 3 s, so that only its final export can carry a call made just before it stops.
    let (mut host, host_id) = lattice
        .start_host_env(
            &["--log-format", "json", "--otlp-endpoint", &endpoint],
            &[("OTEL_BSP_SCHEDULE_DELAY", "3000"), ("OTEL_METRIC_EXPORT_INTERVAL", "500")],
        )
        .await?;
    let _kv = lattice.start_provider_env("ferry-provider-keyvalue", "kv", &[], &export).await?;
    let (_web, address) = web_to_kvc(&lattice, &host_id, &export).await?;

    let (trace_id, caller_span) = ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331");
    let mut traced =
        request("POST", "localhost", "/", full(r#"{"op":"set","bucket":"b","key":"o","value":"x"}"#.to_owned()))?;
    traced.headers_mut().insert("traceparent", format!("00-{trace_id}-{caller_span}-01").parse()?);
    let (status, headers, body) = fetch(address, traced).await?;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let answered = headers.get("traceparent").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();

    // One span each from the http-server, the host and the key-value provider (this waits for
    // the host's first batch).
    let of = |spans: &[ReceivedSpan], service: &str| -> Option<ReceivedSpan> {
        spans.iter().find(|s| s.trace_id == trace_id && s.service == service).cloned()
    };
    let found = eventually(std::time::Duration::from_secs(20), || {
        let spans = receiver.spans();
        Some((of(&spans, "web")?, of(&spans, "ferry-host")?, of(&spans, "kv")?))
    })
    .await;
    let Some((web, host_span, kv)) = found else {
        panic!("spans of trace {trace_id} did not arrive from all three processes: {:#?}", receiver.spans());
    };
    assert_eq!(web.parent_span_id, caller_span, "the http-server's span is the caller's child: {web:?}");
    assert_eq!(host_span.parent_span_id, web.span_id, "the host's span is the http-server's child: {host_span:?}");
    assert_eq!(kv.parent_span_id, host_span.span_id, "the provider's span is the host's child: {kv:?}");
    assert_eq!(host_span.name, "wasi:http/incoming-handler.handle");
    assert_eq!(kv.name, "wasi:keyvalue/store.set");
    assert!(host_span.attributes.contains(&("component".to_owned(), "kvc".to_owned())), "{host_span:?}");
    assert_eq!(answered, format!("00-{trace_id}-{}-01", web.span_id), "the response names the http-server's span");
    // The host's JSON log lines within the call carry the exported ids.
    assert!(
        lines_of_trace(&host.logs(), trace_id).iter().any(|line| line.contains(&host_span.span_id)),
        "{}",
        host.logs()
    );

    // Metrics of the same calls, every 500 ms: the counters, the latency histogram and the
    // component's instances gauge.
    let counted = |points: &[ReceivedPoint], service: &str, metric: &str, who: (&str, &str)| {
        points.iter().any(|p| {
            p.service == service
                && p.metric == metric
                && p.value >= 1.0
                && p.attributes.contains(&(who.0.to_owned(), who.1.to_owned()))
        })
    };
    let kv_counted = eventually(std::time::Duration::from_secs(10), || {
        counted(&receiver.points(), "kv", "ferry_provider_invocations_total", ("provider", "kv")).then_some(())
    })
    .await;
    assert!(kv_counted.is_some(), "no provider invocation count arrived: {:#?}", receiver.points());
    let host_counted = eventually(std::time::Duration::from_secs(10), || {
        let points = receiver.points();
        let instances = points.iter().any(|p| {
            p.service == "ferry-host"
                && p.metric == "ferry_component_instances_in_use"
                && p.attributes.contains(&("component".to_owned(), "kvc".to_owned()))
        });
        (counted(&points, "ferry-host", "ferry_invocations_total", ("component", "kvc"))
            && counted(&points, "ferry-host", "ferry_invocation_duration_seconds", ("component", "kvc"))
            && instances)
            .then_some(())
    })
    .await;
    assert!(host_counted.is_some(), "the host's metrics did not arrive: {:#?}", receiver.points());

    // A call made just before the host stops is still exported: the last batch goes out on
    // SIGTERM, before the next scheduled one.
    let last_trace = "5c4b3a29181706f5e4d3c2b1a0918273";
    let mut traced = request("POST", "localhost", "/", full(r#"{"op":"get","bucket":"b","key":"o"}"#.to_owned()))?;
    traced.headers_mut().insert("traceparent", format!("00-{last_trace}-{caller_span}-01").parse()?);
    let (status, _, _) = fetch(address, traced).await?;
    assert_eq!(status, 200);
    assert!(host.terminate(std::time::Duration::from_secs(10)), "the host did not stop on SIGTERM");
    let flushed = receiver.spans().iter().any(|s| s.trace_id == last_trace && s.service == "ferry-host");
    assert!(flushed, "the host's last span was not exported before it exited");
    Ok(())
}
