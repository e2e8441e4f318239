//! Two lattices on one NATS server see none of each other: hosts, links, configs, events and
//! calls stay on their own side, with the same component and provider ids on both.

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use ferry_lattice::LatticeClient;
use ferry_proto::{
    ctl::{HostPing, LinkGetCommand},
    subject,
};
use ferry_tests::{Lattice, NatsServer, TEST_CLIENT_ID};
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
