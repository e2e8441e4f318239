//! Work is bounded: a component's host admits only so many invocations (running plus queued);
//! the rest are refused at once with `overloaded`, not held for a minute each.

use std::time::{Duration, Instant};

use ferry_proto::{ErrorKind, ctl::ComponentStart, http::HttpRequest, link::Link};
use ferry_tests::{Lattice, TEST_CLIENT_ID};

fn sleep_request(ms: u64) -> HttpRequest {
    HttpRequest {
        method: "GET".into(),
        scheme: "http".into(),
        authority: "localhost".into(),
        path_with_query: format!("/sleep?ms={ms}"),
        headers: Vec::new(),
        body: Vec::new(),
        body_stream: None,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn invocations_beyond_the_queue_are_shed_at_once_with_overloaded() -> anyhow::Result<()> {
    let lattice = Lattice::start().await?;
    let (mut small_host, small_id) = lattice.start_host_with(&["--max-queued-invocations", "2"]).await?;
    let start = ComponentStart {
        request_id: "bounded".into(),
        component_id: "slow".into(),
        image: lattice.image("http-echo").await?,
        max_instances: Some(1),
        config: Vec::new(),
    };
    let resp = lattice.ctl.send(&start, Some(&small_id)).await?;
    anyhow::ensure!(resp.success, "{}", resp.message);
    lattice.link(Link::new(TEST_CLIENT_ID, "slow", "wasi", "http", vec!["incoming-handler".into()])).await?;

    // One instance, two places in the queue: of eight calls at once, three are served and the
    // others are refused straight away.
    let calls = (0..8).map(|_| {
        let client = lattice.client.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let result = client.handle_http("slow", &sleep_request(2_000)).await;
            (result, started.elapsed())
        })
    });
    let mut served = 0;
    let mut shed = 0;
    for call in calls.collect::<Vec<_>>() {
        let (result, took) = call.await?;
        match result {
            Ok(response) => {
                assert_eq!(response.status, 200);
                served += 1;
            }
            Err(err) => {
                assert_eq!(err.kind, ErrorKind::Overloaded, "{err}");
                assert!(took < Duration::from_millis(1500), "a shed call must fail at once, took {took:?}");
                shed += 1;
            }
        }
    }
    assert_eq!(served + shed, 8);
    assert!(served >= 3, "the running and queued calls are served ({served} were)");
    assert!(shed >= 4, "calls beyond the queue are shed ({shed} were)");
    small_host.wait_for_log("component overloaded", Duration::from_secs(5)).await?;

    // Once the queue drains the component serves again.
    let response = lattice.client.handle_http("slow", &sleep_request(0)).await?;
    assert_eq!(response.status, 200);
    Ok(())
}

/// The http-server provider with `settings`, and the http-echo component routed at `/`.
async fn http_lattice(settings: &[&str]) -> anyhow::Result<(Lattice, ferry_tests::Process, std::net::SocketAddr)> {
    let lattice = Lattice::start().await?;
    let address: std::net::SocketAddr = format!("127.0.0.1:{}", ferry_tests::free_port()?).parse()?;
    let mut args = vec!["--config".to_owned(), format!("address={address}")];
    for setting in settings {
        args.extend(["--config".to_owned(), (*setting).to_owned()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let provider = lattice.start_provider_with("ferry-provider-http-server", "http", &args).await?;
    lattice.start_component("http-echo", "echo", &[]).await?;
    lattice.config("route", &[("path", "/"), ("timeout_ms", "20000")]).await?;
    let mut link = Link::new("http", "echo", "wasi", "http", vec!["incoming-handler".into()]);
    link.source_config = vec!["route".into()];
    lattice.link(link).await?;
    ferry_tests::http::wait_for_route(address, "localhost", "/").await?;
    Ok((lattice, provider, address))
}

/// Everything the server sends on `stream` within `wait`.
async fn read_answer(stream: &mut tokio::net::TcpStream, wait: Duration) -> String {
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(wait, tokio::io::AsyncReadExt::read_to_end(stream, &mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_request_body_gets_408_instead_of_holding_the_request() -> anyhow::Result<()> {
    let (_lattice, _provider, address) = http_lattice(&["body_idle_timeout_ms=1000"]).await?;
    let mut raw = tokio::net::TcpStream::connect(address).await?;
    let head = "POST /upload HTTP/1.1\r\nhost: localhost\r\ncontent-length: 1000\r\n\r\n0123456789";
    tokio::io::AsyncWriteExt::write_all(&mut raw, head.as_bytes()).await?;
    let started = Instant::now();
    let answer = read_answer(&mut raw, Duration::from_secs(10)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?} after {:?}", started.elapsed());
    assert!(started.elapsed() < Duration::from_secs(4), "the 408 came after {:?}", started.elapsed());
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_beyond_the_cap_get_503_and_errors_hide_their_details() -> anyhow::Result<()> {
    let (_lattice, _provider, address) = http_lattice(&["max_connections=2"]).await?;
    // Idle connections take the two places (a probe connection from the set-up may still hold
    // one); every connection past the cap is answered 503 and closed at once.
    let mut streams = Vec::new();
    for _ in 0..3 {
        streams.push(tokio::net::TcpStream::connect(address).await?);
    }
    let mut refused = 0;
    for stream in &mut streams {
        let answer = read_answer(stream, Duration::from_millis(1500)).await;
        if answer.starts_with("HTTP/1.1 503") {
            refused += 1;
        } else {
            assert!(answer.is_empty(), "{answer:?}");
        }
    }
    assert!(refused >= 1, "three connections over a cap of two: none was refused");
    drop(streams);
    tokio::time::sleep(Duration::from_millis(300)).await;

    // A failure's details stay in the log: the client sees the kind and a request id.
    let (status, _, body) = ferry_tests::http::fetch(
        address,
        ferry_tests::http::request("GET", "localhost", "/trap", ferry_tests::http::empty())?,
    )
    .await?;
    let body = String::from_utf8_lossy(&body).into_owned();
    assert_eq!(status, hyper::StatusCode::INTERNAL_SERVER_ERROR);
    assert!(body.contains("component-trap") && body.contains("(request "), "{body}");
    assert!(!body.contains("wasm") && !body.contains("panicked"), "internal details reached the client: {body}");
    Ok(())
}
