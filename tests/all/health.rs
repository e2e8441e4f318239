//! Health: every provider instance answers a health request with its own id and status, and
//! hosts check the providers they supervise or link to, announce changes, and restart a
//! supervised provider that stays unhealthy.

use std::{collections::HashSet, time::Duration};

use ferry_proto::{
    auth::period_of,
    codec,
    envelope::{Invocation, InvocationResponse},
    event::{CloudEvent, Event, ProviderHealth},
    health::HealthAnswer,
    link::Link,
    subject,
};
use ferry_tests::Lattice;
use futures::StreamExt as _;

#[tokio::test(flavor = "multi_thread")]
async fn every_provider_instance_answers_health_with_its_id() -> anyhow::Result<()> {
    let lattice = Lattice::start().await?;
    let _one = lattice.start_provider("ferry-provider-keyvalue", "kv-nats").await?;
    let _two = lattice.start_provider("ferry-provider-keyvalue", "kv-nats").await?;

    let mut inv = Invocation::new("test-host", "kv-nats", "default", subject::OP_HEALTH, Vec::new());
    let key = lattice.cluster.provider_key(&lattice.name, "kv-nats", period_of(inv.issued_at_ms));
    inv.sign(&key);
    let inbox = lattice.raw.new_inbox();
    let mut replies = lattice.raw.subscribe(inbox.clone()).await?;
    lattice.raw.publish_with_reply(subject::health(&lattice.name, "kv-nats")?, inbox, inv.encode()?.into()).await?;

    let mut instances = HashSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while instances.len() < 2 {
        let Ok(Some(msg)) = tokio::time::timeout_at(deadline, replies.next()).await else { break };
        let resp = InvocationResponse::decode(&msg.payload)?;
        resp.verify(&key, &inv.id)?;
        let answer: HealthAnswer = codec::decode(&resp.into_result()?)?;
        assert_eq!(answer.provider_id, "kv-nats");
        assert!(answer.healthy, "{answer:?}");
        instances.insert(answer.instance_id);
    }
    assert_eq!(instances.len(), 2, "both instances must answer, with distinct ids");

    // An unsigned health request gets a typed refusal, not an answer.
    let mut forged = Invocation::new("test-host", "kv-nats", "default", subject::OP_HEALTH, Vec::new());
    forged.mac = vec![0; 32];
    let reply = lattice.raw.request(subject::health(&lattice.name, "kv-nats")?, forged.encode()?.into()).await?;
    let resp = InvocationResponse::decode(&reply.payload)?;
    assert_eq!(resp.error.map(|e| e.kind), Some(ferry_proto::ErrorKind::Denied));
    Ok(())
}

/// The first instance's answer to one signed health request (none within 4 s: empty).
pub(crate) async fn health_of(lattice: &Lattice, provider: &str) -> anyhow::Result<Vec<HealthAnswer>> {
    let mut inv = Invocation::new("test-host", provider, "default", subject::OP_HEALTH, Vec::new());
    let key = lattice.cluster.provider_key(&lattice.name, provider, period_of(inv.issued_at_ms));
    inv.set_timeout(Duration::from_secs(5));
    inv.sign(&key);
    let inbox = lattice.raw.new_inbox();
    let mut replies = lattice.raw.subscribe(inbox.clone()).await?;
    lattice.raw.publish_with_reply(subject::health(&lattice.name, provider)?, inbox, inv.encode()?.into()).await?;
    let mut answers = Vec::new();
    if let Ok(Some(msg)) = tokio::time::timeout(Duration::from_secs(4), replies.next()).await {
        let resp = InvocationResponse::decode(&msg.payload)?;
        resp.verify(&key, &inv.id)?;
        answers.push(codec::decode(&resp.into_result()?)?);
    }
    Ok(answers)
}

#[tokio::test(flavor = "multi_thread")]
async fn keyvalue_health_reports_a_backend_that_does_not_answer() -> anyhow::Result<()> {
    let lattice = Lattice::start().await?;
    let mut redis_server = ferry_tests::RedisServer::start().await?;
    let _provider = lattice.kv_on_redis(&redis_server).await?;

    let answers = health_of(&lattice, "kv-redis").await?;
    assert!(answers.len() == 1 && answers[0].healthy, "{answers:?}");
    redis_server.process.kill();
    let answers = health_of(&lattice, "kv-redis").await?;
    assert_eq!(answers.len(), 1, "the provider must still answer");
    assert!(!answers[0].healthy, "Redis is gone but the provider says healthy: {:?}", answers[0]);
    assert!(answers[0].message.contains("Redis"), "{}", answers[0].message);
    Ok(())
}

/// The next event of `kind` that host `host` announced, within `wait`.
async fn next_from(
    events: &mut async_nats::Subscriber,
    host: &str,
    wait: Duration,
    wanted: impl Fn(&Event) -> bool,
) -> anyhow::Result<Event> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let msg = tokio::time::timeout_at(deadline, events.next())
            .await
            .map_err(|_| anyhow::anyhow!("no such event within {wait:?}"))?
            .ok_or_else(|| anyhow::anyhow!("events ended"))?;
        let envelope: CloudEvent = serde_json::from_slice(&msg.payload)?;
        let event = envelope.event()?;
        if envelope.source == host && wanted(&event) {
            return Ok(event);
        }
    }
}

fn health_of_event(event: &Event) -> Option<(&'static str, &ProviderHealth)> {
    match event {
        Event::HealthCheckPassed(h) => Some(("passed", h)),
        Event::HealthCheckFailed(h) => Some(("failed", h)),
        Event::HealthCheckStatus(h) => Some(("status", h)),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_provider_that_stops_answering_turns_failed_and_back_to_passed_after_sigcont() -> anyhow::Result<()> {
    let lattice = Lattice::start().await?;
    let (interval, timeout) = (Duration::from_millis(1000), Duration::from_millis(500));
    let args = [
        "--health-interval-ms",
        "1000",
        "--health-timeout-ms",
        "500",
        "--health-restart-after",
        "0",
        "--heartbeat-interval-ms",
        "300",
    ];
    let (_host, host_id) = lattice.start_host_with(&args).await?;
    let mut events = lattice.raw.subscribe(format!("ferry.evt.{}.>", lattice.name)).await?;
    ferry_lattice::nats::sync_subscriptions(&lattice.raw).await?;
    let provider = lattice.start_provider("ferry-provider-keyvalue", "kv-nats").await?;
    lattice.start_component_on("kv-http", "kvc", &[], Some(&host_id)).await?;
    lattice.link(Link::new("kvc", "kv-nats", "wasi", "keyvalue", vec!["store".into()])).await?;

    // The host checks what its component links to, and beats.
    let is = |name: &'static str| {
        move |e: &Event| health_of_event(e).is_some_and(|(n, h)| n == name && h.provider_id == "kv-nats")
    };
    next_from(&mut events, &host_id, Duration::from_secs(10), is("passed")).await?;
    match next_from(&mut events, &host_id, Duration::from_secs(5), |e| matches!(e, Event::HostHeartbeat(_))).await? {
        Event::HostHeartbeat(info) => assert_eq!((info.host_id.as_str(), info.components), (host_id.as_str(), 1)),
        other => panic!("{other:?}"),
    }
    next_from(&mut events, &host_id, Duration::from_secs(5), is("status")).await?;

    // Frozen, it answers nothing: failed within one interval and one timeout.
    provider.pause();
    let paused = tokio::time::Instant::now();
    let failed = next_from(&mut events, &host_id, Duration::from_secs(10), is("failed")).await?;
    let took = paused.elapsed();
    eprintln!("health_check_failed {took:?} after SIGSTOP (interval {interval:?} + timeout {timeout:?})");
    assert!(took <= interval + timeout + Duration::from_millis(500), "failed only after {took:?}");
    let (_, report) = health_of_event(&failed).expect("health");
    assert!(!report.healthy && report.failures == 1 && report.message.contains("no answer"), "{report:?}");
    match next_from(&mut events, &host_id, Duration::from_secs(5), is("status")).await? {
        Event::HealthCheckStatus(h) => assert!(!h.healthy && h.failures == 2, "{h:?}"),
        other => panic!("{other:?}"),
    }

    // Running again, it passes again; not supervised here, it was never restarted.
    provider.resume();
    next_from(&mut events, &host_id, Duration::from_secs(10), is("passed")).await?;
    assert!(provider.pid() > 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_supervised_provider_that_stays_unhealthy_is_restarted() -> anyhow::Result<()> {
    let lattice = Lattice::start().await?;
    let dir = ferry_tests::bin_dir()?;
    let args = ["--allow-file-dir", &dir, "--health-interval-ms", "400", "--health-timeout-ms", "300"];
    let (_host, host_id) = lattice.start_host_with(&args).await?;
    let mut events = lattice.raw.subscribe(format!("ferry.evt.{}.>", lattice.name)).await?;
    ferry_lattice::nats::sync_subscriptions(&lattice.raw).await?;
    let pid = lattice.supervise(&host_id, "r-kv", "ferry-provider-keyvalue", "kv", &[]).await?;
    let is = |name: &'static str| {
        move |e: &Event| health_of_event(e).is_some_and(|(n, h)| n == name && h.provider_id == "kv")
    };
    next_from(&mut events, &host_id, Duration::from_secs(15), is("passed")).await?;

    let _ = std::process::Command::new("kill").args(["-STOP", &pid.to_string()]).status();
    next_from(&mut events, &host_id, Duration::from_secs(5), is("failed")).await?;
    // Three failed checks in a row (the default): killed and started again.
    let provider_event = |e: &Event| matches!(e, Event::ProviderStopped(_) | Event::ProviderStarted(_));
    match next_from(&mut events, &host_id, Duration::from_secs(10), provider_event).await? {
        Event::ProviderStopped(e) => {
            assert!(e.restarting && e.reason.contains("3 health checks failed"), "{e:?}");
        }
        other => panic!("{other:?}"),
    }
    match next_from(&mut events, &host_id, Duration::from_secs(10), provider_event).await? {
        Event::ProviderStarted(e) => assert!(e.restarts == 1 && e.pid != pid, "{e:?}"),
        other => panic!("{other:?}"),
    }
    next_from(&mut events, &host_id, Duration::from_secs(15), is("passed")).await?;
    assert!(!std::path::Path::new(&format!("/proc/{pid}/cmdline")).exists(), "the frozen process is gone");
    Ok(())
}
