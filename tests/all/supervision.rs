//! Providers a host supervises: started through the control interface, restarted after a
//! crash, backed off when they crash at start, stopped on command, and gone with their host.

use std::{path::Path, time::Duration};

use ferry_proto::{
    auth::period_of,
    codec,
    ctl::{HostInventory, ProviderStart, ProviderStop},
    envelope::{Invocation, InvocationResponse},
    event::{CloudEvent, Event},
    health::HealthAnswer,
    subject,
};
use ferry_tests::{Lattice, binary, free_port};
use futures::StreamExt as _;

/// Whether process `pid` still exists (a zombie counts as gone).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| !stat.rsplit(')').next().unwrap_or_default().trim_start().starts_with('Z'))
        .unwrap_or(false)
}

/// SIGKILL `pid`.
fn kill9(pid: u32) {
    let _ = std::process::Command::new("kill").args(["-KILL", &pid.to_string()]).status();
}

/// Ask provider `id` for its health; the first instance's answer.
async fn health(lattice: &Lattice, id: &str) -> anyhow::Result<HealthAnswer> {
    let mut inv = Invocation::new("test-host", id, "default", subject::OP_HEALTH, Vec::new());
    let key = lattice.cluster.provider_key(&lattice.name, id, period_of(inv.issued_at_ms));
    inv.sign(&key);
    let reply = tokio::time::timeout(
        Duration::from_secs(3),
        lattice.raw.request(subject::health(&lattice.name, id)?, inv.encode()?.into()),
    )
    .await??;
    let resp = InvocationResponse::decode(&reply.payload)?;
    resp.verify(&key, &inv.id)?;
    Ok(codec::decode(&resp.into_result()?)?)
}

/// The next provider event within `wait`.
async fn next_provider_event(events: &mut async_nats::Subscriber, wait: Duration) -> anyhow::Result<Event> {
    loop {
        let msg = tokio::time::timeout(wait, events.next()).await?.ok_or_else(|| anyhow::anyhow!("events ended"))?;
        let event = serde_json::from_slice::<CloudEvent>(&msg.payload)?.event()?;
        if matches!(event, Event::ProviderStarted(_) | Event::ProviderStopped(_) | Event::ProviderStartFailed(_)) {
            return Ok(event);
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_supervised_provider_killed_is_restarted_and_its_host_takes_it_along() -> anyhow::Result<()> {
    let lattice = Lattice::start().await?;
    let kv = binary("ferry-provider-keyvalue")?;
    let dir = kv.parent().expect("a directory").display().to_string();
    let (mut host, host_id) = lattice.start_host_with(&["--allow-file-dir", &dir]).await?;
    let mut events = lattice.raw.subscribe(format!("ferry.evt.{}.>", lattice.name)).await?;
    ferry_lattice::nats::sync_subscriptions(&lattice.raw).await?;

    let start = ProviderStart {
        request_id: "r-kv".into(),
        provider_id: "kv".into(),
        binary: kv.display().to_string(),
        config: Default::default(),
    };
    let reply = lattice.ctl.send(&start, Some(&host_id)).await?;
    assert!(reply.success, "{reply:?}");
    let first_pid = reply.data.and_then(|d| d.provider.pid).expect("a pid");
    match next_provider_event(&mut events, Duration::from_secs(5)).await? {
        Event::ProviderStarted(e) => assert_eq!((e.request_id.as_str(), e.pid, e.restarts), ("r-kv", first_pid, 0)),
        other => panic!("{other:?}"),
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while health(&lattice, "kv").await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the supervised provider never answered health:\n{}",
            host.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // SIGKILL: the host notices, says so, and starts it again.
    kill9(first_pid);
    match next_provider_event(&mut events, Duration::from_secs(5)).await? {
        Event::ProviderStopped(e) => {
            assert!(e.restarting && e.reason.contains("signal 9"), "{e:?}");
            assert_eq!(e.request_id, "r-kv");
        }
        other => panic!("{other:?}"),
    }
    let second_pid = match next_provider_event(&mut events, Duration::from_secs(5)).await? {
        Event::ProviderStarted(e) => {
            assert_eq!(e.restarts, 1, "{e:?}");
            e.pid
        }
        other => panic!("{other:?}"),
    };
    assert_ne!(second_pid, first_pid);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match health(&lattice, "kv").await {
            Ok(answer) if answer.healthy => break,
            _ if tokio::time::Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(200)).await,
            other => panic!("the restarted provider does not serve: {other:?}"),
        }
    }
    let inventory = lattice.ctl.send(&HostInventory::default(), Some(&host_id)).await?.data.expect("inventory");
    assert_eq!(inventory.providers.len(), 1);
    assert_eq!((inventory.providers[0].pid, inventory.providers[0].restarts), (Some(second_pid), 1));

    // A second provider whose shutdown hook never returns: stdin closing cannot stop it.
    let hang = [("hang_on_shutdown", "true")];
    let wedged_pid = lattice.supervise(&host_id, "r-wedged", "ferry-test-provider", "wedged", &hang).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !health(&lattice, "wedged").await.is_ok_and(|a| a.healthy) {
        assert!(tokio::time::Instant::now() < deadline, "the wedged provider never answered health");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The host killed with SIGKILL leaves no provider behind, wedged or not: the kernel's
    // parent-death signal takes them at once.
    host.kill();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    for pid in [second_pid, wedged_pid] {
        while alive(pid) {
            assert!(tokio::time::Instant::now() < deadline, "provider {pid} outlived its host");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_provider_that_crashes_at_start_is_backed_off_and_stops_on_command() -> anyhow::Result<()> {
    let lattice = Lattice::start().await?;
    let dir = std::env::temp_dir().join(format!("ferry-crasher-{}-{}", std::process::id(), free_port()?));
    std::fs::create_dir_all(&dir)?;
    let crasher = dir.join("crasher");
    std::fs::write(&crasher, "#!/bin/sh\nexit 3\n")?;
    std::process::Command::new("chmod").arg("+x").arg(&crasher).status()?;
    let (_host, host_id) = lattice.start_host_with(&["--allow-file-dir", &dir.display().to_string()]).await?;
    let mut events = lattice.raw.subscribe(format!("ferry.evt.{}.>", lattice.name)).await?;
    ferry_lattice::nats::sync_subscriptions(&lattice.raw).await?;

    // Not allowed: a binary outside the allowed directory, and any binary on a host that allows none.
    for (host, binary) in
        [(host_id.as_str(), "/bin/sh"), (lattice.host_id.as_str(), crasher.to_str().unwrap_or_default())]
    {
        let cmd = ProviderStart {
            request_id: "nope".into(),
            provider_id: "bad".into(),
            binary: binary.into(),
            config: Default::default(),
        };
        let reply = lattice.ctl.send(&cmd, Some(host)).await?;
        assert!(!reply.success, "{reply:?}");
        assert!(reply.message.contains("allow"), "{reply:?}");
        match next_provider_event(&mut events, Duration::from_secs(5)).await? {
            Event::ProviderStartFailed(e) => assert_eq!(e.request_id, "nope"),
            other => panic!("{other:?}"),
        }
    }

    let cmd = ProviderStart {
        request_id: "r-crash".into(),
        provider_id: "crasher".into(),
        binary: crasher.display().to_string(),
        config: Default::default(),
    };
    assert!(lattice.ctl.send(&cmd, Some(&host_id)).await?.success);
    let window = Duration::from_secs(30);
    let until = tokio::time::Instant::now() + window;
    let mut starts = 0u32;
    let mut last_restarts = None;
    while let Ok(Ok(event)) = tokio::time::timeout_at(until, next_provider_event(&mut events, window)).await {
        if let Event::ProviderStarted(e) = event {
            starts += 1;
            assert!(last_restarts.is_none_or(|last| e.restarts == last + 1), "{e:?}");
            last_restarts = Some(e.restarts);
        }
    }
    println!("a provider that exits at once was started {starts} times in {window:?}");
    // 250 ms doubling: starts at 0, 0.25, 0.75, 1.75, 3.75, 7.75, 15.75 s (then 31.75) — not
    // a hot loop, which would start it thousands of times.
    assert!((5..=8).contains(&starts), "{starts} starts in {window:?}");

    let stop = ProviderStop { request_id: "r-stop".into(), provider_id: "crasher".into() };
    let reply = lattice.ctl.send(&stop, Some(&host_id)).await?;
    assert!(reply.success, "{reply:?}");
    let inventory = lattice.ctl.send(&HostInventory::default(), Some(&host_id)).await?.data.expect("inventory");
    assert!(inventory.providers.is_empty(), "{inventory:?}");
    let quiet = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            if let Ok(Event::ProviderStarted(e)) = next_provider_event(&mut events, Duration::from_secs(10)).await {
                return e;
            }
        }
    })
    .await;
    assert!(quiet.is_err(), "a stopped provider was started again: {quiet:?}");
    let again = lattice.ctl.send(&stop, Some(&host_id)).await?;
    assert!(!again.success && again.message.contains("does not run"), "{again:?}");
    assert!(Path::new(&crasher).exists());
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
