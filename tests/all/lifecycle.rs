//! Start-up and shutdown of the processes: stdin start-up data, SIGTERM, parent loss.

use std::{process::Command, time::Duration};

use ferry_proto::{
    ctl::ProviderStop,
    event::{CloudEvent, Event},
};
use ferry_tests::{Lattice, Process, bin_dir, binary};
use futures::StreamExt as _;

#[tokio::test(flavor = "multi_thread")]
async fn host_and_sidecar_provider_stop_cleanly_on_sigterm() -> anyhow::Result<()> {
    let mut lattice = Lattice::start().await?;
    let mut provider = lattice.start_provider("ferry-provider-keyvalue", "kv").await?;

    provider.send_sigterm();
    let status = provider.wait_exit(Duration::from_secs(15)).await.expect("provider must exit on SIGTERM");
    assert!(status.success(), "provider exit status {status}:\n{}", provider.logs());
    assert!(provider.logs().contains("provider stopped"), "{}", provider.logs());

    lattice.host.send_sigterm();
    let status = lattice.host.wait_exit(Duration::from_secs(15)).await.expect("host must exit on SIGTERM");
    assert!(status.success(), "host exit status {status}:\n{}", lattice.host.logs());
    assert!(lattice.host.logs().contains("host stopped"), "{}", lattice.host.logs());
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_host_spawned_provider_reads_stdin_and_stops_cleanly_when_it_closes() -> anyhow::Result<()> {
    let lattice = Lattice::start().await?;
    let (host, host_id) = lattice.start_host_with(&["--allow-file-dir", &bin_dir()?]).await?;
    let mut events = lattice.raw.subscribe(ferry_proto::subject::event(&lattice.name, "provider_stopped")?).await?;
    ferry_lattice::nats::sync_subscriptions(&lattice.raw).await?;
    lattice.supervise(&host_id, "r-start", "ferry-provider-keyvalue", "kv-child", &[]).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !host.logs().contains("provider ready") {
        assert!(tokio::time::Instant::now() < deadline, "the provider never got ready:\n{}", host.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // `provider.stop` closes its stdin: it stops by itself, with success, in good time.
    let stop = ProviderStop { request_id: "r-stop".into(), provider_id: "kv-child".into() };
    assert!(lattice.ctl.send(&stop, Some(&host_id)).await?.success);
    let msg = tokio::time::timeout(Duration::from_secs(15), events.next()).await?.expect("event");
    match serde_json::from_slice::<CloudEvent>(&msg.payload)?.event()? {
        Event::ProviderStopped(e) => assert_eq!(e.reason, "stopped (exited: code 0)", "{e:?}"),
        other => panic!("{other:?}"),
    }
    assert!(host.logs().contains("the host that started this provider is gone"), "{}", host.logs());
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_start_up_data_is_a_clear_error() -> anyhow::Result<()> {
    let mut command = Command::new(binary("ferry-provider-keyvalue")?);
    command.env_remove("FERRY_PROVIDER_ID");
    let mut provider = Process::spawn_with_input("kv-bad", command, r#"{"version": 9}"#)?;
    let status = provider.wait_exit(Duration::from_secs(15)).await.expect("provider must exit");
    assert!(!status.success());
    assert!(provider.logs().contains("invalid start-up data"), "{}", provider.logs());

    let mut command = Command::new(binary("ferry-provider-keyvalue")?);
    command.args(["--provider-id", "kv", "--credential", "not-a-credential"]);
    let mut provider = Process::spawn("kv-bad-cred", command)?;
    let status = provider.wait_exit(Duration::from_secs(15)).await.expect("provider must exit");
    assert!(!status.success());
    assert!(provider.logs().contains("invalid credential"), "{}", provider.logs());
    Ok(())
}
