//! Two lattices on one NATS server see none of each other: hosts, links, configs, events,
//! calls and components' stored data stay on their own side, with the same component and
//! provider ids on both; data stored before lattice scoping is still found.

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use ferry_lattice::LatticeClient;
use ferry_proto::link::Link;
use ferry_proto::{
    ctl::{HostPing, LinkGetCommand},
    subject,
};
use ferry_tests::{Lattice, NatsServer, Process, TEST_CLIENT_ID};
use futures::StreamExt as _;
use serde_json::json;

use crate::keyvalue::kv_link;

/// How long a host ping gathers answers.
const GATHER: Duration = Duration::from_secs(1);

/// The hosts (event `source`) behind every event that reached `events` so far.
async fn event_sources(events: &mut async_nats::Subscriber) -> BTreeSet<String> {
    let mut sources = BTreeSet::new();
    while let Ok(Some(message)) = tokio::time::timeout(Duration::from_millis(300), events.next()).await {
        let event: serde_json::Value = serde_json::from_slice(&message.payload).unwrap_or_default();
        sources.insert(event["source"].as_str().unwrap_or("?").to_owned());
    }
    sources
}

/// One lattice's side of the test: the `kv-http` component `kvc` with a config naming it.
async fn side(nats: &Arc<NatsServer>, name: &str) -> anyhow::Result<Lattice> {
    let lattice = Lattice::start_named(nats.clone(), name, Duration::from_secs(2)).await?;
    lattice.config("who", &[("name", name)]).await?;
    lattice.start_component("kv-http", "kvc", &["who"]).await?;
    Ok(lattice)
}

#[tokio::test(flavor = "multi_thread")]
async fn two_lattices_on_one_nats_see_none_of_each_others_hosts_links_configs_events_or_calls() -> anyhow::Result<()> {
    let nats = Arc::new(NatsServer::start().await?);
    let red = side(&nats, "red").await?;
    let mut red_events = red.raw.subscribe(subject::all_events(&red.name)?).await?;
    let mut blue_events = red.raw.subscribe(subject::all_events("blue")?).await?;
    ferry_lattice::nats::sync_subscriptions(&red.raw).await?;
    let blue = side(&nats, "blue").await?;

    // Hosts: each lattice's ping finds its own host only.
    for (lattice, other) in [(&red, &blue), (&blue, &red)] {
        let hosts: Vec<String> = lattice
            .ctl
            .gather(&HostPing::default(), GATHER)
            .await?
            .into_iter()
            .filter_map(|r| r.data)
            .map(|h| h.host_id)
            .collect();
        assert_eq!(hosts, std::slice::from_ref(&lattice.host_id), "{}: hosts answering the ping", lattice.name);
        assert!(!hosts.contains(&other.host_id));
    }

    // Calls and configs: the same component id answers with its own lattice's config, every
    // time (a shared queue group would mix them).
    for _ in 0..20 {
        assert_eq!(red.ok("kvc", json!({"op": "config", "key": "name"})).await?, json!("red"));
        assert_eq!(blue.ok("kvc", json!({"op": "config", "key": "name"})).await?, json!("blue"));
    }

    // Links: a link put on red is red's alone.
    let _kv = red.start_provider("ferry-provider-keyvalue", "kv").await?;
    red.link(kv_link("kvc", "kv", "default", &[])).await?;
    let links = |lattice: &Lattice| {
        let ctl = lattice.ctl.clone();
        async move {
            let links = ctl.send(&LinkGetCommand::default(), None).await?.data.unwrap_or_default();
            anyhow::Ok(links.into_iter().map(|l| (l.source_id, l.target_id)).collect::<BTreeSet<_>>())
        }
    };
    let on_red = links(&red).await?;
    let on_blue = links(&blue).await?;
    assert!(on_red.contains(&("kvc".into(), "kv".into())), "red's links: {on_red:?}");
    assert_eq!(on_blue, BTreeSet::from([(TEST_CLIENT_ID.into(), "kvc".into())]), "blue's links");
    red.ok("kvc", json!({"op": "set", "bucket": "red-only", "key": "k", "value": "v"})).await?;
    let (_, answer) = blue.call("kvc", json!({"op": "get", "bucket": "red-only", "key": "k"})).await?;
    assert!(answer["error"].is_string(), "blue's kvc has no key-value link, yet answered {answer}");

    // A caller of one lattice cannot call into the other: blue's host refuses red's identity.
    let credential = red.cluster.issue_credential("blue", TEST_CLIENT_ID, ferry_proto::time::now_ms(), 2).encode();
    let intruder = LatticeClient::connect(&nats.url, "blue", &credential, Some(Duration::from_secs(5))).await?;
    let Err(err) = intruder.handle_http("kvc", &ferry_tests::get("/")).await else {
        anyhow::bail!("blue's host served a call signed with red's cluster key");
    };
    eprintln!("red's identity calling into blue: {:?} {}", err.kind, err.message);
    // Blue's refusal is unsigned (red holds no key blue trusts, decision 28), so the caller
    // cannot take it as blue's answer: it waits out its deadline and says what it dropped.
    assert_eq!(err.kind, ferry_proto::ErrorKind::Timeout, "{err:?}");
    assert!(err.message.contains("denied: signature does not match"), "{err:?}");

    // Events: each lattice's stream carries its own host's events only.
    let red_sources = event_sources(&mut red_events).await;
    let blue_sources = event_sources(&mut blue_events).await;
    eprintln!("event sources: red {red_sources:?}, blue {blue_sources:?}");
    assert!(red_sources.contains(&red.host_id) && !red_sources.contains(&blue.host_id), "red: {red_sources:?}");
    assert!(blue_sources.contains(&blue.host_id) && !blue_sources.contains(&red.host_id), "blue: {blue_sources:?}");
    Ok(())
}

/// The key-value provider `kv` and the blobstore provider `blob` on `lattice`, both on the NATS
/// backend with the default naming, linked from `kvc` and from the blob-test component `blobs`.
async fn nats_stores(lattice: &Lattice) -> anyhow::Result<[Process; 2]> {
    let kv = lattice.start_provider("ferry-provider-keyvalue", "kv").await?;
    let blob = lattice.start_provider("ferry-provider-blobstore", "blob").await?;
    lattice.start_component("blob-test", "blobs", &[]).await?;
    lattice.config("blob-nats", &[("backend", "nats")]).await?;
    let mut link =
        Link::new("blobs", "blob", "wasi", "blobstore", vec!["blobstore".into(), "container".into(), "types".into()]);
    link.target_config = vec!["blob-nats".into()];
    lattice.link(link).await?;
    lattice.link(kv_link("kvc", "kv", "default", &[])).await?;
    Ok([kv, blob])
}

#[tokio::test(flavor = "multi_thread")]
async fn two_lattices_on_one_nats_keep_their_components_data_apart() -> anyhow::Result<()> {
    let nats = Arc::new(NatsServer::start().await?);
    let red = side(&nats, "red").await?;
    let blue = side(&nats, "blue").await?;
    let _red_providers = nats_stores(&red).await?;
    let _blue_providers = nats_stores(&blue).await?;

    // The same bucket, key, container and object on both sides, written with different values.
    for lattice in [&red, &blue] {
        let who = lattice.name.as_str();
        lattice.ok("kvc", json!({"op": "set", "bucket": "cart", "key": "owner", "value": who})).await?;
        // A shared counter would reach 2 on the second side.
        let n = lattice.ok("kvc", json!({"op": "increment", "bucket": "cart", "key": "n", "delta": 1})).await?;
        assert_eq!(n, json!(1), "{who}'s counter");
        lattice.ok("blobs", json!({"op": "create", "container": "box"})).await?;
        lattice.ok("blobs", json!({"op": "write", "container": "box", "object": "o", "text": who})).await?;
    }
    red.ok("kvc", json!({"op": "set", "bucket": "cart", "key": "red-only", "value": "x"})).await?;
    red.ok("blobs", json!({"op": "write", "container": "box", "object": "red-only", "text": "x"})).await?;

    for lattice in [&red, &blue] {
        let who = lattice.name.as_str();
        assert_eq!(lattice.ok("kvc", json!({"op": "get", "bucket": "cart", "key": "owner"})).await?, json!(who));
        let read =
            lattice.ok("blobs", json!({"op": "read", "container": "box", "object": "o", "mode": "sync"})).await?;
        assert_eq!(read["text"], json!(who));
    }
    let listed = blue.ok("kvc", json!({"op": "list", "bucket": "cart"})).await?;
    let mut keys: Vec<String> = serde_json::from_value(listed["keys"].clone())?;
    keys.sort();
    assert_eq!(keys, ["n", "owner"], "blue's cart");
    assert_eq!(blue.ok("blobs", json!({"op": "has", "container": "box", "object": "red-only"})).await?, json!(false));
    // Deleting blue's container leaves red's.
    blue.ok("blobs", json!({"op": "delete_container", "container": "box"})).await?;
    assert_eq!(blue.ok("blobs", json!({"op": "exists", "container": "box"})).await?, json!(false));
    assert_eq!(red.ok("blobs", json!({"op": "exists", "container": "box"})).await?, json!(true));

    // On NATS, each lattice's data is in stores of its own name.
    let js = async_nats::jetstream::new(red.raw.clone());
    for lattice in [&red, &blue] {
        let store = js.get_key_value(subject::component_kv_bucket(&lattice.name, "cart")?).await?;
        assert_eq!(store.get("owner").await?.as_deref(), Some(lattice.name.as_bytes()));
    }
    assert!(js.get_object_store(subject::component_object_store("red", "box")?).await.is_ok());
    assert!(js.get_object_store(subject::component_object_store("blue", "box")?).await.is_err());
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn buckets_and_containers_from_before_lattice_scoping_are_still_found() -> anyhow::Result<()> {
    let nats = Arc::new(NatsServer::start().await?);
    // Stores as a Ferry without lattice scoping left them: `kv-{bucket}`, `blob_{container}`.
    let raw = async_nats::connect(&nats.url).await?;
    let js = async_nats::jetstream::new(raw);
    let legacy_kv = js
        .create_key_value(async_nats::jetstream::kv::Config {
            bucket: "kv-orders".into(),
            history: 1,
            ..Default::default()
        })
        .await?;
    legacy_kv.put("o1", "kept".into()).await?;
    let legacy_blob = js
        .create_object_store(async_nats::jetstream::object_store::Config {
            bucket: "blob_photos".into(),
            ..Default::default()
        })
        .await?;
    legacy_blob.put("p1", &mut &b"old photo"[..]).await?;

    let lattice = side(&nats, "default").await?;
    let _providers = nats_stores(&lattice).await?;

    // Read and written where they are; new buckets and containers are made scoped.
    assert_eq!(lattice.ok("kvc", json!({"op": "get", "bucket": "orders", "key": "o1"})).await?, json!("kept"));
    lattice.ok("kvc", json!({"op": "set", "bucket": "orders", "key": "o2", "value": "new"})).await?;
    assert_eq!(legacy_kv.get("o2").await?.as_deref(), Some(&b"new"[..]), "written to the bucket it was read from");
    lattice.ok("kvc", json!({"op": "set", "bucket": "fresh", "key": "k", "value": "v"})).await?;
    assert!(js.get_key_value(subject::component_kv_bucket("default", "fresh")?).await.is_ok());
    assert!(js.get_key_value("kv-fresh").await.is_err(), "a new bucket must not be made under the old name");

    let read =
        lattice.ok("blobs", json!({"op": "read", "container": "photos", "object": "p1", "mode": "sync"})).await?;
    assert_eq!(read["text"], json!("old photo"));
    assert_eq!(lattice.ok("blobs", json!({"op": "exists", "container": "photos"})).await?, json!(true));
    lattice.ok("blobs", json!({"op": "create", "container": "albums"})).await?;
    assert!(js.get_object_store(subject::component_object_store("default", "albums")?).await.is_ok());
    assert!(js.get_object_store("blob_albums").await.is_err());
    // Nothing was copied or moved: the old stores still hold everything.
    assert!(js.get_key_value(subject::component_kv_bucket("default", "orders")?).await.is_err());
    assert_eq!(legacy_kv.get("o1").await?.as_deref(), Some(&b"kept"[..]));
    Ok(())
}
