//! Components cannot reach the lattice's own state through a capability provider: every
//! JetStream name the lattice uses is reserved and refused with `access-denied`, and components'
//! buckets live in a namespace of their own by default.

use ferry_proto::{link::Link, subject};
use ferry_tests::Lattice;
use futures::StreamExt as _;
use serde_json::json;

const KV: &str = "ferry-provider-keyvalue";

fn kv_link(name: &str, target_config: &[&str]) -> Link {
    let mut link =
        Link::new("kvc", "kv-nats", "wasi", "keyvalue", vec!["store".into(), "atomics".into(), "batch".into()]);
    link.name = name.to_owned();
    link.target_config = target_config.iter().map(|c| (*c).to_owned()).collect();
    link
}

/// Every key of the lattice bucket with its value, to compare before and after an attack.
async fn lattice_state(lattice: &Lattice) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let js = async_nats::jetstream::new(lattice.raw.clone());
    let store = js.get_key_value(subject::data_bucket(&lattice.name)?).await?;
    let mut keys: Vec<String> = store.keys().await?.filter_map(|k| async { k.ok() }).collect().await;
    keys.sort();
    let mut state = Vec::new();
    for key in keys {
        let value = store.get(&key).await?.map(|v| v.to_vec()).unwrap_or_default();
        state.push((key, value));
    }
    Ok(state)
}

fn access_denied(answer: &serde_json::Value) -> bool {
    answer["error"].as_str().is_some_and(|e| e == "access-denied")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_component_cannot_open_reserved_jetstream_names_through_keyvalue() -> anyhow::Result<()> {
    let lattice = Lattice::start().await?;
    lattice.config("secrets", &[("password", "hunter2")]).await?;
    lattice.config("bare", &[("bucket_prefix", "")]).await?;
    let _provider = lattice.start_provider(KV, "kv-nats").await?;
    lattice.start_component("kv-http", "kvc", &["secrets"]).await?;
    lattice.link(kv_link("default", &[])).await?;
    lattice.link(kv_link("bare", &["bare"])).await?;
    let before = lattice_state(&lattice).await?;
    assert!(before.iter().any(|(k, _)| k.starts_with("link.")), "the lattice bucket holds links: {before:?}");

    // A link that asks for bare bucket names gets them, except the reserved ones.
    let data_bucket = subject::data_bucket(&lattice.name)?;
    let reserved = [data_bucket.as_str(), "ferry_test_data", "FERRY_other_DATA", "KV_FERRY_test_DATA", "OBJ_blobs"];
    for bucket in reserved {
        for command in [
            json!({"op": "list", "bucket": bucket, "link": "bare"}),
            json!({"op": "get", "bucket": bucket, "key": "config.secrets", "link": "bare"}),
            json!({"op": "set", "bucket": bucket, "key": "link.forged", "value": "x", "link": "bare"}),
            json!({"op": "delete_many", "bucket": bucket, "keys": ["config.secrets"], "link": "bare"}),
        ] {
            let (status, answer) = lattice.call("kvc", command.clone()).await?;
            assert_eq!(status, 500, "{command} answered {answer}");
            assert!(access_denied(&answer), "{command} must be refused with access-denied, got {answer}");
        }
    }
    // Under the default namespace the same identifiers are the component's own buckets.
    for bucket in reserved {
        let listed = lattice.ok("kvc", json!({"op": "list", "bucket": bucket})).await?;
        assert_eq!(listed["keys"], json!([]), "{bucket} under the default namespace: {listed}");
        lattice.ok("kvc", json!({"op": "set", "bucket": bucket, "key": "link.forged", "value": "x"})).await?;
    }
    assert_eq!(lattice_state(&lattice).await?, before, "the lattice bucket must be untouched");

    // A component's buckets have a namespace of their own (scoped by lattice by default); a link
    // that asks for bare names gets them, reserved names excepted.
    lattice.ok("kvc", json!({"op": "set", "bucket": "cart", "key": "k", "value": "namespaced"})).await?;
    lattice.ok("kvc", json!({"op": "set", "bucket": "cart", "key": "k", "value": "bare", "link": "bare"})).await?;
    let js = async_nats::jetstream::new(lattice.raw.clone());
    let namespaced = js.get_key_value(subject::component_kv_bucket(&lattice.name, "cart")?).await?.get("k").await?;
    let bare = js.get_key_value("cart").await?.get("k").await?;
    assert_eq!(namespaced.as_deref(), Some(&b"namespaced"[..]));
    assert_eq!(bare.as_deref(), Some(&b"bare"[..]));

    // The provider logged the refusals and still serves.
    assert_eq!(lattice.ok("kvc", json!({"op": "get", "bucket": "cart", "key": "k"})).await?, json!("namespaced"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_component_cannot_open_reserved_jetstream_names_through_the_object_store() -> anyhow::Result<()> {
    let lattice = Lattice::start().await?;
    let _provider = lattice.start_provider("ferry-provider-blobstore", "blob").await?;
    lattice.start_component("blob-test", "blobs", &[]).await?;
    lattice.config("blob-bare", &[("backend", "nats"), ("bucket_prefix", "")]).await?;
    let mut link =
        Link::new("blobs", "blob", "wasi", "blobstore", vec!["blobstore".into(), "container".into(), "types".into()]);
    link.target_config = vec!["blob-bare".into()];
    lattice.link(link).await?;
    let before = lattice_state(&lattice).await?;

    for container in ["FERRY_test_DATA", "ferry_anything", "KV_FERRY_test_DATA", "OBJ_x"] {
        for op in ["create", "get", "exists", "delete_container"] {
            let command = json!({"op": op, "container": container});
            let (status, answer) = lattice.call("blobs", command.clone()).await?;
            let error = answer["error"].as_str().unwrap_or_default();
            assert_eq!(status, 500, "{command} answered {answer}");
            assert!(error.starts_with("denied:"), "{command} must be refused with denied, got {answer}");
        }
    }
    assert_eq!(lattice_state(&lattice).await?, before, "the lattice bucket must be untouched");
    let js = async_nats::jetstream::new(lattice.raw.clone());
    assert!(js.get_object_store("FERRY_test_DATA").await.is_err(), "no reserved object store may be created");

    // An ordinary container still works under the same link.
    lattice.ok("blobs", json!({"op": "create", "container": "photos"})).await?;
    Ok(())
}
