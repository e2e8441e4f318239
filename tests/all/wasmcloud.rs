//! Compatibility with wasmCloud: a component written the way wasmCloud's documentation shows
//! (the `wasmcloud-component` crate, `tests/components/wasmcloud-compat`), linked with the
//! interfaces and the config keys wasmCloud's first-party providers read, served over real HTTP.

use std::{net::SocketAddr, time::Duration};

use async_nats::jetstream;
use bytes::Bytes;
use ferry_proto::link::Link;
use ferry_tests::{
    Lattice, Process, free_port,
    http::{empty, fetch, full, request, wait_for_route},
};
use futures::StreamExt as _;
use hyper::StatusCode;

const HTTP: &str = "ferry-provider-http-server";
const KV: &str = "ferry-provider-keyvalue";
const BLOB: &str = "ferry-provider-blobstore";
const MESSAGING: &str = "ferry-provider-messaging";

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

/// The compat component behind the http-server provider, its config `greeting=hello`, and the
/// providers it imports; every link written as a wasmCloud manifest writes it.
struct Compat {
    lattice: Lattice,
    address: SocketAddr,
    blob_root: std::path::PathBuf,
    _providers: Vec<Process>,
}

impl Compat {
    async fn start() -> anyhow::Result<Self> {
        let lattice = Lattice::start().await?;
        let providers = vec![
            lattice.start_provider(HTTP, "http").await?,
            lattice.start_provider(KV, "kv").await?,
            lattice.start_provider(BLOB, "blob").await?,
            lattice.start_provider(MESSAGING, "msg").await?,
        ];
        lattice.config("compat-config", &[("greeting", "hello")]).await?;
        lattice.start_component("wasmcloud-compat", "compat", &["compat-config"]).await?;

        let address: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
        lattice.config("default-http", &[("address", &address.to_string())]).await?;
        lattice.link(link("http", "compat", ("wasi", "http"), &["incoming-handler"], &["default-http"], &[])).await?;
        // wasmCloud's NATS key-value link: one bucket, named, created on demand.
        lattice.config("kv-bucket", &[("bucket", "compat_counts"), ("enable_bucket_auto_create", "true")]).await?;
        lattice.link(link("compat", "kv", ("wasi", "keyvalue"), &["store", "atomics"], &[], &["kv-bucket"])).await?;
        // wasmCloud's blobstore link: `blobstore` alone serves the container methods too; its
        // filesystem provider's `ROOT`.
        let blob_root = std::env::temp_dir().join(format!("ferry-compat-{}-{}", std::process::id(), free_port()?));
        std::fs::create_dir_all(&blob_root)?;
        lattice.config("blob-root", &[("ROOT", &blob_root.to_string_lossy())]).await?;
        lattice.link(link("compat", "blob", ("wasi", "blobstore"), &["blobstore"], &[], &["blob-root"])).await?;
        // One named config on both sides of the messaging provider, as wasmCloud manifests
        // often share it: the consumer side carries `subscriptions` it does not use.
        lattice.config("msg-subs", &[("subscriptions", "compat.in")]).await?;
        lattice.link(link("compat", "msg", ("wasmcloud", "messaging"), &["consumer"], &[], &["msg-subs"])).await?;
        wait_for_route(address, "localhost", "/config/greeting").await?;
        Ok(Self { lattice, address, blob_root, _providers: providers })
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
    // A second key-value link, named `other`, over a bucket that already holds the key.
    let js = jetstream::new(compat.lattice.raw.clone());
    let other =
        js.create_key_value(jetstream::kv::Config { bucket: "compat_other".into(), ..Default::default() }).await?;
    other.put("colour", Bytes::from_static(b"from-other")).await?;
    compat.lattice.config("kv-other", &[("bucket", "compat_other")]).await?;
    let mut named = link("compat", "kv", ("wasi", "keyvalue"), &["store"], &[], &["kv-other"]);
    named.name = "other".into();
    compat.lattice.link(named).await?;
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
        let mut link = link("compat", target, package, &[interface], &[], &[config]);
        link.name = config.to_owned();
        link
    };
    let cases = [
        ("kv-missing", &[("bucket", "no_such_bucket")][..], "kv", ("wasi", "keyvalue"), "store", "does not exist"),
        ("kv-colour", &[("colour", "red")][..], "kv", ("wasi", "keyvalue"), "store", "\"colour\""),
        ("kv-jwt", &[("client_jwt", "eyJ")][..], "kv", ("wasi", "keyvalue"), "store", "client_seed"),
        ("blob-colour", &[("Colour", "red")][..], "blob", ("wasi", "blobstore"), "blobstore", "\"Colour\""),
        ("msg-domain", &[("js_domain", "hub")][..], "msg", ("wasmcloud", "messaging"), "consumer", "\"js_domain\""),
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
