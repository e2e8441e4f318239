//! The control interface over real hosts: lattice-wide queries every host answers, typed
//! replies, bad input refused without a change, scaling under load, typed events carrying
//! their command's request id, and `host.stop`.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use ferry_proto::{
    ctl::{
        Command as _, ComponentList, ComponentScale, ComponentStop, ConfigDelCommand, ConfigPutCommand, CtlResponse,
        HostInventory, HostPing, HostStop, LabelDel, LabelPut, LinkDelCommand, LinkGetCommand, LinkPutCommand,
    },
    event::{CloudEvent, Event},
    link::{Link, LinkKey},
    subject,
};
use futures::StreamExt as _;

use ferry_tests::{Lattice, TEST_CLIENT_ID, get};

const GATHER: Duration = Duration::from_secs(2);

/// A raw request on `subject`, its reply decoded as a control response.
async fn raw(lattice: &Lattice, subject: String, body: &[u8]) -> anyhow::Result<CtlResponse> {
    let reply = lattice.ctl.request_raw(subject, body.to_vec()).await?;
    Ok(serde_json::from_slice(&reply)?)
}

#[tokio::test(flavor = "multi_thread")]
async fn every_host_answers_lattice_wide_queries_and_bad_commands_change_nothing() -> anyhow::Result<()> {
    let lattice = Lattice::start().await?;
    let (_second, second_id) = lattice.start_host().await?;
    lattice.start_component_on("http-echo", "echo", &[], Some(&lattice.host_id)).await?;

    // Every host answers a ping: no queue group for lattice-wide queries.
    let pings = lattice.ctl.gather(&HostPing { request_id: "p1".into() }, GATHER).await?;
    let mut ids: Vec<String> = pings.iter().filter_map(|p| p.data.as_ref().map(|d| d.host_id.clone())).collect();
    ids.sort();
    let mut expected = vec![lattice.host_id.clone(), second_id.clone()];
    expected.sort();
    assert_eq!(ids, expected, "{pings:?}");
    for ping in &pings {
        assert!(ping.success && ping.request_id == "p1", "{ping:?}");
        let info = ping.data.as_ref().expect("data");
        assert_eq!(info.lattice, lattice.name);
        assert_eq!(info.version, env!("CARGO_PKG_VERSION"));
        assert_eq!(info.components, u32::from(info.host_id == lattice.host_id), "{info:?}");
    }

    // Inventory of one host, and the lattice-wide component list.
    let inventory = lattice.ctl.send(&HostInventory::default(), Some(&lattice.host_id)).await?;
    let inventory = inventory.data.expect("inventory data");
    assert_eq!(inventory.host.host_id, lattice.host_id);
    assert_eq!(inventory.components.len(), 1);
    assert_eq!(inventory.components[0].component_id, "echo");
    assert_eq!(inventory.components[0].digest.len(), 64, "a SHA-256 digest: {:?}", inventory.components[0]);
    let lists = lattice.ctl.gather(&ComponentList::default(), GATHER).await?;
    assert_eq!(lists.len(), 2, "{lists:?}");
    let total: usize = lists.iter().filter_map(|l| l.data.as_ref()).map(|l| l.components.len()).sum();
    assert_eq!(total, 1);

    // Bad input gets an error reply and changes nothing.
    let before = lattice.ctl.send(&LinkGetCommand::default(), None).await?.data.unwrap_or_default();
    let put = LinkPutCommand::subject(&lattice.name, None)?;
    for body in [b"{not json".as_slice(), b"{\"link\": 7}", b"\xff\xfe", b"[]"] {
        let reply = raw(&lattice, put.clone(), body).await?;
        assert!(!reply.success, "{body:?} was accepted: {reply:?}");
        assert!(reply.message.contains("malformed link.put"), "{reply:?}");
    }
    let invalid = Link::new("", "kv", "wasi", "keyvalue", vec!["store".into()]);
    let reply = lattice.ctl.send(&LinkPutCommand { request_id: "bad".into(), link: invalid }, None).await?;
    assert!(!reply.success && reply.request_id == "bad", "{reply:?}");
    let after = lattice.ctl.send(&LinkGetCommand::default(), None).await?.data.unwrap_or_default();
    assert_eq!(before, after, "a refused command changed the links");

    let unknown = subject::ctl(&lattice.name, "component", "explode", Some(&lattice.host_id))?;
    let reply = raw(&lattice, unknown, b"{}").await?;
    assert!(!reply.success && reply.message.contains("unknown command component.explode"), "{reply:?}");

    // A one-host command names its host; for a host that does not run the component it fails
    // and the component goes on running where it was.
    assert!(ComponentStop::subject(&lattice.name, None).is_err());
    let stop = ComponentStop { request_id: "s".into(), component_id: "echo".into() };
    let reply = lattice.ctl.send(&stop, Some(&second_id)).await?;
    assert!(!reply.success && reply.message.contains("does not run on host"), "{reply:?}");
    lattice.link(Link::new(TEST_CLIENT_ID, "echo", "wasi", "http", vec!["incoming-handler".into()])).await?;
    let answer = lattice.client.handle_http("echo", &get("/")).await?;
    assert_eq!(answer.status, 200);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_component_scaled_under_a_stream_of_calls_loses_none() -> anyhow::Result<()> {
    let lattice = Arc::new(Lattice::start().await?);
    lattice.start_component("http-echo", "echo", &[]).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut callers = Vec::new();
    for _ in 0..4 {
        let (lattice, stop, ok, failed) = (lattice.clone(), stop.clone(), ok.clone(), failed.clone());
        callers.push(tokio::spawn(async move {
            let mut errors = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                match lattice.client.handle_http("echo", &get("/sleep?ms=20")).await {
                    Ok(resp) if resp.status == 200 => ok.fetch_add(1, Ordering::Relaxed),
                    other => {
                        errors.push(format!("{:?}", other.map(|r| r.status)));
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
            errors
        }));
    }
    for max_instances in [4, 1, 8, 2, 50] {
        tokio::time::sleep(Duration::from_millis(400)).await;
        let cmd =
            ComponentScale { request_id: format!("scale-{max_instances}"), component_id: "echo".into(), max_instances };
        let reply = lattice.ctl.send(&cmd, Some(&lattice.host_id)).await?;
        assert!(reply.success, "{reply:?}");
        assert_eq!(reply.data.as_ref().map(|d| d.max_instances), Some(max_instances));
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    stop.store(true, Ordering::Relaxed);
    let mut errors = Vec::new();
    for caller in callers {
        errors.extend(caller.await?);
    }
    assert!(errors.is_empty(), "calls failed while scaling: {errors:?}");
    assert!(ok.load(Ordering::Relaxed) > 20, "too few calls to show anything: {}", ok.load(Ordering::Relaxed));

    // The bound is the new one: inventory says so.
    let inventory = lattice.ctl.send(&HostInventory::default(), Some(&lattice.host_id)).await?.data.expect("data");
    assert_eq!(inventory.components[0].max_instances, 50);

    // Scale to 0 stops it.
    let cmd = ComponentScale { request_id: "zero".into(), component_id: "echo".into(), max_instances: 0 };
    assert!(lattice.ctl.send(&cmd, Some(&lattice.host_id)).await?.success);
    let inventory = lattice.ctl.send(&HostInventory::default(), Some(&lattice.host_id)).await?.data.expect("data");
    assert!(inventory.components.is_empty(), "{inventory:?}");
    let err = lattice.client.handle_http("echo", &get("/")).await.expect_err("nobody serves echo now");
    assert_eq!(err.kind, ferry_proto::ErrorKind::Unavailable, "{err}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn events_are_typed_and_carry_the_request_id_of_their_command() -> anyhow::Result<()> {
    let lattice = Lattice::start().await?;
    let mut events = lattice.raw.subscribe(format!("ferry.evt.{}.>", lattice.name)).await?;
    ferry_lattice::nats::sync_subscriptions(&lattice.raw).await?;
    let host = Some(lattice.host_id.as_str());

    lattice.start_component_on("http-echo", "echo", &[], host).await?;
    let label = LabelPut { request_id: "r-label".into(), key: "zone".into(), value: "a".into() };
    assert!(lattice.ctl.send(&label, host).await?.success);
    let scale = ComponentScale { request_id: "r-scale".into(), component_id: "echo".into(), max_instances: 3 };
    assert!(lattice.ctl.send(&scale, host).await?.success);
    let values = [("k".to_owned(), "v".to_owned())].into();
    let config = ConfigPutCommand { request_id: "r-config".into(), name: "cfg".into(), values };
    assert!(lattice.ctl.send(&config, None).await?.success);
    let link = Link::new(TEST_CLIENT_ID, "echo", "wasi", "http", vec!["incoming-handler".into()]);
    assert!(lattice.ctl.send(&LinkPutCommand { request_id: "r-link".into(), link }, None).await?.success);
    let key = LinkKey {
        source_id: TEST_CLIENT_ID.into(),
        target_id: "echo".into(),
        wit_namespace: "wasi".into(),
        wit_package: "http".into(),
        name: String::new(),
    };
    assert!(lattice.ctl.send(&LinkDelCommand { request_id: "r-unlink".into(), key }, None).await?.success);
    assert!(
        lattice.ctl.send(&ConfigDelCommand { request_id: "r-del".into(), name: "cfg".into() }, None).await?.success
    );
    assert!(lattice.ctl.send(&LabelDel { request_id: "r-unlabel".into(), key: "zone".into() }, host).await?.success);
    let missing = LabelDel { request_id: "r-missing".into(), key: "zone".into() };
    assert!(!lattice.ctl.send(&missing, host).await?.success, "a label that is not set cannot be removed");
    let stop = ComponentStop { request_id: "r-stop".into(), component_id: "echo".into() };
    assert!(lattice.ctl.send(&stop, host).await?.success);

    let mut seen = Vec::new();
    while let Ok(Some(msg)) = tokio::time::timeout(Duration::from_millis(500), events.next()).await {
        let envelope: CloudEvent = serde_json::from_slice(&msg.payload)?;
        assert_eq!(envelope.source, lattice.host_id);
        assert_eq!(msg.subject.as_str(), format!("ferry.evt.{}.{}", lattice.name, envelope.event()?.name()));
        let event = envelope.event()?;
        seen.push((event.name(), event.request_id().to_owned(), event));
    }
    let names: Vec<(&str, &str)> = seen.iter().map(|(n, r, _)| (*n, r.as_str())).collect();
    assert_eq!(
        names,
        [
            ("component_scaled", "start-echo"),
            ("labels_changed", "r-label"),
            ("component_scaled", "r-scale"),
            ("config_set", "r-config"),
            ("link_set", "r-link"),
            ("link_deleted", "r-unlink"),
            ("config_deleted", "r-del"),
            ("labels_changed", "r-unlabel"),
            ("component_scaled", "r-stop"),
        ]
    );
    match &seen[2].2 {
        Event::ComponentScaled(e) => assert_eq!((e.max_instances, e.digest.len()), (3, 64)),
        other => panic!("{other:?}"),
    }
    match &seen[8].2 {
        Event::ComponentScaled(e) => assert_eq!(e.max_instances, 0, "a stop is a scale to 0"),
        other => panic!("{other:?}"),
    }
    match &seen[1].2 {
        Event::LabelsChanged(e) => assert_eq!(e.labels.get("zone").map(String::as_str), Some("a")),
        other => panic!("{other:?}"),
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn host_stop_lets_calls_in_flight_finish_and_the_host_exits() -> anyhow::Result<()> {
    let lattice = Lattice::start().await?;
    let (mut second, second_id) = lattice.start_host().await?;
    let mut events = lattice.raw.subscribe(format!("ferry.evt.{}.host_stopped", lattice.name)).await?;
    ferry_lattice::nats::sync_subscriptions(&lattice.raw).await?;
    lattice.start_component_on("http-echo", "slow", &[], Some(&second_id)).await?;
    lattice.link(Link::new(TEST_CLIENT_ID, "slow", "wasi", "http", vec!["incoming-handler".into()])).await?;

    let client = lattice.client.clone();
    let in_flight = tokio::spawn(async move { client.handle_http("slow", &get("/sleep?ms=1500")).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let reply = lattice.ctl.send(&HostStop { request_id: "bye".into() }, Some(&second_id)).await?;
    assert!(reply.success, "{reply:?}");
    assert_eq!(reply.data.map(|d| d.host_id), Some(second_id.clone()));
    let answer = in_flight.await??;
    assert_eq!(answer.status, 200, "the call in flight finished");
    let status = second.wait_exit(Duration::from_secs(20)).await.expect("the host exits after host.stop");
    assert!(status.success(), "{status:?}");
    let msg = tokio::time::timeout(Duration::from_secs(5), events.next()).await?.expect("host_stopped");
    let event = serde_json::from_slice::<CloudEvent>(&msg.payload)?.event()?;
    match event {
        Event::HostStopped(e) => assert_eq!((e.host_id.as_str(), e.request_id.as_str()), (second_id.as_str(), "bye")),
        other => panic!("{other:?}"),
    }
    // The other host goes on answering.
    let pings = lattice.ctl.gather(&HostPing::default(), GATHER).await?;
    assert_eq!(pings.len(), 1, "{pings:?}");
    Ok(())
}
