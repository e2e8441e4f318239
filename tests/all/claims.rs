//! Component claims: `ferry claims sign` embeds a signed token the host checks at start —
//! signature, hash over the bytes, time window, issuer — and a call its capabilities do not
//! grant is refused. Components signed by wasmCloud's own claims library (wascap) run, and
//! wascap reads what Ferry signs.

use std::{path::Path, process::Command, time::Duration};

use ferry_proto::{ctl::ComponentStart, event::CloudEvent, link::Link};
use ferry_tests::{Lattice, NatsServer, TEST_CLIENT_ID, binary, build_component};
use futures::StreamExt as _;
use nkeys::KeyPair;
use serde_json::{Value, json};

use crate::keyvalue::kv_link;

/// Write `key`'s seed to a 0600 file in `dir`; its path.
fn seed_file(dir: &Path, name: &str, key: &KeyPair) -> anyhow::Result<String> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let path = dir.join(name);
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path)?;
    std::io::Write::write_all(&mut file, key.seed()?.as_bytes())?;
    Ok(path.to_string_lossy().into_owned())
}

/// `ferry claims ARGS`; its stdout, failing on a non-zero exit.
fn claims_cli(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(binary("ferry")?).arg("claims").args(args).output()?;
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    anyhow::ensure!(out.status.success(), "ferry claims {args:?} failed: {stdout}{stderr}");
    Ok(stdout.into_owned())
}

/// Start component `id` from `bytes` (uploaded to the lattice's store): the reply's success and
/// message.
async fn start(lattice: &Lattice, id: &str, bytes: &[u8]) -> anyhow::Result<(bool, String)> {
    let store = ferry_lattice::ComponentStore::open(&lattice.raw, &lattice.name).await?;
    let image = store.upload(bytes).await?.to_string();
    let cmd = ComponentStart {
        request_id: format!("start-{id}"),
        component_id: id.to_owned(),
        image,
        max_instances: Some(4),
        config: Vec::new(),
    };
    let resp = lattice.ctl.send(&cmd, None).await?;
    Ok((resp.success, resp.message))
}

/// The `policy_denied` events received so far, as JSON data.
async fn denials(events: &mut async_nats::Subscriber) -> Vec<Value> {
    let mut seen = Vec::new();
    while let Ok(Some(msg)) = tokio::time::timeout(Duration::from_millis(500), events.next()).await {
        if let Ok(envelope) = serde_json::from_slice::<CloudEvent>(&msg.payload) {
            seen.push(envelope.data);
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread")]
async fn signed_components_run_and_bad_claims_or_ungranted_calls_are_refused_with_their_reason() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (trusted, stranger, wasmcloud) = (KeyPair::new_account(), KeyPair::new_account(), KeyPair::new_account());
    let trusted_seed = seed_file(dir.path(), "trusted.seed", &trusted)?;
    let stranger_seed = seed_file(dir.path(), "stranger.seed", &stranger)?;
    let component_key = KeyPair::new_module();
    let component_seed = seed_file(dir.path(), "kvc.seed", &component_key)?;
    let (trusted_pk, wasmcloud_pk) = (trusted.public_key(), wasmcloud.public_key());
    let nats = std::sync::Arc::new(NatsServer::start().await?);
    let url = nats.url.clone();
    let host_args = ["--require-signed", "--allowed-issuer", &trusted_pk, "--allowed-issuer", &wasmcloud_pk];
    let lattice = Lattice::start_at(nats, &url, "test", Duration::from_secs(5), &host_args).await?;
    let mut events = lattice.raw.subscribe(format!("ferry.evt.{}.policy_denied", lattice.name)).await?;
    ferry_lattice::nats::sync_subscriptions(&lattice.raw).await?;
    let _kv = lattice.start_provider("ferry-provider-keyvalue", "kv").await?;

    let plain = build_component("kv-http")?;
    let plain_path = plain.to_string_lossy().into_owned();
    let sign = |name: &str, issuer: &str, extra: &[&str]| -> anyhow::Result<Vec<u8>> {
        let out = dir.path().join(format!("{name}.wasm"));
        let out_path = out.to_string_lossy().into_owned();
        let mut args = vec!["sign", &plain_path, "--issuer", issuer, "--name", name, "--out", &out_path];
        args.extend_from_slice(extra);
        claims_cli(&args)?;
        Ok(std::fs::read(out)?)
    };

    // Signed by a trusted issuer, granted key-value: it runs, its claims are in the bucket,
    // and `ferry claims inspect` shows them.
    let good = sign("good", &trusted_seed, &["--subject", &component_seed, "--cap", "wasi:keyvalue"])?;
    let inspected: Value =
        serde_json::from_str(&claims_cli(&["inspect", &dir.path().join("good.wasm").to_string_lossy(), "--json"])?)?;
    assert_eq!(inspected["valid"], json!(true), "{inspected}");
    assert_eq!(inspected["claims"]["sub"], json!(component_key.public_key()));
    assert_eq!(inspected["claims"]["wascap"]["caps"], json!(["wasi:keyvalue"]));
    let (ok, message) = start(&lattice, "kvc", &good).await?;
    assert!(ok, "{message}");
    lattice.link(Link::new(TEST_CLIENT_ID, "kvc", "wasi", "http", vec!["incoming-handler".into()])).await?;
    lattice.link(kv_link("kvc", "kv", "default", &[])).await?;
    lattice.ok("kvc", json!({"op": "set", "bucket": "b", "key": "k", "value": "v"})).await?;
    assert_eq!(lattice.ok("kvc", json!({"op": "get", "bucket": "b", "key": "k"})).await?, json!("v"));
    let bucket = ferry_lattice::LatticeBucket::open(&lattice.raw, &lattice.name, false).await?;
    let (record, _) = bucket.get_json::<Value>("component.kvc").await?.expect("the component is recorded");
    assert_eq!(record["claims"]["sub"], json!(component_key.public_key()), "{record}");
    assert_eq!(record["claims"]["iss"], json!(trusted_pk));

    // Granted only blobstore: it starts, but its key-value calls are refused `denied`.
    let blob_only = sign("blob-only", &trusted_seed, &["--cap", "wasi:blobstore"])?;
    let (ok, message) = start(&lattice, "narrow", &blob_only).await?;
    assert!(ok, "{message}");
    lattice.link(Link::new(TEST_CLIENT_ID, "narrow", "wasi", "http", vec!["incoming-handler".into()])).await?;
    lattice.link(kv_link("narrow", "kv", "default", &[])).await?;
    let (status, answer) = lattice.call("narrow", json!({"op": "get", "bucket": "b", "key": "k"})).await?;
    assert_eq!(status, 500, "{answer}");
    assert!(answer.to_string().contains("denied"), "{answer}");

    // Refused at start, each with its reason in the reply and in a `policy_denied` event.
    let mut tampered = good.clone();
    let at = tampered.windows(5).position(|w| w == b"rustc").expect("the component names its compiler");
    tampered[at] = b'R';
    let expiring = sign("expiring", &trusted_seed, &["--expires", "1s"])?;
    let early = sign("early", &trusted_seed, &["--not-before", "1h"])?;
    let foreign = sign("foreign", &stranger_seed, &[])?;
    let unsigned = std::fs::read(&plain)?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    for (id, bytes, says) in [
        ("tampered", &tampered, "changed after it was signed"),
        ("expired", &expiring, "expired"),
        ("early", &early, "not valid before"),
        ("foreign", &foreign, "not an allowed issuer"),
        ("unsigned", &unsigned, "runs only signed components"),
    ] {
        let (ok, message) = start(&lattice, id, bytes).await?;
        assert!(!ok, "{id} must be refused");
        assert!(message.starts_with("denied: ") && message.contains(says), "{id}: {message}");
    }
    let seen = denials(&mut events).await;
    let reasons: Vec<(&str, &str)> = seen
        .iter()
        .map(|e| (e["component_id"].as_str().unwrap_or_default(), e["reason"].as_str().unwrap_or_default()))
        .collect();
    for expected in [
        ("narrow", "capability"),
        ("tampered", "tampered"),
        ("expired", "expired"),
        ("early", "not_yet_valid"),
        ("foreign", "issuer_not_allowed"),
        ("unsigned", "unsigned"),
    ] {
        assert!(reasons.contains(&expected), "no policy_denied {expected:?} in {seen:#?}");
    }
    let capability = seen.iter().find(|e| e["reason"] == "capability").map(|e| e["capability"].clone());
    assert_eq!(capability, Some(json!("wasi:keyvalue/store")), "{seen:#?}");

    // wasmCloud's own library signs (as `wash claims sign` does): the host runs it. And it reads
    // what Ferry signed, hash and signature intact.
    let claims = wascap::jwt::Claims::<wascap::jwt::Component>::with_dates(
        "wasmcloud-signed".into(),
        wasmcloud_pk.clone(),
        KeyPair::new_module().public_key(),
        Some(vec!["test".into()]),
        None,
        None,
        false,
        Some(1),
        Some("0.1.0".into()),
        None,
    );
    let by_wasmcloud = wascap::wasm::embed_claims(&unsigned, &claims, &wasmcloud)?;
    let (ok, message) = start(&lattice, "wasmcloud-signed", &by_wasmcloud).await?;
    assert!(ok, "{message}");
    let token = wascap::wasm::extract_claims(&good)?.expect("wascap finds Ferry's token");
    assert_eq!(token.claims.issuer, trusted_pk);
    assert!(wascap::jwt::validate_token::<wascap::jwt::Component>(&token.jwt)?.signature_valid);
    assert!(wascap::wasm::extract_claims(&tampered).is_err(), "wascap sees the tampering too");
    Ok(())
}
