//! The event stream of a scripted run holds exactly the expected events, in order, each with
//! the request id of the command that caused it.

use std::time::Duration;

use ferry_proto::{
    ctl::{ComponentScale, ComponentStart, HostStop, LinkDelCommand, LinkPutCommand, ProviderStart, ProviderStop},
    event::{CloudEvent, Event},
    link::Link,
};
use ferry_tests::{Lattice, TEST_CLIENT_ID, binary};
use futures::StreamExt as _;
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn a_scripted_run_announces_exactly_its_events_in_order_with_their_request_ids() -> anyhow::Result<()> {
    let lattice = Lattice::start().await?;
    let mut events = lattice.raw.subscribe(ferry_proto::subject::all_events(&lattice.name)?).await?;
    ferry_lattice::nats::sync_subscriptions(&lattice.raw).await?;

    // Start a host (health checks and heartbeats out of the way of an exact count).
    let kv = binary("ferry-provider-keyvalue")?;
    let dir = kv.parent().expect("a directory").display().to_string();
    let quiet = ["--health-interval-ms", "600000", "--heartbeat-interval-ms", "600000"];
    let (mut host, host_id) = lattice.start_host_with(&[&["--allow-file-dir", &dir][..], &quiet].concat()).await?;
    let on = Some(host_id.as_str());

    let start = ProviderStart {
        request_id: "r-provider".into(),
        provider_id: "kv".into(),
        binary: kv.display().to_string(),
        config: Default::default(),
    };
    assert!(lattice.ctl.send(&start, on).await?.success);
    let component = ComponentStart {
        request_id: "r-start".into(),
        component_id: "kvc".into(),
        image: lattice.image("kv-http").await?,
        max_instances: Some(5),
        config: Vec::new(),
    };
    assert!(lattice.ctl.send(&component, on).await?.success);
    let scale = ComponentScale { request_id: "r-scale".into(), component_id: "kvc".into(), max_instances: 10 };
    assert!(lattice.ctl.send(&scale, on).await?.success);
    let kv_link = Link::new("kvc", "kv", "wasi", "keyvalue", vec!["store".into()]);
    let http_link = Link::new(TEST_CLIENT_ID, "kvc", "wasi", "http", vec!["incoming-handler".into()]);
    for (request_id, link) in [("r-link-kv", kv_link.clone()), ("r-link-http", http_link)] {
        let reply = lattice.ctl.send(&LinkPutCommand { request_id: request_id.into(), link }, on).await?;
        assert!(reply.success, "{reply:?}");
    }

    // A call, which announces nothing.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match lattice.ok("kvc", json!({"op": "set", "bucket": "b", "key": "k", "value": "v"})).await {
            Ok(_) => break,
            Err(err) if tokio::time::Instant::now() < deadline => {
                eprintln!("provider not serving yet: {err:#}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(err) => return Err(err),
        }
    }

    let unlink = LinkDelCommand { request_id: "r-unlink".into(), key: kv_link.key() };
    assert!(lattice.ctl.send(&unlink, on).await?.success);
    let stop = ProviderStop { request_id: "r-provider-stop".into(), provider_id: "kv".into() };
    assert!(lattice.ctl.send(&stop, on).await?.success);
    assert!(lattice.ctl.send(&HostStop { request_id: "r-host-stop".into() }, on).await?.success);
    assert!(host.wait_exit(Duration::from_secs(20)).await.is_some_and(|s| s.success()), "{}", host.logs());

    let mut seen = Vec::new();
    while let Ok(Some(msg)) = tokio::time::timeout(Duration::from_millis(700), events.next()).await {
        let envelope: CloudEvent = serde_json::from_slice(&msg.payload)?;
        if envelope.source != host_id {
            continue;
        }
        let event = envelope.event()?;
        seen.push((event.name(), event.request_id().to_owned(), event));
    }
    let names: Vec<(&str, &str)> = seen.iter().map(|(n, r, _)| (*n, r.as_str())).collect();
    assert_eq!(
        names,
        [
            ("host_started", ""),
            ("provider_started", "r-provider"),
            ("component_scaled", "r-start"),
            ("component_scaled", "r-scale"),
            ("link_set", "r-link-kv"),
            ("link_set", "r-link-http"),
            ("link_deleted", "r-unlink"),
            ("provider_stopped", "r-provider-stop"),
            ("host_stopped", "r-host-stop"),
        ]
    );
    match (&seen[2].2, &seen[3].2, &seen[7].2) {
        (Event::ComponentScaled(start), Event::ComponentScaled(scale), Event::ProviderStopped(stopped)) => {
            assert_eq!((start.max_instances, scale.max_instances), (5, 10));
            assert!(!stopped.restarting, "{stopped:?}");
        }
        other => panic!("{other:?}"),
    }
    match &seen[4].2 {
        Event::LinkSet(set) => assert_eq!(set.link.key(), kv_link.key(), "{set:?}"),
        other => panic!("{other:?}"),
    }
    Ok(())
}
