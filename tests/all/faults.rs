//! Faults under load: a bounded stream of state-changing calls, a process killed with SIGKILL in
//! the middle of it, and an account of every call afterwards. Each call sets its own key, so the
//! store tells which calls ran: none that succeeded may be missing (lost), none reported as never
//! run may be present, and none may hang. The figures each test prints are the ones recorded in
//! docs/operations.md.

use std::{
    collections::{BTreeMap, HashSet},
    sync::Arc,
    time::Duration,
};

use ferry_proto::{ErrorKind, ctl::LinkGetCommand, delivery::PATIENCE, link::Link};
use ferry_tests::{Lattice, TEST_CLIENT_ID};
use serde_json::json;
use tokio::time::Instant;

use crate::keyvalue::kv_link;

const KV: &str = "ferry-provider-keyvalue";

/// Concurrent callers.
const WORKERS: usize = 8;
/// How long the callers start new calls.
pub(crate) const STREAM: Duration = Duration::from_secs(6);
/// When the fault is injected, from the start of the stream.
const FAULT_AT: Duration = Duration::from_secs(2);
/// A call not ended by then hangs: well past every deadline a call can have here.
const HANG: Duration = Duration::from_secs(60);

/// How one call ended, as its caller saw it.
#[derive(Debug, Clone, PartialEq)]
enum Ended {
    Succeeded,
    /// With a typed error of this kind, and its message.
    Failed(ErrorKind, String),
    Hung,
}

/// One call of the stream.
#[derive(Debug)]
pub(crate) struct Call {
    key: String,
    started: Instant,
    took: Duration,
    ended: Ended,
}

/// The set command of call `key`, through component `component`; how it ended. A capability
/// error the component reports (status 500, `{"error": "kind: …"}`) counts as failed with that
/// kind.
async fn set(lattice: &Lattice, component: &str, key: &str) -> Ended {
    let command = json!({"op": "set", "bucket": "b", "key": key, "value": "x"});
    match tokio::time::timeout(HANG, lattice.call(component, command)).await {
        Err(_) => Ended::Hung,
        Ok(Err(err)) => Ended::Failed(err.kind, err.message),
        Ok(Ok((200, _))) => Ended::Succeeded,
        Ok(Ok((_, answer))) => {
            let message = answer["error"].as_str().unwrap_or_default();
            let kind = message.split(':').next().unwrap_or_default();
            let kind = serde_json::from_value(json!(kind.replace('-', "_"))).unwrap_or(ErrorKind::Unknown);
            Ended::Failed(kind, message.to_owned())
        }
    }
}

/// Drive [`WORKERS`] callers of `component` for `stream`, inject `fault` at [`FAULT_AT`], and
/// return every call with the instant the fault began.
pub(crate) async fn stream_with_fault<T>(
    lattice: &Arc<Lattice>,
    component: &str,
    stream: Duration,
    fault: impl Future<Output = T>,
) -> anyhow::Result<(Vec<Call>, Instant, T)> {
    let start = Instant::now();
    let mut workers = Vec::new();
    for worker in 0..WORKERS {
        let (lattice, component) = (lattice.clone(), component.to_owned());
        workers.push(tokio::spawn(async move {
            let mut calls = Vec::new();
            for seq in 0u64.. {
                if start.elapsed() >= stream {
                    break;
                }
                let key = format!("w{worker}-{seq}");
                let started = Instant::now();
                let ended = set(&lattice, &component, &key).await;
                calls.push(Call { key, started, took: started.elapsed(), ended });
            }
            calls
        }));
    }
    tokio::time::sleep(FAULT_AT).await;
    let fault_at = Instant::now();
    let fault = fault.await;
    let mut calls = Vec::new();
    for worker in workers {
        calls.extend(worker.await?);
    }
    Ok((calls, fault_at, fault))
}

/// What became of the calls of one run.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    attempted: usize,
    succeeded: usize,
    failed: BTreeMap<&'static str, usize>,
    /// The first message of each kind of failure.
    first_errors: BTreeMap<&'static str, String>,
    hung: usize,
    /// Succeeded, yet their key is not in the store.
    lost: usize,
    /// Failed as never run (unavailable), yet their key is in the store.
    ran_though_not_run: usize,
    /// Failed as interrupted, and their key is in the store (the call ran; its answer was lost).
    interrupted_but_ran: usize,
    /// From the fault to the end of the first call started after it that succeeded.
    pub(crate) back_after: Option<Duration>,
    /// Calls that were sent again or reported interrupted: those the fault caught in flight.
    caught: usize,
    slowest: Duration,
    /// From the first call's start to the last one's end.
    lasted: Duration,
}

impl Tally {
    pub(crate) fn of(calls: &[Call], fault_at: Instant, stored: &HashSet<String>) -> Self {
        let mut tally = Self { attempted: calls.len(), ..Self::default() };
        if let (Some(first), Some(last)) =
            (calls.iter().map(|c| c.started).min(), calls.iter().map(|c| c.started + c.took).max())
        {
            tally.lasted = last.duration_since(first);
        }
        for call in calls {
            tally.slowest = tally.slowest.max(call.took);
            tally.caught += usize::from(call.took >= PATIENCE || matches!(call.ended, Ended::Failed(..)));
            let present = stored.contains(&call.key);
            match &call.ended {
                Ended::Succeeded => {
                    tally.succeeded += 1;
                    tally.lost += usize::from(!present);
                    if call.started >= fault_at {
                        let back = (call.started + call.took).duration_since(fault_at);
                        tally.back_after = Some(tally.back_after.map_or(back, |b| b.min(back)));
                    }
                }
                Ended::Failed(kind, message) => {
                    *tally.failed.entry(kind.as_wit_prefix()).or_default() += 1;
                    tally.first_errors.entry(kind.as_wit_prefix()).or_insert_with(|| message.clone());
                    tally.ran_though_not_run += usize::from(*kind == ErrorKind::Unavailable && present);
                    tally.interrupted_but_ran += usize::from(*kind == ErrorKind::Interrupted && present);
                }
                Ended::Hung => tally.hung += 1,
            }
        }
        tally
    }

    /// One line of figures, as recorded in docs/operations.md.
    fn print(&self, fault: &str) {
        let back = self.back_after.map_or("never".to_owned(), |b| format!("{} ms", b.as_millis()));
        println!(
            "FAULT {fault}: {} calls by {WORKERS} callers over {:.1} s: succeeded {}, failed {:?} (interrupted but ran: {}), lost {}, hung {}; caught in flight {}; service back {back} after the fault; slowest call {} ms",
            self.attempted,
            self.lasted.as_secs_f64(),
            self.succeeded,
            self.failed,
            self.interrupted_but_ran,
            self.lost,
            self.hung,
            self.caught,
            self.slowest.as_millis(),
        );
        for (kind, message) in &self.first_errors {
            println!("  first {kind} error: {message}");
        }
    }

    /// What every fault test holds to: nothing lost, nothing hung, nothing reported as never run
    /// that ran, only interruptions as failures, and service back.
    pub(crate) fn check(&self, fault: &str) {
        self.check_allowing(fault, &[ErrorKind::Interrupted]);
    }

    /// [`Tally::check`], with failures of the kinds `allowed`.
    pub(crate) fn check_allowing(&self, fault: &str, allowed: &[ErrorKind]) {
        self.print(fault);
        assert_eq!(self.lost, 0, "{fault}: calls reported as succeeded did not run: {self:?}");
        assert_eq!(self.hung, 0, "{fault}: {self:?}");
        assert_eq!(self.ran_though_not_run, 0, "{fault}: calls reported as never run ran: {self:?}");
        assert!(
            self.failed.keys().all(|kind| allowed.iter().any(|a| a.as_wit_prefix() == *kind)),
            "{fault}: only failures of the kinds {allowed:?} are expected: {self:?}"
        );
        assert!(self.back_after.is_some(), "{fault}: no call succeeded after the fault: {self:?}");
        assert!(self.attempted > 100, "{fault}: too few calls to show anything: {self:?}");
    }
}

/// Drive the stream against `kvc` with `fault` injected and account for every call.
async fn tally_of_fault(lattice: Lattice, stream: Duration, fault: impl Future<Output = ()>) -> anyhow::Result<Tally> {
    let lattice = Arc::new(lattice);
    let (calls, fault_at, ()) = stream_with_fault(&lattice, "kvc", stream, fault).await?;
    let stored = stored_keys(&lattice, "kvc").await?;
    Ok(Tally::of(&calls, fault_at, &stored))
}

/// A lattice whose `kvc` component (on its one host) uses two instances of the key-value
/// provider; returns the lattice and the two instances.
async fn with_two_kv_instances() -> anyhow::Result<(Lattice, ferry_tests::Process, ferry_tests::Process)> {
    let lattice = Lattice::start_with_timeout(Duration::from_secs(10)).await?;
    let first = lattice.start_provider(KV, "kv").await?;
    let second = lattice.start_provider(KV, "kv").await?;
    lattice.start_component("kv-http", "kvc", &[]).await?;
    lattice.link(kv_link("kvc", "kv", "default", &[])).await?;
    lattice.ok("kvc", json!({"op": "set", "bucket": "b", "key": "warm", "value": "x"})).await?;
    Ok((lattice, first, second))
}

/// Every key the component's bucket holds.
pub(crate) async fn stored_keys(lattice: &Lattice, component: &str) -> anyhow::Result<HashSet<String>> {
    let listed = lattice.ok(component, json!({"op": "list", "bucket": "b"})).await?;
    Ok(serde_json::from_value(listed["keys"].clone())?)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_host_killed_under_load_loses_no_call_and_its_peer_carries_on() -> anyhow::Result<()> {
    let lattice = Lattice::start_with_timeout(Duration::from_secs(10)).await?;
    let (mut second, second_id) = lattice.start_host().await?;
    let _provider = lattice.start_provider(KV, "kv").await?;
    lattice.start_component_on("kv-http", "kvc", &[], Some(&lattice.host_id)).await?;
    lattice.start_component_on("kv-http", "kvc", &[], Some(&second_id)).await?;
    lattice.link(Link::new(TEST_CLIENT_ID, "kvc", "wasi", "http", vec!["incoming-handler".into()])).await?;
    lattice.link(kv_link("kvc", "kv", "default", &[])).await?;
    lattice.ok("kvc", json!({"op": "set", "bucket": "b", "key": "warm", "value": "x"})).await?;

    tally_of_fault(lattice, STREAM, async { second.kill() }).await?.check("host SIGKILL");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_provider_instance_killed_under_load_loses_no_call_and_the_other_carries_on() -> anyhow::Result<()> {
    let (lattice, _first, mut second) = with_two_kv_instances().await?;
    tally_of_fault(lattice, STREAM, async { second.kill() }).await?.check("provider instance SIGKILL");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_provider_instance_frozen_then_killed_fails_only_the_calls_it_took_up() -> anyhow::Result<()> {
    let (lattice, _first, mut second) = with_two_kv_instances().await?;
    // Frozen first (SIGSTOP), as a machine that hangs before it dies: NATS goes on handing it
    // calls, some taken up and some never read, until it is killed half a second later.
    let fault = async {
        second.pause();
        tokio::time::sleep(Duration::from_millis(500)).await;
        second.kill();
    };
    let tally = tally_of_fault(lattice, STREAM, fault).await?;
    tally.check("provider instance SIGSTOP, SIGKILL 0.5 s later");
    assert!(tally.caught > 0, "the frozen instance held calls, which were sent again or failed: {tally:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn nats_killed_and_restarted_under_load_loses_no_link_config_or_key() -> anyhow::Result<()> {
    let lattice = Lattice::start_with_timeout(Duration::from_secs(10)).await?;
    let _provider = lattice.start_provider(KV, "kv").await?;
    lattice.start_component("kv-http", "kvc", &[]).await?;
    lattice.config("kept", &[("answer", "42")]).await?;
    lattice.link(kv_link("kvc", "kv", "default", &[])).await?;
    lattice.ok("kvc", json!({"op": "set", "bucket": "b", "key": "warm", "value": "x"})).await?;

    let lattice = Arc::new(lattice);
    let nats = lattice.nats.clone();
    let (calls, fault_at, restarted) = stream_with_fault(&lattice, "kvc", STREAM * 2, nats.crash_and_restart()).await?;
    let _restarted = restarted?;
    let stored = stored_keys(&lattice, "kvc").await?;
    let tally = Tally::of(&calls, fault_at, &stored);
    // A key-value write the provider was making to JetStream when the server died fails as the
    // backend's error; the others are sent again once the clients are back.
    let allowed = [ErrorKind::Interrupted, ErrorKind::ProviderError, ErrorKind::Unavailable, ErrorKind::Timeout];
    tally.check_allowing("nats-server SIGKILL and restart", &allowed);
    let back = tally.back_after.unwrap_or(Duration::MAX);
    assert!(back < Duration::from_secs(5), "service back after {back:?}: {tally:?}");

    // Nothing the lattice stores was lost: the config, both links, the key written before.
    let config = lattice.ctl.config_get("r", "kept", None).await?;
    assert!(config.success, "{config:?}");
    assert_eq!(config.data, Some([("answer".to_owned(), "42".to_owned())].into()));
    let links = lattice.ctl.send(&LinkGetCommand { request_id: "r".into(), id: Some("kvc".into()) }, None).await?;
    assert_eq!(links.data.map_or(0, |l| l.len()), 2, "the test client's link and the key-value link");
    assert!(stored.contains("warm"));
    Ok(())
}
