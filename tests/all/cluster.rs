//! Ferry on a NATS cluster: three nats-server nodes joined by routes, JetStream keeping three
//! replicas of the lattice's stores and of components' key-value buckets, hosts and providers
//! given every node's URL. A node killed under a stream of calls: clients move to the others,
//! no call is lost or hangs, the node restarted rejoins. And an edge host on a leaf node serving
//! a component whose provider runs on the cluster.

use std::{sync::Arc, time::Duration};

use anyhow::Context as _;
use async_nats::jetstream;
use ferry_lattice::nats::JETSTREAM_TIMEOUT;
use ferry_proto::{ErrorKind, ctl::HostPing, link::Link};
use ferry_tests::{Lattice, NatsCluster, TEST_CLIENT_ID};
use serde_json::json;

use crate::{
    faults::{STREAM, Tally, stored_keys, stream_with_fault},
    keyvalue::kv_link,
};

const KV: &str = "ferry-provider-keyvalue";

/// The longest a stream of a killed node may take to elect a new leader: nats-server's followers
/// wait 4 to 9 s for a lost leader before they campaign (`minElectionTimeoutDefault` and
/// `maxElectionTimeoutDefault` in its server/raft.go), and a campaign takes up to 0.8 s more.
const ELECTION: Duration = Duration::from_secs(10);

/// By when a call started after a node's death must have succeeded: the election, then a
/// JetStream request sent to the old leader meanwhile given up and sent again, and room for a
/// busy machine. (The bound was 10 s, shorter than the election alone can be.)
const BACK: Duration = ELECTION.saturating_add(JETSTREAM_TIMEOUT).saturating_add(Duration::from_secs(5));

/// The replicas JetStream keeps of `stream`, and how many of them are current.
async fn replicas(js: &jetstream::Context, stream: &str) -> anyhow::Result<(usize, usize)> {
    let info = js.get_stream(stream).await?.info().await?.clone();
    let current = info
        .cluster
        .as_ref()
        .map_or(0, |c| usize::from(c.leader.is_some()) + c.replicas.iter().filter(|r| r.current).count());
    Ok((info.config.num_replicas, current))
}

/// Lattice `test` on `cluster`, its first host given every node and three replicas.
async fn on_cluster(cluster: &NatsCluster) -> anyhow::Result<Lattice> {
    let replicas = ["--jetstream-replicas", "3"];
    Lattice::start_at(cluster.nodes[0].clone(), &cluster.urls(), "test", Duration::from_secs(10), &replicas).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cluster_node_killed_under_load_loses_nothing_and_rejoins() -> anyhow::Result<()> {
    let cluster = NatsCluster::start(3).await?;
    let lattice = on_cluster(&cluster).await?;
    let (_second, second_id) = lattice.start_host().await?;
    let _kv1 = lattice.start_provider(KV, "kv").await?;
    let _kv2 = lattice.start_provider(KV, "kv").await?;
    lattice.start_component_on("kv-http", "kvc", &[], Some(&lattice.host_id)).await?;
    lattice.start_component_on("kv-http", "kvc", &[], Some(&second_id)).await?;
    lattice.config("replicated", &[("replicas", "3")]).await?;
    lattice.link(Link::new(TEST_CLIENT_ID, "kvc", "wasi", "http", vec!["incoming-handler".into()])).await?;
    lattice.link(kv_link("kvc", "kv", "default", &["replicated"])).await?;
    lattice.ok("kvc", json!({"op": "set", "bucket": "b", "key": "warm", "value": "x"})).await?;

    // Control commands reach every host across nodes; the stores keep three copies.
    let pings = lattice.ctl.gather(&HostPing { request_id: "p".into() }, Duration::from_secs(2)).await?;
    assert_eq!(pings.len(), 2, "{pings:?}");
    let js = jetstream::new(lattice.raw.clone());
    for stream in ["KV_FERRY_test_DATA", "OBJ_FERRY_test_COMPONENTS", "KV_FERRY_test_SEEN", "KV_ferry-kv-4-test-b"] {
        assert_eq!(replicas(&js, stream).await?.0, 3, "{stream}");
    }
    let spread: Vec<u64> = cluster.nodes.iter().map(|n| n.client_connections()).collect::<Result<_, _>>()?;
    println!("client connections per node before the fault: {spread:?}");

    // The busiest node dies under the stream of calls.
    let busiest = (0..spread.len()).max_by_key(|i| spread[*i]).unwrap_or(0);
    let victim = cluster.nodes[busiest].clone();
    let lattice = Arc::new(lattice);
    let (calls, fault_at, crashed) =
        stream_with_fault(&lattice, "kvc", STREAM + BACK, victim.crash()).await.context("the stream of calls")?;
    crashed.context("killing the node")?;
    let stored = stored_keys(&lattice, "kvc").await.context("listing the keys after the fault")?;
    let tally = Tally::of(&calls, fault_at, &stored);
    tally.check_allowing(
        &format!("cluster node {busiest} SIGKILL (of 3)"),
        // A call can also wait out an election past its deadline on a busy machine (`timeout`).
        &[ErrorKind::Interrupted, ErrorKind::ProviderError, ErrorKind::Unavailable, ErrorKind::Timeout],
    );
    // Calls wait out the elections of the streams the node led.
    let back = tally.back_after.unwrap_or(Duration::MAX);
    assert!(back < BACK, "service back after {back:?}");
    let moved: Vec<u64> = cluster
        .nodes
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != busiest)
        .map(|(_, n)| n.client_connections())
        .collect::<Result<_, _>>()?;
    assert_eq!(moved.iter().sum::<u64>(), spread.iter().sum::<u64>(), "every client moved: {spread:?} -> {moved:?}");

    // Restarted on its store, the node rejoins and catches up: every replica current again.
    let _restarted = victim.start_again().await.context("restarting the node")?;
    let start = tokio::time::Instant::now();
    loop {
        let mut all = true;
        for stream in ["KV_FERRY_test_DATA", "KV_ferry-kv-4-test-b"] {
            all &= replicas(&js, stream).await.is_ok_and(|(want, current)| current == want);
        }
        if all {
            break;
        }
        anyhow::ensure!(start.elapsed() < Duration::from_secs(30), "the restarted node never caught up");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    println!("the restarted node caught up in {} ms", start.elapsed().as_millis());
    let links =
        lattice.ctl.send(&ferry_proto::ctl::LinkGetCommand::default(), None).await.context("links after the rejoin")?;
    assert_eq!(links.data.map_or(0, |l| l.len()), 2);
    let warm = lattice
        .ok("kvc", json!({"op": "get", "bucket": "b", "key": "warm"}))
        .await
        .context("a read after the rejoin")?;
    assert_eq!(warm, json!("x"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn an_edge_host_on_a_leaf_node_serves_a_component_whose_provider_runs_on_the_cluster() -> anyhow::Result<()> {
    let cluster = NatsCluster::start(3).await?;
    let leaf = cluster.start_leaf().await?;
    let lattice = on_cluster(&cluster).await?;
    let _kv = lattice.start_provider(KV, "kv").await?;
    let (_edge, edge_id) = lattice.start_host_at(&leaf.url, &[]).await?;
    lattice.start_component_on("kv-http", "kvc", &[], Some(&edge_id)).await?;
    lattice.link(Link::new(TEST_CLIENT_ID, "kvc", "wasi", "http", vec!["incoming-handler".into()])).await?;
    lattice.link(kv_link("kvc", "kv", "default", &[])).await?;

    // The test client is on the cluster, the component on the edge host alone (which reaches
    // NATS only through the leaf), its provider on the cluster.
    for i in 0..20 {
        lattice.ok("kvc", json!({"op": "set", "bucket": "b", "key": format!("k{i}"), "value": "v"})).await?;
    }
    assert_eq!(lattice.ok("kvc", json!({"op": "get", "bucket": "b", "key": "k19"})).await?, json!("v"));
    assert!(leaf.client_connections()? >= 1, "the edge host is connected to the leaf");
    Ok(())
}
