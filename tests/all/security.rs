//! Forged invocations sent straight to NATS are rejected by the host and by the provider with
//! a typed error and a log line, and neither stops serving.

use std::time::Duration;

use ferry_proto::{
    ErrorKind, RpcError,
    auth::{ClusterKey, period_of},
    codec,
    envelope::{Invocation, InvocationResponse},
    http::{HttpRequest, OP_HANDLE},
    keyvalue::{KeyRequest, op},
    link::Link,
    subject,
};
use ferry_tests::{Lattice, TEST_CLIENT_ID};
use serde_json::json;

async fn send(lattice: &Lattice, target: &str, bytes: Vec<u8>) -> anyhow::Result<InvocationResponse> {
    let reply = lattice.raw.request(subject::rpc(&lattice.name, target)?, bytes.into()).await?;
    Ok(InvocationResponse::decode(&reply.payload)?)
}

fn denied(resp: &InvocationResponse) -> bool {
    matches!(&resp.error, Some(RpcError { kind: ErrorKind::Denied, .. }))
}

/// Every kind of forgery against `target`, with `valid` building a correctly signed invocation.
async fn forgeries_are_rejected(
    lattice: &Lattice,
    target: &str,
    valid: impl Fn() -> Invocation,
    sign_as: &str,
) -> anyhow::Result<()> {
    let key_for = |inv: &Invocation| lattice.cluster.provider_key(&lattice.name, sign_as, period_of(inv.issued_at_ms));
    let (stranger, _) = ClusterKey::generate()?;

    let mut wrong_key = valid();
    wrong_key.sign(&stranger.provider_key(&lattice.name, sign_as, period_of(wrong_key.issued_at_ms)));
    assert!(denied(&send(lattice, target, wrong_key.encode()?).await?), "wrong key accepted by {target}");

    let mut tampered = valid();
    tampered.sign(&key_for(&tampered));
    tampered.payload.push(0);
    assert!(denied(&send(lattice, target, tampered.encode()?).await?), "tampered payload accepted by {target}");

    let mut unsigned = valid();
    unsigned.mac.clear();
    assert!(denied(&send(lattice, target, unsigned.encode()?).await?), "unsigned invocation accepted by {target}");

    let mut expired = valid();
    expired.issued_at_ms -= 10 * 60 * 1000;
    expired.sign(&key_for(&expired));
    assert!(denied(&send(lattice, target, expired.encode()?).await?), "expired invocation accepted by {target}");

    let mut original = valid();
    original.sign(&key_for(&original));
    let bytes = original.encode()?;
    let first = send(lattice, target, bytes.clone()).await?;
    assert!(!denied(&first), "a correctly signed invocation was refused by {target}: {:?}", first.error);
    assert!(denied(&send(lattice, target, bytes).await?), "replayed invocation accepted by {target}");

    let garbage = send(lattice, target, b"\x93not an envelope".to_vec()).await?;
    assert_eq!(garbage.error.map(|e| e.kind), Some(ErrorKind::BadRequest));
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn forged_invocations_are_rejected_by_host_and_provider() -> anyhow::Result<()> {
    let lattice = Lattice::start().await?;
    let provider = lattice.start_provider("ferry-provider-keyvalue", "kv-nats").await?;
    lattice.start_component("kv-http", "kvc", &[]).await?;
    let mut link = Link::new("kvc", "kv-nats", "wasi", "keyvalue", vec!["store".into()]);
    link.name = "default".into();
    lattice.link(link).await?;

    // At the host: invocations of the component, as if from the test client.
    let http = codec::encode(&HttpRequest {
        method: "POST".into(),
        scheme: "http".into(),
        authority: "localhost".into(),
        path_with_query: "/".into(),
        headers: vec![],
        body: serde_json::to_vec(&json!({"op": "open", "bucket": "b"}))?,
        body_stream: None,
    })?;
    forgeries_are_rejected(
        &lattice,
        "kvc",
        || Invocation::new(TEST_CLIENT_ID, "kvc", "default", OP_HANDLE, http.clone()),
        TEST_CLIENT_ID,
    )
    .await?;

    // At the provider: invocations of key-value, as if from a host on behalf of the component.
    let get = codec::encode(&KeyRequest { bucket: "b".into(), key: "k".into() })?;
    forgeries_are_rejected(
        &lattice,
        "kv-nats",
        || Invocation::new("kvc", "kv-nats", "default", op::GET, get.clone()),
        "kv-nats",
    )
    .await?;

    // Both logged each rejection, and both still serve.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let host_rejections = lattice.host.logs().matches("rejected invocation").count();
    let provider_rejections = provider.logs().matches("rejected invocation").count();
    assert!(host_rejections >= 5, "host logged {host_rejections} rejections:\n{}", lattice.host.logs());
    assert!(provider_rejections >= 5, "provider logged {provider_rejections} rejections:\n{}", provider.logs());
    lattice.ok("kvc", json!({"op": "set", "bucket": "b", "key": "still", "value": "serving"})).await?;
    assert_eq!(lattice.ok("kvc", json!({"op": "get", "bucket": "b", "key": "still"})).await?, json!("serving"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_provider_credential_speaks_only_for_its_own_provider() -> anyhow::Result<()> {
    let lattice = Lattice::start().await?;
    let _kv = lattice.start_provider("ferry-provider-keyvalue", "kv-nats").await?;
    lattice.start_component("kv-http", "kvc", &[]).await?;
    let mut link = Link::new("kvc", "kv-nats", "wasi", "keyvalue", vec!["store".into()]);
    link.name = "default".into();
    lattice.link(link).await?;
    let rogue = ferry_proto::auth::ProviderCredential::parse(&lattice.credential("rogue"))?;

    // Its own identity is not linked to the component: a typed not-linked.
    let client = ferry_lattice::LatticeClient::new(lattice.raw.clone(), &lattice.name, rogue.clone(), None)?;
    let http = codec::encode(&HttpRequest {
        method: "GET".into(),
        scheme: "http".into(),
        authority: "localhost".into(),
        path_with_query: "/".into(),
        headers: vec![],
        body: serde_json::to_vec(&json!({"op": "open", "bucket": "b"}))?,
        body_stream: None,
    })?;
    let err = client.invoke("kvc", "default", OP_HANDLE, http.clone()).await.expect_err("rogue is not linked");
    assert_eq!(err.kind, ErrorKind::NotLinked, "{err}");

    // Its key cannot speak as the linked test client toward the host ...
    let mut as_client = Invocation::new(TEST_CLIENT_ID, "kvc", "default", OP_HANDLE, http);
    as_client.sign(&rogue.key_at(as_client.issued_at_ms)?);
    assert!(
        denied(&send(&lattice, "kvc", as_client.encode()?).await?),
        "the host took the rogue key for the test client"
    );

    // ... nor as a host toward another provider (whose key it does not have).
    let get = codec::encode(&KeyRequest { bucket: "b".into(), key: "k".into() })?;
    let mut as_host = Invocation::new("kvc", "kv-nats", "default", op::GET, get);
    as_host.sign(&rogue.key_at(as_host.issued_at_ms)?);
    assert!(denied(&send(&lattice, "kv-nats", as_host.encode()?).await?), "a provider took the rogue key for a host");
    Ok(())
}
