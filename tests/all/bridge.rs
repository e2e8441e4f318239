//! The gRPC sidecar bridge end to end, key-value and the bridge's life cycle: component → host
//! → NATS → ferry-provider-bridge → gRPC → a provider written in Python or Node.js (the
//! examples, as shipped) → SQLite or a journal; a foreign process killed, restarted, rejecting
//! a link, stopped with the bridge.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use ferry_tests::{Lattice, Process, node, python, repo_path};
use serde_json::json;

use crate::{
    health::health_of,
    keyvalue::{exercise_store, kv_link},
};

pub(crate) const BRIDGE: &str = "ferry-provider-bridge";

/// A path as an argument.
pub(crate) fn text(path: &Path) -> String {
    path.display().to_string()
}

/// The Python key-value example's command line.
fn python_kv(extra: &[&str]) -> anyhow::Result<Vec<String>> {
    let script = repo_path("examples/python-keyvalue/provider.py");
    Ok([vec![text(&python()?), text(&script)], extra.iter().map(|s| (*s).to_owned()).collect()].concat())
}

/// A value stored in the Python example's SQLite file, read with Python's own sqlite3.
fn sqlite_value(db: &Path, bucket: &str, key: &str) -> anyhow::Result<String> {
    let out = std::process::Command::new(python()?)
        .args(["-c", "import sqlite3, sys; r = sqlite3.connect(sys.argv[1]).execute('select value from kv where bucket=? and key=?', (sys.argv[2], sys.argv[3])).fetchone(); print(r and r[0].decode())"])
        .args([text(db).as_str(), bucket, key])
        .output()?;
    anyhow::ensure!(out.status.success(), "sqlite3 read failed: {}", String::from_utf8_lossy(&out.stderr));
    Ok(String::from_utf8(out.stdout)?.trim().to_owned())
}

/// A bridge (`kv-py`) that starts the Python example on `db`, with the test component `kvc`
/// linked to it by default.
async fn python_behind_bridge(lattice: &Lattice, db: &Path) -> anyhow::Result<Process> {
    let mut args = vec!["--exec".to_owned()];
    args.extend(python_kv(&[])?);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let bridge = lattice.start_provider_env(BRIDGE, "kv-py", &args, &[("KV_SQLITE_PATH", &text(db))]).await?;
    lattice.start_component("kv-http", "kvc", &[]).await?;
    lattice.link(kv_link("kvc", "kv-py", "default", &[])).await?;
    Ok(bridge)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_python_keyvalue_provider_behind_the_bridge_passes_the_keyvalue_tests() -> anyhow::Result<()> {
    let lattice = Lattice::start().await?;
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("kv.sqlite3");
    let _bridge = python_behind_bridge(&lattice, &db).await?;
    exercise_store(&lattice, "kvc").await?;

    // The data is really in the provider's SQLite file.
    assert_eq!(sqlite_value(&db, "b", "counter")?, "7");
    assert_eq!(sqlite_value(&db, "b", "k001")?, "v1");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_node_keyvalue_provider_behind_the_bridge_passes_the_keyvalue_tests() -> anyhow::Result<()> {
    let lattice = Lattice::start().await?;
    let dir = tempfile::tempdir()?;
    let journal = dir.path().join("kv.jsonl");
    let script = text(&repo_path("examples/node-keyvalue/provider.js"));
    let node = text(&node("node-keyvalue")?);
    // Over TCP this time: the bridge tells the process the address it chose.
    let address = format!("127.0.0.1:{}", ferry_tests::free_port()?);
    let args = ["--connect", address.as_str(), "--exec", node.as_str(), script.as_str()];
    let mut bridge =
        lattice.start_provider_env(BRIDGE, "kv-node", &args, &[("KV_JOURNAL_PATH", &text(&journal))]).await?;
    lattice.start_component("kv-http", "kvc", &[]).await?;
    lattice.link(kv_link("kvc", "kv-node", "default", &[])).await?;
    exercise_store(&lattice, "kvc").await?;

    // What it stored survives the process: the bridge restarts it, it replays its journal.
    let pid = child_pid(&bridge, 1)?;
    kill9(pid)?;
    bridge.wait_for_log("the bridged provider exited", Duration::from_secs(10)).await?;
    let value = eventually(&lattice, "kvc", json!({"op": "get", "bucket": "b", "key": "counter"})).await?;
    assert_eq!(value, json!("7"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_foreign_process_fails_calls_fast_and_its_restart_restores_service() -> anyhow::Result<()> {
    // A long RPC timeout: a call that waited for it instead of failing fast would show.
    let rpc_timeout = Duration::from_secs(20);
    let lattice = Lattice::start_with_timeout(rpc_timeout).await?;
    let dir = tempfile::tempdir()?;
    let socket = format!("unix:{}", dir.path().join("kv.sock").display());
    let db = text(&dir.path().join("kv.sqlite3"));
    let start_python = || -> anyhow::Result<Process> {
        let command = python_kv(&["--listen", &socket, "--database", &db])?;
        let mut command_line = std::process::Command::new(&command[0]);
        command_line.args(&command[1..]);
        Process::spawn("python-kv", command_line)
    };
    let mut foreign = start_python()?;
    foreign.wait_for_log("serving on", Duration::from_secs(20)).await?;
    let _bridge =
        lattice.start_provider_with(BRIDGE, "kv-py", &["--connect", &socket, "--health-interval-ms", "200"]).await?;
    lattice.start_component("kv-http", "kvc", &[]).await?;
    lattice.link(kv_link("kvc", "kv-py", "default", &[])).await?;
    lattice.ok("kvc", json!({"op": "set", "bucket": "b", "key": "k", "value": "before"})).await?;
    assert!(health_of(&lattice, "kv-py").await?.first().is_some_and(|h| h.healthy), "healthy while it runs");

    // Calls in flight while the process dies: every one ends, none waits for the RPC timeout.
    let hammer = || async {
        let (until, mut longest) = (Instant::now() + Duration::from_secs(2), Duration::ZERO);
        while Instant::now() < until {
            let started = Instant::now();
            let _ = lattice.call("kvc", json!({"op": "get", "bucket": "b", "key": "k"})).await;
            longest = longest.max(started.elapsed());
        }
        longest
    };
    let kill = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        foreign.kill();
    };
    let (longest, ()) = tokio::join!(futures::future::join_all((0..4).map(|_| hammer())), kill);
    let longest = longest.into_iter().max().unwrap_or_default();
    assert!(longest < Duration::from_secs(5), "a call in flight hung for {longest:?}");

    for _ in 0..3 {
        let started = Instant::now();
        let (status, answer) = lattice.call("kvc", json!({"op": "get", "bucket": "b", "key": "k"})).await?;
        assert_eq!(status, 500, "{answer}");
        let error = answer["error"].as_str().unwrap_or_default();
        assert!(error.starts_with("unavailable:"), "a dead foreign process is `unavailable`: {error}");
        assert!(started.elapsed() < Duration::from_secs(2), "failing took {:?}", started.elapsed());
    }
    let health = health_of(&lattice, "kv-py").await?;
    assert!(health.first().is_some_and(|h| !h.healthy), "health must turn failed: {health:?}");

    // Started again (a new instance): the bridge finds it, hands it the link, calls work, and
    // the value written before is still there.
    let _foreign = start_python()?;
    let value = eventually(&lattice, "kvc", json!({"op": "get", "bucket": "b", "key": "k"})).await?;
    assert_eq!(value, json!("before"));
    assert!(health_of(&lattice, "kv-py").await?.first().is_some_and(|h| h.healthy), "healthy again");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_bridge_restarts_what_it_execs_rejects_what_the_process_rejects_and_stops_it() -> anyhow::Result<()> {
    let lattice = Lattice::start().await?;
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("kv.sqlite3");
    let mut bridge = python_behind_bridge(&lattice, &db).await?;
    lattice.ok("kvc", json!({"op": "set", "bucket": "b", "key": "k", "value": "kept"})).await?;

    // The process's refusal of a link is the lattice's link_set_failed, with its reason.
    lattice.config("nowhere", &[("database", "/nonexistent/dir/kv.sqlite3")]).await?;
    let refused = lattice.try_link(kv_link("kvc", "kv-py", "elsewhere", &["nowhere"])).await?;
    assert!(!refused.success, "the process rejects a database it cannot open: {}", refused.message);
    let why = format!("{:?}", refused.data.as_ref().map(|set| &set.providers));
    assert!(why.contains("cannot open the database"), "the reason reaches the caller: {why}");
    let (_, answer) = lattice.call("kvc", json!({"op": "get", "bucket": "b", "key": "k", "link": "elsewhere"})).await?;
    assert!(answer["error"].as_str().unwrap_or_default().starts_with("not-linked:"), "{answer}");

    // Killed: the bridge starts it again and hands it its links; the bridge itself stays.
    let first = child_pid(&bridge, 1)?;
    kill9(first)?;
    bridge.wait_for_log("the bridged provider exited", Duration::from_secs(10)).await?;
    assert_eq!(eventually(&lattice, "kvc", json!({"op": "get", "bucket": "b", "key": "k"})).await?, json!("kept"));
    let second = child_pid(&bridge, 2)?;
    assert_ne!(first, second, "a new process serves");

    // Stopping the bridge stops what it started.
    assert!(bridge.terminate(Duration::from_secs(15)), "the bridge stops on SIGTERM");
    assert!(!Path::new(&format!("/proc/{second}")).exists(), "the process the bridge started is gone");
    assert!(bridge.logs().contains("stopped"), "{}", bridge.logs());
    Ok(())
}

/// The pid of the `nth` process the bridge started, from its log.
fn child_pid(bridge: &Process, nth: usize) -> anyhow::Result<u32> {
    let logs = bridge.logs();
    let line = logs
        .lines()
        .filter(|l| l.contains("started the bridged provider"))
        .nth(nth - 1)
        .ok_or_else(|| anyhow::anyhow!("no start number {nth} in the bridge's log:\n{logs}"))?;
    let pid = line.split("pid=").nth(1).and_then(|rest| rest.split_whitespace().next()).unwrap_or_default();
    Ok(pid.parse()?)
}

fn kill9(pid: u32) -> anyhow::Result<()> {
    let status = std::process::Command::new("kill").args(["-9", &pid.to_string()]).status()?;
    anyhow::ensure!(status.success(), "kill -9 {pid} failed");
    Ok(())
}

/// The component's answer to `command` once it succeeds, trying for up to 15 s.
async fn eventually(
    lattice: &Lattice,
    component: &str,
    command: serde_json::Value,
) -> anyhow::Result<serde_json::Value> {
    let until = Instant::now() + Duration::from_secs(15);
    loop {
        match lattice.ok(component, command.clone()).await {
            Ok(value) => return Ok(value),
            Err(err) if Instant::now() > until => return Err(err.context("service did not come back within 15 s")),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}
