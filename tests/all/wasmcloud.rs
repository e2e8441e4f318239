//! Compatibility with wasmCloud: components written the way wasmCloud's documentation shows
//! (the `wasmcloud-component` crate, `tests/components/wasmcloud-compat`, and plain wit-bindgen
//! ones), deployed from wadm manifests written as wasmCloud's documentation writes them —
//! wasmCloud's provider images, link config keys and config — with `ferry app deploy`.

use std::{net::SocketAddr, time::Duration};

use async_nats::jetstream;
use bytes::Bytes;
use ferry_proto::link::Link;
use ferry_tests::{
    Lattice, RedisServer, TEST_CLIENT_ID, build_component, free_port,
    http::{empty, fetch, full, request, wait_for_route},
    origin::Origin,
};
use futures::StreamExt as _;
use hyper::StatusCode;
use serde_json::json;

/// A link from `source` to `target` over `namespace:package/{interfaces}`, with named configs.
fn link(
    source: &str,
    target: &str,
    package: (&str, &str),
    interfaces: &[&str],
    source_config: &[&str],
    target_config: &[&str],
) -> Link {
    let mut link =
        Link::new(source, target, package.0, package.1, interfaces.iter().map(|i| (*i).to_owned()).collect());
    link.source_config = source_config.iter().map(|c| (*c).to_owned()).collect();
    link.target_config = target_config.iter().map(|c| (*c).to_owned()).collect();
    link
}

/// Ids the compat manifest's parts run under (wadm's `{application}-{name}`).
const COMPAT: &str = "compat-compat";
const HTTP_ID: &str = "compat-http";
const KV_ID: &str = "compat-kv";
const BLOB_ID: &str = "compat-blob";
const MSG_ID: &str = "compat-msg";

/// The compat component and the four providers it uses, written as wasmCloud's documentation
/// writes a manifest (its examples' provider images and link config keys); only the component's
/// path, the listen address and the blob root are the test's.
fn compat_manifest(wasm: &str, address: SocketAddr, blob_root: &str) -> String {
    format!(
        r#"apiVersion: core.oam.dev/v1beta1
kind: Application
metadata:
  name: compat
  annotations:
    version: v0.0.1
    description: 'A component built with wasmcloud-component, with every capability it uses'
spec:
  components:
    - name: compat
      type: component
      properties:
        image: file://{wasm}
        config:
          - name: compat-config
            properties:
              greeting: hello
      traits:
        - type: spreadscaler
          properties:
            instances: 1
        # wasmCloud's NATS key-value link: one bucket, named, created on demand.
        - type: link
          properties:
            target:
              name: kv
              config:
                - name: kv-bucket
                  properties:
                    bucket: compat_counts
                    enable_bucket_auto_create: 'true'
            namespace: wasi
            package: keyvalue
            interfaces: [store, atomics]
        # A second key-value link, named: the component picks it with wasmcloud:bus/lattice.
        - type: link
          properties:
            target:
              name: kv
              config:
                - name: kv-other
                  properties:
                    bucket: compat_other
                    enable_bucket_auto_create: 'true'
            namespace: wasi
            package: keyvalue
            interfaces: [store]
            name: other
        # `blobstore` alone serves the container methods too; the filesystem provider's ROOT.
        - type: link
          properties:
            target:
              name: blob
              config:
                - name: blob-root
                  properties:
                    ROOT: {blob_root}
            namespace: wasi
            package: blobstore
            interfaces: [blobstore]
        # The consumer side of a messaging link often carries `subscriptions` it does not use.
        - type: link
          properties:
            target:
              name: msg
              config:
                - name: msg-subs
                  properties:
                    subscriptions: compat.in
            namespace: wasmcloud
            package: messaging
            interfaces: [consumer]
    - name: http
      type: capability
      properties:
        image: ghcr.io/wasmcloud/http-server:0.23.2
      traits:
        - type: link
          properties:
            target:
              name: compat
            namespace: wasi
            package: http
            interfaces: [incoming-handler]
            source:
              config:
                - name: default-http
                  properties:
                    address: {address}
    - name: kv
      type: capability
      properties:
        image: ghcr.io/wasmcloud/keyvalue-nats:0.3.1
    - name: blob
      type: capability
      properties:
        image: ghcr.io/wasmcloud/blobstore-fs:0.10.2
    - name: msg
      type: capability
      properties:
        image: ghcr.io/wasmcloud/messaging-nats:0.27.0
"#
    )
}

/// The compat application, deployed from [`compat_manifest`] with `ferry app deploy`.
struct Compat {
    lattice: Lattice,
    address: SocketAddr,
    blob_root: std::path::PathBuf,
}

impl Compat {
    async fn start() -> anyhow::Result<Self> {
        let lattice = Lattice::start_for_apps().await?;
        let address: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
        let blob_root = std::env::temp_dir().join(format!("ferry-compat-{}-{}", std::process::id(), free_port()?));
        std::fs::create_dir_all(&blob_root)?;
        let wasm = build_component("wasmcloud-compat")?;
        lattice.deploy(&compat_manifest(&wasm.display().to_string(), address, &blob_root.to_string_lossy())).await?;
        wait_for_route(address, "localhost", "/config/greeting").await?;
        Ok(Self { lattice, address, blob_root })
    }

    async fn send(&self, method: &str, path: &str, body: &str) -> anyhow::Result<(StatusCode, String)> {
        let body = if body.is_empty() { empty() } else { full(Bytes::from(body.to_owned())) };
        let (status, _, body) = fetch(self.address, request(method, "localhost", path, body)?).await?;
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }

    async fn ok(&self, method: &str, path: &str, body: &str) -> anyhow::Result<String> {
        let (status, text) = self.send(method, path, body).await?;
        anyhow::ensure!(status == StatusCode::OK, "{method} {path}: {status} {text}");
        Ok(text)
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_component_built_with_wasmcloud_component_runs_with_wasmcloud_link_config() -> anyhow::Result<()> {
    let compat = Compat::start().await?;

    // Config and the keyvalue-counter example's calls.
    assert_eq!(compat.ok("GET", "/config/greeting", "").await?, "hello");
    assert_eq!(compat.ok("GET", "/counter/visits", "").await?, "1");
    assert_eq!(compat.ok("GET", "/counter/visits", "").await?, "2");
    compat.ok("PUT", "/kv/colour", "teal").await?;
    assert_eq!(compat.ok("GET", "/kv/colour", "").await?, "teal");
    assert_eq!(compat.ok("GET", "/kv", "").await?, "colour\nvisits");
    // The link's `bucket` is the JetStream bucket, verbatim, as in wasmCloud.
    let js = jetstream::new(compat.lattice.raw.clone());
    let store = js.get_key_value("compat_counts").await?;
    assert_eq!(store.get("colour").await?.as_deref(), Some(&b"teal"[..]));
    compat.ok("DELETE", "/kv/colour", "").await?;
    assert_eq!(compat.send("GET", "/kv/colour", "").await?.0, StatusCode::NOT_FOUND);

    // The blobby example's calls, over a link that lists only `blobstore`.
    assert_eq!(compat.ok("PUT", "/blob/photos/cat.txt", "meow").await?, "4 bytes");
    assert_eq!(compat.ok("PUT", "/blob/photos/dog.txt", "woof").await?, "4 bytes");
    assert_eq!(std::fs::read_to_string(compat.blob_root.join("photos/cat.txt"))?, "meow");
    assert_eq!(compat.ok("GET", "/blob/photos", "").await?, "cat.txt\ndog.txt");
    assert_eq!(compat.ok("GET", "/blob/photos/cat.txt", "").await?, "meow");
    compat.ok("DELETE", "/blob/photos/cat.txt", "").await?;
    assert_eq!(compat.ok("GET", "/blob/photos", "").await?, "dog.txt");

    // Messaging: a publish reaches a subscriber on the lattice's NATS.
    let mut sub = compat.lattice.raw.subscribe("compat.out").await?;
    compat.lattice.raw.flush().await?;
    compat.ok("POST", "/publish/compat.out", "ping").await?;
    let message = tokio::time::timeout(Duration::from_secs(5), sub.next()).await?.expect("subscription ended");
    assert_eq!(message.payload.as_ref(), b"ping");
    let _ = std::fs::remove_dir_all(&compat.blob_root);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bucket_opened_before_the_link_is_picked_goes_where_the_link_in_force_says() -> anyhow::Result<()> {
    let compat = Compat::start().await?;
    // The manifest's second key-value link, named `other`, over a bucket that holds the key.
    let js = jetstream::new(compat.lattice.raw.clone());
    let other = match js.get_key_value("compat_other").await {
        Ok(store) => store,
        Err(_) => {
            js.create_key_value(jetstream::kv::Config { bucket: "compat_other".into(), ..Default::default() }).await?
        }
    };
    other.put("colour", Bytes::from_static(b"from-other")).await?;
    compat.ok("PUT", "/kv/colour", "from-default").await?;

    // The component opens `default`, then picks `other`, then reads: the read goes to `other`.
    assert_eq!(compat.ok("GET", "/kv-link/other/colour", "").await?, "from-other");
    assert_eq!(compat.ok("GET", "/kv/colour", "").await?, "from-default");
    // A link name nobody linked is refused by `set-link-name`, as wasmCloud's host does.
    let (status, text) = compat.send("GET", "/kv-link/nowhere/colour", "").await?;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{text}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn link_config_wasmcloud_would_refuse_or_nobody_knows_is_refused_with_the_reason() -> anyhow::Result<()> {
    let compat = Compat::start().await?;
    let refused = |config: &'static str, target: &'static str, package: (&'static str, &'static str), interface| {
        let mut link = link(COMPAT, target, package, &[interface], &[], &[config]);
        link.name = config.to_owned();
        link
    };
    let cases = [
        ("kv-missing", &[("bucket", "no_such_bucket")][..], KV_ID, ("wasi", "keyvalue"), "store", "does not exist"),
        ("kv-colour", &[("colour", "red")][..], KV_ID, ("wasi", "keyvalue"), "store", "\"colour\""),
        ("kv-jwt", &[("client_jwt", "eyJ")][..], KV_ID, ("wasi", "keyvalue"), "store", "client_seed"),
        ("blob-colour", &[("Colour", "red")][..], BLOB_ID, ("wasi", "blobstore"), "blobstore", "\"Colour\""),
        ("msg-domain", &[("js_domain", "hub")][..], MSG_ID, ("wasmcloud", "messaging"), "consumer", "\"js_domain\""),
    ];
    for (name, values, target, package, interface, reason) in cases {
        compat.lattice.config(name, values).await?;
        let answer = compat.lattice.try_link(refused(name, target, package, interface)).await?;
        assert!(!answer.success, "{name} was accepted");
        let sides = answer.data.iter().flat_map(|set| &set.providers).map(|side| side.result.as_str());
        let why = format!("{} {}", answer.message, sides.collect::<Vec<_>>().join("; "));
        assert!(why.contains(reason), "{name}: the reason does not say {reason:?}: {why}");
    }
    // The component is still served.
    assert_eq!(compat.ok("GET", "/config/greeting", "").await?, "hello");
    Ok(())
}

/// Run `curl` (the machine's, as a user would) with `args`; its stdout.
async fn curl(args: &[&str]) -> anyhow::Result<(bool, String)> {
    let out = tokio::process::Command::new("curl").args(["-sS", "--max-time", "5"]).args(args).output().await?;
    Ok((out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned()))
}

#[tokio::test(flavor = "multi_thread")]
async fn wasmclouds_http_server_settings_keep_their_meaning() -> anyhow::Result<()> {
    let compat = Compat::start().await?;

    // wasmCloud's `port`, `readonly_mode`, `cache_control` and CORS keys on a second route.
    let port = free_port()?;
    compat
        .lattice
        .config(
            "strict-http",
            &[
                ("port", &port.to_string()),
                ("readonly_mode", "true"),
                ("cache_control", "max-age=60"),
                ("cors_allowed_origins", r#"["https://app.example"]"#),
            ],
        )
        .await?;
    let mut strict = link(HTTP_ID, COMPAT, ("wasi", "http"), &["incoming-handler"], &["strict-http"], &[]);
    strict.name = "strict".into();
    compat.lattice.link(strict).await?;
    let address: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    wait_for_route(address, "localhost", "/config/greeting").await?;

    let mut get = request("GET", "localhost", "/config/greeting", empty())?;
    get.headers_mut().insert("origin", "https://app.example".parse()?);
    let (status, headers, body) = fetch(address, get).await?;
    assert_eq!((status, body.as_ref()), (StatusCode::OK, &b"hello"[..]));
    assert_eq!(headers["cache-control"], "max-age=60");
    assert_eq!(headers["access-control-allow-origin"], "https://app.example");
    let mut other = request("GET", "localhost", "/config/greeting", empty())?;
    other.headers_mut().insert("origin", "https://elsewhere.example".parse()?);
    let (_, headers, _) = fetch(address, other).await?;
    assert!(!headers.contains_key("access-control-allow-origin"), "an origin not listed is not allowed");

    let mut preflight = request("OPTIONS", "localhost", "/publish/x", empty())?;
    preflight.headers_mut().insert("origin", "https://app.example".parse()?);
    preflight.headers_mut().insert("access-control-request-method", "POST".parse()?);
    let (status, headers, _) = fetch(address, preflight).await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["access-control-allow-methods"], "GET, POST, PUT, DELETE, HEAD, OPTIONS");

    let (status, headers, _) = fetch(address, request("POST", "localhost", "/publish/x", full("no"))?).await?;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "read-only mode lets only GET and HEAD through");
    assert_eq!(headers["allow"], "GET, HEAD");
    // The first route has none of these settings.
    let (status, headers, _) = fetch(compat.address, request("POST", "localhost", "/publish/y", full("yes"))?).await?;
    assert_eq!(status, StatusCode::OK);
    assert!(!headers.contains_key("cache-control"));

    // wasmCloud's `tls_cert_file` and `tls_priv_key_file`: the route is served over HTTPS.
    let dir = tempfile::tempdir()?;
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let made = tokio::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .await?;
    anyhow::ensure!(made.status.success(), "openssl failed: {}", String::from_utf8_lossy(&made.stderr));
    let tls_port = free_port()?.to_string();
    let (cert_path, key_path) = (cert.to_string_lossy().into_owned(), key.to_string_lossy().into_owned());
    compat
        .lattice
        .config("tls-http", &[("port", &tls_port), ("tls_cert_file", &cert_path), ("tls_priv_key_file", &key_path)])
        .await?;
    let mut secure = link(HTTP_ID, COMPAT, ("wasi", "http"), &["incoming-handler"], &["tls-http"], &[]);
    secure.name = "secure".into();
    compat.lattice.link(secure).await?;
    let url = format!("https://localhost:{tls_port}/config/greeting");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let answer = loop {
        let (ok, text) = curl(&["--cacert", &cert_path, &url]).await?;
        if ok || tokio::time::Instant::now() > deadline {
            break (ok, text);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(answer, (true, "hello".to_owned()), "the component answers over HTTPS");
    let (ok, _) = curl(&[&format!("http://127.0.0.1:{tls_port}/config/greeting")]).await?;
    assert!(!ok, "plain HTTP is not served on the HTTPS listener");
    // Another link cannot put a plain route on that listener.
    compat.lattice.config("plain-on-tls", &[("port", &tls_port), ("path", "/other")]).await?;
    let mut clash = link(HTTP_ID, COMPAT, ("wasi", "http"), &["incoming-handler"], &["plain-on-tls"], &[]);
    clash.name = "clash".into();
    let refused = compat.lattice.try_link(clash).await?;
    assert!(!refused.success, "a plain route on an HTTPS listener was accepted");
    Ok(())
}

/// Components built with plain wit-bindgen — a key-value writer, a watcher, an outgoing HTTP
/// client, a custom interface and its caller — with wasmCloud's Redis key-value and HTTP
/// client provider images, the Redis URL given as the provider's own config.
fn plain_manifest(wasm: &dyn Fn(&str) -> String, redis: &str) -> String {
    let (writer, watcher, fetch) = (wasm("kv-http"), wasm("kv-watcher"), wasm("http-fetch"));
    let (greeter, caller) = (wasm("greeter"), wasm("greet-caller"));
    format!(
        r#"apiVersion: core.oam.dev/v1beta1
kind: Application
metadata:
  name: plain
  annotations:
    version: 1.0.0
spec:
  components:
    - name: writer
      type: component
      properties:
        image: file://{writer}
      traits:
        - type: spreadscaler
          properties:
            instances: 1
        - type: link
          properties:
            target: kvredis
            namespace: wasi
            package: keyvalue
            interfaces: [store, atomics, batch]
    - name: watcher
      type: component
      properties:
        image: file://{watcher}
      traits:
        - type: spreadscaler
          properties:
            instances: 1
    - name: fetch
      type: component
      properties:
        image: file://{fetch}
      traits:
        - type: spreadscaler
          properties:
            instances: 1
        - type: link
          properties:
            target: httpclient
            namespace: wasi
            package: http
            interfaces: [outgoing-handler]
    - name: greeter
      type: component
      properties:
        image: file://{greeter}
      traits:
        - type: spreadscaler
          properties:
            instances: 1
    - name: caller
      type: component
      properties:
        image: file://{caller}
      traits:
        - type: spreadscaler
          properties:
            instances: 1
        - type: link
          properties:
            target: greeter
            namespace: ferry-test
            package: greeter
            interfaces: [greet]
    - name: kvredis
      type: capability
      properties:
        image: ghcr.io/wasmcloud/keyvalue-redis:0.28.2
        config:
          - name: redis-default
            properties:
              URL: {redis}
      traits:
        - type: link
          properties:
            target: watcher
            namespace: wasi
            package: keyvalue
            interfaces: [watcher]
            source:
              config:
                - name: watch-keys
                  properties:
                    watch_bucket: b
                    watch_keys: 'watched:*'
    - name: httpclient
      type: capability
      properties:
        image: ghcr.io/wasmcloud/http-client:0.12.1
"#
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn plain_wit_bindgen_components_from_a_manifest_watch_fetch_and_call_each_other() -> anyhow::Result<()> {
    let redis = RedisServer::start().await?;
    let origin = Origin::start().await?;
    let lattice = Lattice::start_for_apps().await?;
    let wasm = |name: &str| build_component(name).map(|p| p.display().to_string()).unwrap_or_default();
    lattice.deploy(&plain_manifest(&wasm, &redis.url)).await?;
    // The test calls components as HTTP invocations of its own.
    for id in ["plain-writer", "plain-fetch", "plain-caller"] {
        lattice.link(Link::new(TEST_CLIENT_ID, id, "wasi", "http", vec!["incoming-handler".into()])).await?;
    }

    // Key-value on the Redis the provider's own config names, and a watcher of some keys.
    let seen = |line: String| {
        let host = &lattice.host;
        async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while !host.logs().contains(&line) {
                anyhow::ensure!(tokio::time::Instant::now() < deadline, "the watcher never logged {line:?}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            anyhow::Ok(())
        }
    };
    let set = |key: &str, value: &str| json!({"op": "set", "bucket": "b", "key": key, "value": value});
    lattice.ok("plain-writer", set("other:1", "unwatched")).await?;
    lattice.ok("plain-writer", set("watched:1", "one")).await?;
    seen("watch on-set watched:1=one".into()).await?;
    lattice.ok("plain-writer", json!({"op": "delete", "bucket": "b", "key": "watched:1"})).await?;
    seen("watch on-delete watched:1".into()).await?;
    assert!(!lattice.host.logs().contains("watch on-set other:1"), "a key the link does not select was reported");
    let stored = tokio::process::Command::new("redis-cli").args(["-u", &redis.url, "GET", "other:1"]).output().await;
    if let Ok(out) = stored {
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "unwatched", "the value is in the test's Redis");
    }

    // Outgoing HTTP through the http-client provider.
    let answer = lattice.ok("plain-fetch", json!({"url": format!("http://{}/teapot", origin.address)})).await?;
    assert_eq!(answer["status"], 418, "{answer}");

    // A custom interface between two components, over the manifest's link.
    crate::custom_calls::check(&lattice.ok("plain-caller", json!({})).await?);
    Ok(())
}
