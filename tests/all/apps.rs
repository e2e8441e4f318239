//! Declarative applications: a wadm manifest, written as wasmCloud's documentation writes one,
//! deployed with `ferry app deploy` onto two hosts; the reconciler re-places what a killed host
//! ran, and undeploy removes what the deploy created and nothing else.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use ferry_proto::{
    app::{LEASE_KEY, Lease},
    ctl::{HostInventory, LinkGetCommand},
    event::{CloudEvent, Event},
    link::Link,
};
use ferry_tests::{
    Lattice, bin_dir, build_component, free_port,
    http::{empty, fetch, request, wait_for_route},
};
use futures::StreamExt as _;
use hyper::StatusCode;

/// Two components (the wasmcloud-compat HTTP component and the messaging echo), three
/// providers by their wasmCloud image names, links with source and target config, inline and
/// named config.
fn manifest(compat: &str, echo: &str, address: SocketAddr) -> String {
    format!(
        r#"apiVersion: core.oam.dev/v1beta1
kind: Application
metadata:
  name: shop
  annotations:
    version: v0.1.0
    description: 'Two components, three providers'
spec:
  components:
    - name: compat
      type: component
      properties:
        image: file://{compat}
        config:
          - name: shop-greeting
            properties:
              greeting: hello from a manifest
      traits:
        - type: spreadscaler
          properties:
            instances: 2
        - type: link
          properties:
            target:
              name: kv
              config:
                - name: shop-kv
                  properties:
                    bucket: shop_counts
                    enable_bucket_auto_create: 'true'
            namespace: wasi
            package: keyvalue
            interfaces: [store, atomics]
        - type: link
          properties:
            target: nats
            namespace: wasmcloud
            package: messaging
            interfaces: [consumer]
    - name: echo
      type: component
      properties:
        image: file://{echo}
        config:
          - name: shop-echo
            properties:
              name: shop-echo
      traits:
        - type: spreadscaler
          properties:
            instances: 1
        - type: link
          properties:
            target: nats
            namespace: wasmcloud
            package: messaging
            interfaces: [consumer]
    - name: httpserver
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
                - name: shop-http
                  properties:
                    address: {address}
    - name: kv
      type: capability
      properties:
        image: ghcr.io/wasmcloud/keyvalue-nats:0.3.1
    - name: nats
      type: capability
      properties:
        image: ghcr.io/wasmcloud/messaging-nats:0.27.0
      traits:
        - type: link
          properties:
            target: echo
            namespace: wasmcloud
            package: messaging
            interfaces: [handler]
            source_config:
              - name: shop-subscriptions
                properties:
                  subscriptions: shop.echo
"#
    )
}

/// The ids the manifest places.
const IDS: [&str; 5] = ["shop-compat", "shop-echo", "shop-httpserver", "shop-kv", "shop-nats"];

/// What every host that answers runs: host id → ids.
async fn placed(lattice: &Lattice) -> anyhow::Result<BTreeMap<String, BTreeSet<String>>> {
    let replies = lattice.ctl.gather(&HostInventory::default(), Duration::from_millis(500)).await?;
    Ok(replies
        .into_iter()
        .filter_map(|r| r.data)
        .map(|inv| {
            let ids = inv
                .components
                .into_iter()
                .map(|c| c.component_id)
                .chain(inv.providers.into_iter().filter(|p| p.pid.is_some()).map(|p| p.provider_id))
                .collect();
            (inv.host.host_id, ids)
        })
        .collect())
}

/// Wait (up to `limit`) until every id runs somewhere; how long it took.
async fn until_all_run(lattice: &Lattice, ids: &[&str], limit: Duration) -> anyhow::Result<Duration> {
    let started = Instant::now();
    loop {
        let running: BTreeSet<String> = placed(lattice).await?.into_values().flatten().collect();
        let missing: Vec<&&str> = ids.iter().filter(|id| !running.contains(**id)).collect();
        if missing.is_empty() {
            return Ok(started.elapsed());
        }
        anyhow::ensure!(started.elapsed() < limit, "after {limit:?} still not running: {missing:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn get(address: SocketAddr, path: &str) -> anyhow::Result<(StatusCode, String)> {
    let (status, _, body) = fetch(address, request("GET", "localhost", path, empty())?).await?;
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

async fn ferry_app(lattice: &Lattice, args: &[&str]) -> anyhow::Result<(bool, String, String)> {
    let mut all = vec!["app"];
    all.extend_from_slice(args);
    lattice.ferry_ctl(&all).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_manifest_deploys_survives_a_lost_host_and_undeploys_only_what_it_created() -> anyhow::Result<()> {
    let bins = bin_dir()?;
    let nats = std::sync::Arc::new(ferry_tests::NatsServer::start().await?);
    let url = nats.url.clone();
    let mut lattice =
        Lattice::start_at(nats, &url, "apps", Duration::from_secs(5), &["--allow-file-dir", &bins]).await?;
    let (mut second, second_id) = lattice.start_host_with(&["--allow-file-dir", &bins]).await?;

    // What is not the application's: a component with its config and a link, which undeploy
    // must leave alone (started on both hosts, so one survives whichever is killed).
    lattice.config("bystander-config", &[("name", "bystander")]).await?;
    for host in [&lattice.host_id, &second_id] {
        lattice.start_component_on("messaging-echo", "bystander", &["bystander-config"], Some(host)).await?;
    }
    let bystander_link = Link::new("bystander", "shop-nats", "wasmcloud", "messaging", vec!["consumer".into()]);
    lattice.link(bystander_link.clone()).await?;

    let dir = tempfile::tempdir()?;
    let address: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
    let compat = build_component("wasmcloud-compat")?;
    let echo = build_component("messaging-echo")?;
    let text = manifest(&compat.display().to_string(), &echo.display().to_string(), address);

    // A mistake is reported with its line and field, and nothing is deployed.
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, text.replace("            target: echo\n", "            target: ech0\n"))?;
    let (ok, _, err) = ferry_app(&lattice, &["deploy", &bad.display().to_string()]).await?;
    assert!(!ok, "a manifest linking to no component was deployed");
    assert!(err.contains("line ") && err.contains("spec.components[4].traits[0].properties.target"), "{err}");

    let mut events = lattice.raw.subscribe("ferry.evt.apps.>").await?;
    lattice.raw.flush().await?;
    let file = dir.path().join("wadm.yaml");
    std::fs::write(&file, &text)?;
    let (ok, out, err) = ferry_app(&lattice, &["deploy", &file.display().to_string(), "--wait"]).await?;
    assert!(ok, "deploy failed: {out} {err}");
    assert!(out.contains("shop-httpserver") && out.contains("deployed"), "{out}");
    wait_for_route(address, "localhost", "/config/greeting").await?;
    assert_eq!(get(address, "/config/greeting").await?, (StatusCode::OK, "hello from a manifest".into()));
    assert_eq!(get(address, "/counter/visits").await?, (StatusCode::OK, "1".into()));
    let reply = lattice.raw.request("shop.echo", "ping".into()).await?;
    assert_eq!(reply.payload.as_ref(), b"shop-echo: ping");

    let (ok, out, _) = ferry_app(&lattice, &["status", "shop"]).await?;
    assert!(ok && out.contains("deployed") && out.contains("shop-httpserver"), "{out}");
    let (ok, out, _) = ferry_app(&lattice, &["list"]).await?;
    assert!(ok && out.contains("shop") && out.contains("v0.1.0"), "{out}");

    // One reconciler acted: exactly one host took the lease.
    let took_lease = [lattice.host.logs(), second.logs()]
        .iter()
        .filter(|logs| logs.contains("this host now reconciles the lattice's applications"))
        .count();
    assert_eq!(took_lease, 1, "hosts that took the reconciler lease");

    // Kill the host that holds the reconciler's lease — the worst case: the lease must pass to
    // the other host before anything is re-placed. Both run the compat component (2 instances).
    let bucket = ferry_lattice::LatticeBucket::open(&lattice.raw, &lattice.name, false).await?;
    let (lease, _) = bucket.get_json::<Lease>(LEASE_KEY).await?.context("nobody holds the reconciler lease")?;
    let before = placed(&lattice).await?;
    let lost: Vec<&String> =
        before.get(&lease.holder).into_iter().flatten().filter(|id| IDS.contains(&id.as_str())).collect();
    assert!(!lost.is_empty(), "the reconciling host ran none of the application: {before:?}");
    println!("the reconciling host ran {lost:?}");
    let survivor = if lease.holder == second_id {
        second.kill();
        lattice.host_id.clone()
    } else {
        lattice.host.kill();
        second_id.clone()
    };
    let took = until_all_run(&lattice, &IDS, Duration::from_secs(10)).await?;
    let after = placed(&lattice).await?;
    assert_eq!(after.keys().collect::<Vec<_>>(), vec![&survivor], "only the survivor answers");
    println!("RECONCILE: re-placed {} parts of a lost host in {took:?}", lost.len());
    wait_for_route(address, "localhost", "/config/greeting").await?;
    assert_eq!(get(address, "/counter/visits").await?, (StatusCode::OK, "2".into()), "the count survived");
    let reply = lattice.raw.request("shop.echo", "again".into()).await?;
    assert_eq!(reply.payload.as_ref(), b"shop-echo: again");

    // Undeploy: everything the deploy created goes, the bystander stays.
    let (ok, out, err) = ferry_app(&lattice, &["undeploy", "shop", "--wait"]).await?;
    assert!(ok, "undeploy failed: {out} {err}");
    let running: BTreeSet<String> = placed(&lattice).await?.into_values().flatten().collect();
    assert_eq!(running, BTreeSet::from(["bystander".to_owned()]), "what runs after undeploy");
    let links = lattice.ctl.send(&LinkGetCommand::default(), None).await?.data.unwrap_or_default();
    assert_eq!(links, vec![bystander_link], "only the bystander's link is left");
    for config in ["shop-greeting", "shop-kv", "shop-echo", "shop-http", "shop-subscriptions"] {
        let reply = lattice.ctl.config_get("", config, None).await?;
        assert!(!reply.success, "config {config} is still there");
    }
    let reply = lattice.ctl.config_get("", "bystander-config", None).await?;
    assert!(reply.success, "the bystander's config was removed");
    let (ok, out, _) = ferry_app(&lattice, &["history", "shop"]).await?;
    assert!(ok && out.contains("v0.1.0"), "{out}");

    // The deploy and undeploy, and the states the reconciler reached, were announced.
    let mut seen = Vec::new();
    while let Ok(Some(msg)) = tokio::time::timeout(Duration::from_millis(500), events.next()).await {
        match serde_json::from_slice::<CloudEvent>(&msg.payload)?.event()? {
            Event::AppDeployed(e) | Event::AppUndeployed(e) => seen.push(format!("{} {}", e.name, e.version)),
            Event::AppStatusChanged(e) => seen.push(format!("{} {:?}", e.name, e.state)),
            _ => {}
        }
    }
    for expected in ["shop v0.1.0", "shop Deployed", "shop Undeployed"] {
        assert!(seen.iter().any(|s| s == expected), "no {expected:?} event among {seen:?}");
    }
    Ok(())
}

/// A small application: component `a` with an inline config, optionally component `b`, and a
/// key-value provider whose own config names its default backend.
fn versioned(version: &str, a: &str, b: Option<&str>, instances: u32, greeting: &str, backend: &str) -> String {
    let b = b.map_or_else(String::new, |b| {
        format!(
            r#"    - name: b
      type: component
      properties:
        image: file://{b}
"#
        )
    });
    format!(
        r#"apiVersion: core.oam.dev/v1beta1
kind: Application
metadata:
  name: upgrade
  annotations:
    version: {version}
spec:
  components:
    - name: a
      type: component
      properties:
        image: file://{a}
        config:
          - name: upgrade-a
            properties:
              greeting: {greeting}
      traits:
        - type: spreadscaler
          properties:
            instances: {instances}
    - name: kv
      type: capability
      properties:
        image: ghcr.io/wasmcloud/keyvalue-nats:0.3.1
        config:
          - name: upgrade-kv
            properties:
              backend: {backend}
{b}"#
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_version_replaces_the_old_and_a_stored_one_is_never_rewritten() -> anyhow::Result<()> {
    let lattice = Lattice::start_for_apps().await?;
    let a = build_component("http-echo")?.display().to_string();
    let b = build_component("hello")?.display().to_string();
    let running = |lattice: &Lattice| {
        let ctl = lattice.ctl.clone();
        async move {
            let replies = ctl.gather(&HostInventory::default(), Duration::from_millis(500)).await?;
            let found: BTreeMap<String, u32> = replies
                .into_iter()
                .filter_map(|r| r.data)
                .flat_map(|inv| inv.components)
                .map(|c| (c.component_id, c.max_instances))
                .collect();
            anyhow::Ok(found)
        }
    };
    let provider_pid = |lattice: &Lattice| {
        let ctl = lattice.ctl.clone();
        async move {
            let replies = ctl.gather(&HostInventory::default(), Duration::from_millis(500)).await?;
            let pid = replies.into_iter().filter_map(|r| r.data).flat_map(|inv| inv.providers).find_map(|p| p.pid);
            pid.context("the provider does not run")
        }
    };
    let config = |lattice: &Lattice| {
        let ctl = lattice.ctl.clone();
        async move { anyhow::Ok(ctl.config_get("", "upgrade-a", None).await?.data.unwrap_or_default()) }
    };

    lattice.deploy(&versioned("v1", &a, Some(&b), 1, "one", "nats")).await?;
    assert_eq!(running(&lattice).await?, BTreeMap::from([("upgrade-a".into(), 1), ("upgrade-b".into(), 1)]));
    let first_pid = provider_pid(&lattice).await?;

    // v2 drops b, scales a, changes its config and the provider's: the reconciler follows,
    // starting the provider again with its new config, once.
    lattice.deploy(&versioned("v2", &a, None, 3, "two", "redis")).await?;
    assert_eq!(running(&lattice).await?, BTreeMap::from([("upgrade-a".into(), 3)]));
    assert_eq!(config(&lattice).await?.get("greeting").map(String::as_str), Some("two"));
    let second_pid = provider_pid(&lattice).await?;
    assert_ne!(first_pid, second_pid, "the provider still runs with its old config");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(provider_pid(&lattice).await?, second_pid, "the provider was started again with nothing changed");

    // A stored version is never rewritten with other content...
    let dir = tempfile::tempdir()?;
    let changed = dir.path().join("changed.yaml");
    std::fs::write(&changed, versioned("v1", &a, Some(&b), 2, "one", "nats"))?;
    let (ok, out, err) = ferry_app(&lattice, &["deploy", &changed.display().to_string()]).await?;
    assert!(!ok, "v1 was rewritten: {out}");
    assert!(err.contains("give the changed manifest a new version"), "{err}");
    // ...and deploying it again as it was rolls back.
    lattice.deploy(&versioned("v1", &a, Some(&b), 1, "one", "nats")).await?;
    assert_eq!(running(&lattice).await?, BTreeMap::from([("upgrade-a".into(), 1), ("upgrade-b".into(), 1)]));
    assert_eq!(config(&lattice).await?.get("greeting").map(String::as_str), Some("one"));
    assert_ne!(provider_pid(&lattice).await?, second_pid, "the rollback's provider config was not applied");
    let (ok, out, _) = ferry_app(&lattice, &["--json", "history", "upgrade"]).await?;
    assert!(ok, "{out}");
    let history: serde_json::Value = serde_json::from_str(&out)?;
    let versions: Vec<(String, bool)> = history["data"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| (v["version"].as_str().unwrap_or_default().to_owned(), v["deployed"] == true))
        .collect();
    assert_eq!(versions, vec![("v1".to_owned(), true), ("v2".to_owned(), false)]);
    Ok(())
}
