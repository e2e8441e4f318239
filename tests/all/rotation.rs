//! Rotating the lattice's cluster key under a stream of calls, as docs/security.md tells an
//! operator to: hosts first accept the new key, providers then hold credentials from both,
//! hosts then sign with the new key, clients and providers move to it, and at last hosts drop
//! the old one. Each step replaces processes by new ones before stopping the old (a rolling
//! restart); not one call fails, and the old key is refused at the end.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use ferry_lattice::LatticeClient;
use ferry_proto::auth::{ClusterKey, CredentialSet};
use ferry_tests::{Lattice, Process, TEST_CLIENT_ID};
use serde_json::json;
use tokio::sync::RwLock;

use crate::keyvalue::kv_link;

const KV: &str = "ferry-provider-keyvalue";
const CALLERS: usize = 4;

/// Credentials for `id` from `keys`, the first signing.
fn credentials(lattice: &Lattice, id: &str, keys: &[&ClusterKey]) -> anyhow::Result<CredentialSet> {
    let now = ferry_proto::time::now_ms();
    Ok(CredentialSet::new(keys.iter().map(|k| k.issue_credential(&lattice.name, id, now, 2)).collect())?)
}

/// One `set` through `kvc` as the test client; an error for anything but a 200.
async fn set(client: &LatticeClient, key: &str) -> Result<(), String> {
    let command = json!({"op": "set", "bucket": "b", "key": key, "value": "x"});
    let request = ferry_tests::json_post(&command);
    match client.handle_http("kvc", &request).await {
        Ok(response) if response.status == 200 => Ok(()),
        Ok(response) => Err(format!("{} {}", response.status, String::from_utf8_lossy(&response.body))),
        Err(err) => Err(err.to_string()),
    }
}

/// Stop `processes` as an operator would (SIGTERM, in-flight work finishes), one at a time.
async fn stop_all(processes: Vec<Process>) {
    for mut process in processes {
        let _ = tokio::task::spawn_blocking(move || process.terminate(Duration::from_secs(15))).await;
    }
}

/// Two hosts signing with `seed` and accepting `accepted`, each running `kvc`.
async fn hosts(lattice: &Lattice, seed: &str, accepted: &[&str]) -> anyhow::Result<Vec<Process>> {
    let mut started = Vec::new();
    for _ in 0..2 {
        let (host, id) = lattice.start_host_keyed(&lattice.url, seed, accepted, &[]).await?;
        lattice.start_component_on("kv-http", "kvc", &[], Some(&id)).await?;
        started.push(host);
    }
    Ok(started)
}

/// Two key-value provider instances holding `creds`.
async fn providers(lattice: &Lattice, creds: &CredentialSet) -> anyhow::Result<Vec<Process>> {
    let encoded = creds.encode();
    let env = [("FERRY_PROVIDER_CREDENTIAL", encoded.as_str())];
    Ok(vec![
        lattice.start_provider_env(KV, "kv", &[], &env).await?,
        lattice.start_provider_env(KV, "kv", &[], &env).await?,
    ])
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cluster_key_is_rotated_under_a_stream_of_calls_and_no_call_fails() -> anyhow::Result<()> {
    let mut lattice = Lattice::start_with_timeout(Duration::from_secs(10)).await?;
    let (old, old_seed) = (lattice.cluster.clone(), lattice.seed.clone());
    let (new, new_seed) = ClusterKey::generate()?;

    // Before: two hosts and two provider instances on the old key.
    let mut running_hosts = hosts(&lattice, &old_seed, &[]).await?;
    let mut running_providers = providers(&lattice, &credentials(&lattice, "kv", &[&old])?).await?;
    lattice
        .link(ferry_proto::link::Link::new(TEST_CLIENT_ID, "kvc", "wasi", "http", vec!["incoming-handler".into()]))
        .await?;
    lattice.link(kv_link("kvc", "kv", "default", &[])).await?;
    // The harness's first host, on the old key alone, goes too.
    tokio::task::block_in_place(|| lattice.host.terminate(Duration::from_secs(15)));

    let client_on = |keys: &[&ClusterKey]| -> anyhow::Result<LatticeClient> {
        let creds = credentials(&lattice, TEST_CLIENT_ID, keys)?;
        Ok(LatticeClient::new(lattice.raw.clone(), &lattice.name, creds, Some(Duration::from_secs(10)))?)
    };
    // The client in use, and whether it still signs with the old key.
    let client = Arc::new(RwLock::new((true, client_on(&[&old])?)));
    let (stop, old_in_flight) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)));
    let mut callers = Vec::new();
    for caller in 0..CALLERS {
        let (client, stop, old_in_flight) = (client.clone(), stop.clone(), old_in_flight.clone());
        callers.push(tokio::spawn(async move {
            let (mut ok, mut failed) = (0usize, Vec::new());
            for seq in 0u64.. {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let (on_old, current) = {
                    let guard = client.read().await;
                    if guard.0 {
                        old_in_flight.fetch_add(1, Ordering::SeqCst);
                    }
                    (guard.0, guard.1.clone())
                };
                let result = set(&current, &format!("c{caller}-{seq}")).await;
                if on_old {
                    old_in_flight.fetch_sub(1, Ordering::SeqCst);
                }
                match result {
                    Ok(()) => ok += 1,
                    Err(err) => failed.push(err),
                }
            }
            (ok, failed)
        }));
    }
    let settle = || tokio::time::sleep(Duration::from_millis(700));
    settle().await;

    // 1. Hosts accept the new key, still signing with the old.
    let next = hosts(&lattice, &old_seed, &[&new_seed]).await?;
    stop_all(std::mem::replace(&mut running_hosts, next)).await;
    settle().await;
    // 2. Providers hold credentials from both keys.
    let next = providers(&lattice, &credentials(&lattice, "kv", &[&old, &new])?).await?;
    stop_all(std::mem::replace(&mut running_providers, next)).await;
    settle().await;
    // 3. Hosts sign with the new key, still accepting the old.
    let next = hosts(&lattice, &new_seed, &[&old_seed]).await?;
    stop_all(std::mem::replace(&mut running_hosts, next)).await;
    settle().await;
    // 4. Clients and providers move to the new key alone.
    *client.write().await = (false, client_on(&[&new])?);
    let next = providers(&lattice, &credentials(&lattice, "kv", &[&new])?).await?;
    stop_all(std::mem::replace(&mut running_providers, next)).await;
    settle().await;
    // Calls made under the old key may still be in flight (or be sent again): they end first.
    while old_in_flight.load(Ordering::SeqCst) > 0 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // 5. Hosts drop the old key.
    let next = hosts(&lattice, &new_seed, &[]).await?;
    stop_all(std::mem::replace(&mut running_hosts, next)).await;
    settle().await;

    stop.store(true, Ordering::Relaxed);
    let (mut succeeded, mut failures) = (0, Vec::new());
    for caller in callers {
        let (ok, failed) = caller.await?;
        succeeded += ok;
        failures.extend(failed);
    }
    println!(
        "cluster key rotated in five rolling steps under {CALLERS} callers: {succeeded} calls, {} failed",
        failures.len()
    );
    assert!(failures.is_empty(), "{} calls failed during the rotation: {failures:?}", failures.len());
    assert!(succeeded > 100, "too few calls to show anything: {succeeded}");

    // The old key no longer opens anything.
    let stale = LatticeClient::new(
        lattice.raw.clone(),
        &lattice.name,
        credentials(&lattice, TEST_CLIENT_ID, &[&old])?,
        Some(Duration::from_secs(2)),
    )?;
    assert!(set(&stale, "stale").await.is_err(), "a call under the old key must be refused");
    assert!(set(&client_on(&[&new])?, "fresh").await.is_ok());
    Ok(())
}

/// Where component `id` runs: the hosts whose inventory lists it.
async fn hosts_running(lattice: &Lattice, id: &str) -> anyhow::Result<Vec<String>> {
    let replies = lattice.ctl.gather(&ferry_proto::ctl::HostInventory::default(), Duration::from_millis(500)).await?;
    Ok(replies
        .into_iter()
        .filter_map(|r| r.data)
        .filter(|inv| inv.components.iter().any(|c| c.component_id == id))
        .map(|inv| inv.host.host_id)
        .collect())
}

#[tokio::test(flavor = "multi_thread")]
async fn deployed_applications_outlive_the_old_cluster_key() -> anyhow::Result<()> {
    let mut lattice = Lattice::start_for_apps().await?;
    let (old_seed, (_, new_seed)) = (lattice.seed.clone(), ClusterKey::generate()?);
    let image = ferry_tests::build_component("hello")?.display().to_string();
    let manifest = format!(
        "apiVersion: core.oam.dev/v1beta1\nkind: Application\nmetadata:\n  name: keyed\n  annotations:\n    version: v1\nspec:\n  components:\n    - name: greet\n      type: component\n      properties:\n        image: file://{image}\n"
    );
    lattice.deploy(&manifest).await?;
    let bins = ferry_tests::bin_dir()?;
    let allow = ["--allow-file-dir", bins.as_str()];

    // A host signing with the new key takes over; its reconciler signs the deployment again.
    let (middle, middle_id) = lattice.start_host_keyed(&lattice.url, &new_seed, &[&old_seed], &allow).await?;
    tokio::task::block_in_place(|| lattice.host.terminate(Duration::from_secs(15)));
    let start = tokio::time::Instant::now();
    while hosts_running(&lattice, "keyed-greet").await? != vec![middle_id.clone()] {
        anyhow::ensure!(start.elapsed() < Duration::from_secs(30), "the application never moved to the new host");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // A host on the new key alone still sees the deployment: its reconciler places it there.
    let (_last, last_id) = lattice.start_host_keyed(&lattice.url, &new_seed, &[], &allow).await?;
    stop_all(vec![middle]).await;
    let start = tokio::time::Instant::now();
    while hosts_running(&lattice, "keyed-greet").await? != vec![last_id.clone()] {
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(30),
            "a host on the new key alone never ran the application deployed under the old one"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Ok(())
}
