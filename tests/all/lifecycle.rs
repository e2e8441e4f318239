//! Start-up and shutdown of the processes: stdin start-up data, SIGTERM, parent loss.

use std::{process::Command, time::Duration};

use ferry_proto::startup::{ProviderStartup, STARTUP_VERSION};
use ferry_tests::{Lattice, Process, binary};

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
async fn a_host_spawned_provider_reads_stdin_and_stops_when_its_parent_goes() -> anyhow::Result<()> {
    let lattice = Lattice::start().await?;
    let startup = ProviderStartup {
        version: STARTUP_VERSION,
        lattice: lattice.name.clone(),
        provider_id: "kv-child".into(),
        nats_url: lattice.nats.url.clone(),
        credential: lattice.credential("kv-child"),
        rpc_timeout_ms: Some(1000),
        log_level: Some("info".into()),
        config: Default::default(),
    };
    let mut command = Command::new(binary("ferry-provider-keyvalue")?);
    command.env_remove("FERRY_PROVIDER_ID");
    let mut provider = Process::spawn_with_stdin("kv-child", command, &startup.to_json()?)?;
    provider.wait_for_log("provider ready", Duration::from_secs(30)).await?;

    provider.close_stdin();
    let status = provider.wait_exit(Duration::from_secs(15)).await.expect("provider must stop when stdin closes");
    assert!(status.success(), "exit status {status}:\n{}", provider.logs());
    assert!(provider.logs().contains("the host that started this provider is gone"), "{}", provider.logs());
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_start_up_data_is_a_clear_error() -> anyhow::Result<()> {
    let mut command = Command::new(binary("ferry-provider-keyvalue")?);
    command.env_remove("FERRY_PROVIDER_ID");
    let mut provider = Process::spawn_with_stdin("kv-bad", command, r#"{"version": 9}"#)?;
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
