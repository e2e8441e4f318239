//! HTTP end to end: a real HTTP client → the http-server provider process → NATS → the host →
//! a component, and back.

use std::{net::SocketAddr, time::Duration};

use bytes::Bytes;
use ferry_proto::link::Link;
use ferry_tests::{
    Lattice, Process, free_port,
    http::{chunked, empty, fetch, full, peak_rss, request, rss, send, wait_for_route},
};
use http_body_util::BodyExt as _;
use hyper::StatusCode;
use sha2::{Digest as _, Sha256};

const HTTP: &str = "ferry-provider-http-server";
const MIB: usize = 1 << 20;

/// A link from the http-server provider `provider` to `component`, named `name`, routed by the
/// named source configs.
fn http_link(provider: &str, component: &str, name: &str, source_config: &[&str]) -> Link {
    let mut link = Link::new(provider, component, "wasi", "http", vec!["incoming-handler".into()]);
    link.name = name.to_owned();
    link.source_config = source_config.iter().map(|c| (*c).to_owned()).collect();
    link
}

/// A lattice with the http-server provider (shared listener on a free port) and one http-echo
/// component linked to it at `/`.
async fn echo_lattice(route: &[(&str, &str)]) -> anyhow::Result<(Lattice, Process, SocketAddr)> {
    let lattice = Lattice::start().await?;
    let address: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
    let provider = lattice.start_provider_with(HTTP, "http", &["--config", &format!("address={address}")]).await?;
    lattice.start_component("http-echo", "echo", &[]).await?;
    lattice.config("echo-route", route).await?;
    lattice.link(http_link("http", "echo", "default", &["echo-route"])).await?;
    wait_for_route(address, "localhost", "/").await?;
    Ok((lattice, provider, address))
}

fn values<'a>(headers: &'a hyper::HeaderMap, name: &str) -> Vec<&'a [u8]> {
    headers.get_all(name).iter().map(hyper::header::HeaderValue::as_bytes).collect()
}

/// The download pattern of the http-echo component.
fn pattern(len: usize) -> Vec<u8> {
    (0..len as u64).map(|o| (o.wrapping_mul(31).wrapping_add(o >> 13) % 251) as u8).collect()
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_and_responses_pass_through_faithfully() -> anyhow::Result<()> {
    let (_lattice, _provider, addr) = echo_lattice(&[("path", "/")]).await?;

    // Query strings and repeated headers, in order.
    let mut req = request("GET", "localhost", "/echo?x=1&y=a%20b&x=2", empty())?;
    req.headers_mut().append("x-multi", "one".parse()?);
    req.headers_mut().append("x-multi", "two".parse()?);
    let (status, headers, body) = fetch(addr, req).await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(values(&headers, "x-method"), [b"GET"]);
    assert_eq!(values(&headers, "x-uri"), [b"/echo?x=1&y=a%20b&x=2"]);
    assert_eq!(values(&headers, "x-echo-x-multi"), [&b"one"[..], b"two"]);
    assert!(body.is_empty());

    // Every method with a binary body, echoed byte for byte.
    let binary: Bytes = (0..=255u8).cycle().take(70_000).collect::<Vec<_>>().into();
    for method in ["POST", "PUT", "DELETE", "PATCH"] {
        let mut req = request(method, "localhost", "/echo", full(binary.clone()))?;
        req.headers_mut().insert("content-type", "application/octet-stream".parse()?);
        let (status, headers, body) = fetch(addr, req).await?;
        assert_eq!(status, StatusCode::OK, "{method}");
        assert_eq!(values(&headers, "x-method"), [method.as_bytes()]);
        assert_eq!(values(&headers, "content-type"), [b"application/octet-stream"]);
        assert_eq!(body, binary, "{method} body must come back unchanged");
    }

    // A chunked upload (no content-length) larger than one chunk.
    let chunks: Vec<Bytes> = (0..40).map(|i| Bytes::from(vec![i as u8; 10_000])).collect();
    let expected: Vec<u8> = chunks.iter().flat_map(|c| c.iter().copied()).collect();
    let (status, _, body) = fetch(addr, request("POST", "localhost", "/echo", chunked(chunks))?).await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body.as_ref(), expected.as_slice());

    // HEAD has no body; 204 and 304 have none either.
    let (status, _, body) = fetch(addr, request("HEAD", "localhost", "/download?bytes=1000&length", empty())?).await?;
    assert_eq!(status, StatusCode::OK);
    assert!(body.is_empty(), "HEAD answered with a body");
    for code in [204u16, 304] {
        let (status, _, body) =
            fetch(addr, request("GET", "localhost", &format!("/status?code={code}"), empty())?).await?;
        assert_eq!(status.as_u16(), code);
        assert!(body.is_empty());
    }
    let (status, _, _) = fetch(addr, request("GET", "localhost", "/status?code=418", empty())?).await?;
    assert_eq!(status.as_u16(), 418);

    // Repeated response headers.
    let (_, headers, _) = fetch(addr, request("GET", "localhost", "/cookies", empty())?).await?;
    assert_eq!(values(&headers, "set-cookie"), [&b"a=1"[..], b"b=2"]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn bodies_of_32_mib_stream_both_ways_in_bounded_memory() -> anyhow::Result<()> {
    let (lattice, provider, addr) = echo_lattice(&[("path", "/")]).await?;
    let (host_pid, provider_pid) = (lattice.host.pid(), provider.pid());
    let (host_before, provider_before) = (rss(host_pid)?, rss(provider_pid)?);

    let upload: Bytes = pattern(32 * MIB).into();
    let (status, _, body) = fetch(addr, request("POST", "localhost", "/upload", full(upload.clone()))?).await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(String::from_utf8(body.to_vec())?, format!("{} {}", sha256_hex(&upload), 32 * MIB));

    for query in ["bytes=33554432", "bytes=33554432&length"] {
        let response = send(addr, request("GET", "localhost", &format!("/download?{query}"), empty())?).await?;
        assert_eq!(response.status(), StatusCode::OK);
        let body = response.into_body().collect().await?.to_bytes();
        assert_eq!(body.len(), 32 * MIB, "{query}");
        assert_eq!(sha256_hex(&body), sha256_hex(&upload), "{query}: download differs");
    }

    // Both ways at once: the component echoes while it reads.
    let (status, _, body) = fetch(addr, request("PUT", "localhost", "/echo", full(upload.clone()))?).await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(sha256_hex(&body), sha256_hex(&upload), "echo differs");

    let host_growth = peak_rss(host_pid)?.saturating_sub(host_before);
    let provider_growth = peak_rss(provider_pid)?.saturating_sub(provider_before);
    println!(
        "peak RSS growth over 32 MiB transfers: host {} KiB, provider {} KiB",
        host_growth / 1024,
        provider_growth / 1024
    );
    assert!(provider_growth < 16 * MIB as u64, "provider grew by {provider_growth} bytes for a 32 MiB body");
    assert!(host_growth < 16 * MIB as u64, "host grew by {host_growth} bytes for a 32 MiB body");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn routes_by_path_host_and_address_and_link_del_removes_them() -> anyhow::Result<()> {
    let lattice = Lattice::start().await?;
    let shared: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
    let own_a: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
    let own_b: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
    let _provider = lattice.start_provider_with(HTTP, "http", &["--config", &format!("address={shared}")]).await?;
    for id in ["a", "b"] {
        lattice.config(&format!("name-{id}"), &[("name", id)]).await?;
        lattice.start_component("http-echo", &format!("echo-{id}"), &[&format!("name-{id}")]).await?;
    }
    lattice.config("by-path", &[("path", "/a")]).await?;
    lattice.config("by-host", &[("host", "b.example")]).await?;
    lattice.config("own-a", &[("address", &own_a.to_string())]).await?;
    lattice.config("own-b", &[("address", &own_b.to_string())]).await?;
    lattice.link(http_link("http", "echo-a", "default", &["by-path"])).await?;
    lattice.link(http_link("http", "echo-b", "default", &["by-host"])).await?;
    lattice.link(http_link("http", "echo-a", "own", &["own-a"])).await?;
    lattice.link(http_link("http", "echo-b", "own", &["own-b"])).await?;

    let whoami = async |addr: SocketAddr, host: &str, path: &str| -> anyhow::Result<(StatusCode, String)> {
        let (status, _, body) = fetch(addr, request("GET", host, path, empty())?).await?;
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    };
    wait_for_route(shared, "localhost", "/a/whoami").await?;
    wait_for_route(shared, "b.example", "/whoami").await?;
    wait_for_route(own_a, "localhost", "/whoami").await?;
    wait_for_route(own_b, "localhost", "/whoami").await?;

    // One port, routed by path and by host.
    assert_eq!(whoami(shared, "localhost", "/a/whoami").await?, (StatusCode::OK, "a".into()));
    assert_eq!(whoami(shared, "b.example:8080", "/whoami").await?, (StatusCode::OK, "b".into()));
    assert_eq!(whoami(shared, "B.EXAMPLE", "/x/whoami").await?, (StatusCode::OK, "b".into()));
    assert_eq!(whoami(shared, "localhost", "/whoami").await?.0, StatusCode::NOT_FOUND);
    assert_eq!(whoami(shared, "localhost", "/ab").await?.0, StatusCode::NOT_FOUND);
    // An absolute-form request is routed by its own authority, the one the component sees,
    // not by a Host header that says otherwise.
    let mut raw = tokio::net::TcpStream::connect(shared).await?;
    let absolute = b"GET http://b.example/whoami HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n";
    tokio::io::AsyncWriteExt::write_all(&mut raw, absolute).await?;
    let mut answer = Vec::new();
    let _ =
        tokio::time::timeout(Duration::from_secs(5), tokio::io::AsyncReadExt::read_to_end(&mut raw, &mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200") && answer.ends_with("b"), "{answer:?}");
    // Two addresses, one component each.
    assert_eq!(whoami(own_a, "anything", "/whoami").await?, (StatusCode::OK, "a".into()));
    assert_eq!(whoami(own_b, "anything", "/whoami").await?, (StatusCode::OK, "b".into()));

    // Deleting a shared route gives 404 there; other routes keep working.
    lattice.unlink(http_link("http", "echo-a", "default", &[]).key()).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while whoami(shared, "localhost", "/a/whoami").await?.0 != StatusCode::NOT_FOUND {
        assert!(tokio::time::Instant::now() < deadline, "route /a still served after link del");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(whoami(shared, "b.example", "/whoami").await?, (StatusCode::OK, "b".into()));

    // Deleting the only route of an address closes it: connections are refused.
    lattice.unlink(http_link("http", "echo-a", "own", &[]).key()).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(own_a).await.is_ok() {
        assert!(tokio::time::Instant::now() < deadline, "{own_a} still accepts after its link was deleted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(whoami(own_b, "anything", "/whoami").await?, (StatusCode::OK, "b".into()));
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn traps_timeouts_and_oversized_bodies_get_their_status_and_serving_goes_on() -> anyhow::Result<()> {
    let (_lattice, mut provider, addr) =
        echo_lattice(&[("path", "/"), ("timeout_ms", "1500"), ("max_body_bytes", "100000")]).await?;

    let (status, _, body) = fetch(addr, request("GET", "localhost", "/trap", empty())?).await?;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(String::from_utf8_lossy(&body).contains("component-trap"), "reason missing: {body:?}");

    // A slow request times out with 504 while other requests are served meanwhile.
    let slow = tokio::spawn(fetch(addr, request("GET", "localhost", "/sleep?ms=5000", empty())?));
    for _ in 0..5 {
        let (status, _, body) = fetch(addr, request("GET", "localhost", "/hello", empty())?).await?;
        assert_eq!((status, body.as_ref()), (StatusCode::OK, &b"hello"[..]));
    }
    let started = tokio::time::Instant::now();
    let (status, _, _) = slow.await??;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    assert!(started.elapsed() < Duration::from_secs(3), "504 came late");

    // Over the body limit: declared, and discovered while streaming. The client keeps sending
    // after the early answer and must still read the 413, not a reset connection.
    let (status, headers, _) =
        fetch(addr, request("POST", "localhost", "/upload", full(vec![7u8; 4_000_000]))?).await?;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(headers.get("connection").map(|v| v.as_bytes()), Some(&b"close"[..]));
    let chunks = (0..80).map(|_| Bytes::from(vec![7u8; 50_000])).collect();
    let (status, _, _) = fetch(addr, request("POST", "localhost", "/upload", chunked(chunks))?).await?;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    let (status, _, body) = fetch(addr, request("POST", "localhost", "/upload", full(vec![7u8; 1000]))?).await?;
    assert_eq!(status, StatusCode::OK);
    assert!(String::from_utf8_lossy(&body).ends_with(" 1000"));

    // A malformed request gets 400 from hyper and the provider serves on.
    let mut raw = tokio::net::TcpStream::connect(addr).await?;
    tokio::io::AsyncWriteExt::write_all(&mut raw, b"NOT HTTP AT ALL\r\n\r\n").await?;
    let mut answer = Vec::new();
    let _ =
        tokio::time::timeout(Duration::from_secs(5), tokio::io::AsyncReadExt::read_to_end(&mut raw, &mut answer)).await;
    assert!(answer.starts_with(b"HTTP/1.1 400"), "{:?}", String::from_utf8_lossy(&answer));
    let (status, _, _) = fetch(addr, request("GET", "localhost", "/hello", empty())?).await?;
    assert_eq!(status, StatusCode::OK);

    // SIGTERM drains: a request in flight completes, then the provider exits.
    let in_flight = tokio::spawn(fetch(addr, request("GET", "localhost", "/sleep?ms=800", empty())?));
    tokio::time::sleep(Duration::from_millis(200)).await;
    provider.send_sigterm();
    let (status, _, body) = in_flight.await??;
    assert_eq!((status, body.as_ref()), (StatusCode::OK, &b"awake"[..]));
    let exit = provider.wait_exit(Duration::from_secs(10)).await;
    assert!(exit.is_some_and(|s| s.success()), "provider did not exit cleanly: {exit:?}\n{}", provider.logs());
    assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "listener still open after exit");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn headers_named_in_connection_are_not_forwarded() -> anyhow::Result<()> {
    let (_lattice, _provider, addr) = echo_lattice(&[("path", "/")]).await?;
    let mut req = request("GET", "localhost", "/echo", empty())?;
    req.headers_mut().insert("connection", "keep-alive, x-hop-secret".parse()?);
    req.headers_mut().insert("x-hop-secret", "for the next hop only".parse()?);
    req.headers_mut().insert("x-end-to-end", "passes".parse()?);
    let (status, headers, _) = fetch(addr, req).await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(values(&headers, "x-echo-x-end-to-end"), [b"passes"]);
    assert!(values(&headers, "x-echo-x-hop-secret").is_empty(), "a header named in Connection reached the component");
    Ok(())
}
