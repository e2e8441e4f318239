//! `ferry up`: from nothing (no NATS running) to a served sample component (pulled from a
//! registry), and back to nothing on Ctrl-C.

use std::{process::Command, time::Duration};

use ferry_tests::{
    Process, RegistryServer, binary, build_example, free_port,
    http::{empty, fetch, request},
};
use hyper::StatusCode;

/// The children `ferry up` reported starting, as (name, pid).
fn children(logs: &str) -> Vec<(String, u32)> {
    logs.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("ferry up: started ")?;
            let (name, pid) = rest.rsplit_once(" (pid ")?;
            Some((name.to_owned(), pid.trim_end_matches(')').parse().ok()?))
        })
        .collect()
}

/// Whether `pid` is a live process (a zombie counts as gone).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| stat.rsplit_once(") ").is_some_and(|(_, rest)| !rest.starts_with('Z')))
}

/// Kills whatever is left of the children if the test fails half way.
struct Reaper(Vec<u32>);

impl Drop for Reaper {
    fn drop(&mut self) {
        for pid in &self.0 {
            if alive(*pid) {
                let _ = Command::new("kill").arg("-KILL").arg(pid.to_string()).status();
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn ferry_up_starts_from_nothing_serves_and_stops_every_child_on_sigint() -> anyhow::Result<()> {
    let wasm = build_example("http-counter")?;
    // The component comes from a registry: `ferry up` hands the reference to its host.
    let registry = RegistryServer::start(None).await?;
    let image = format!("oci://{}/samples/counter:1.0", registry.address);
    let pushed = Command::new(binary("ferry")?)
        .args(["push", &image])
        .arg(&wasm)
        .args(["--allow-insecure-registry", &registry.address])
        .output()?;
    assert!(pushed.status.success(), "{}", String::from_utf8_lossy(&pushed.stderr));
    let cache = tempfile::tempdir()?;
    let (nats_port, http_port) = (free_port()?, free_port()?);
    let state = std::env::temp_dir().join(format!("ferry-up-test-{}-{nats_port}", std::process::id()));
    let http = format!("127.0.0.1:{http_port}").parse()?;
    assert!(std::net::TcpStream::connect(("127.0.0.1", nats_port)).is_err(), "something already runs on the port");

    let mut command = Command::new(binary("ferry")?);
    command
        .args(["up", "--lattice", "uptest", "--nats-url", &format!("nats://127.0.0.1:{nats_port}")])
        .args(["--http-address", &format!("127.0.0.1:{http_port}"), "--state-dir"])
        .arg(&state)
        .args(["--component", &image, "--allow-insecure-registry", &registry.address, "--oci-cache"])
        .arg(cache.path());
    let mut up = Process::spawn("ferry-up", command)?;
    up.wait_for_log("Ferry is up", Duration::from_secs(60)).await?;
    let started = children(&up.logs());
    let _reaper = Reaper(started.iter().map(|(_, pid)| *pid).collect());
    assert!(up.logs().contains(&format!("the host pulls {image}")), "{}", up.logs());
    let names: Vec<&str> = started.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(
        names,
        ["nats-server", "keyvalue provider", "http-server provider", "messaging provider", "blobstore provider"],
        "{}",
        up.logs()
    );

    // The sample counts page views in key-value, through both providers.
    for expected in ["viewed 1 time.", "viewed 2 times."] {
        let (status, _, body) = fetch(http, request("GET", "localhost", "/hello", empty())?).await?;
        let body = String::from_utf8_lossy(&body);
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(body.contains(expected), "{body:?} does not say {expected:?}");
    }

    // Its NATS admits only the keys `ferry up` made (`ferry nats-config`), one per process;
    // `ferry ctl` reaches the lattice with what `ferry up` wrote to .ferry/env, signing as its
    // operator.
    let open = async_nats::connect(format!("nats://127.0.0.1:{nats_port}")).await;
    assert!(open.is_err(), "ferry up's NATS admitted a client without a key");
    let identities = state.join("identities");
    for seed in
        ["host.nk", "ctl.nk", "providers/keyvalue.nk", "providers/http-server.nk", "providers/keyvalue.store.nk"]
    {
        let seed = std::fs::read_to_string(identities.join(seed))?;
        assert!(seed.starts_with("SU"), "{seed:?}");
        assert!(!up.logs().contains(seed.trim()), "a seed reached ferry up's log");
    }
    let env_file = state.join("env");
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(std::fs::metadata(&env_file)?.permissions().mode() & 0o777, 0o600);
    let mut ctl = Command::new(binary("ferry")?);
    ctl.args(["ctl", "component", "list"]).env_remove("FERRY_OPERATOR_SEED");
    for line in std::fs::read_to_string(&env_file)?.lines() {
        let (key, value) = line.split_once('=').expect("KEY=value");
        ctl.env(key, value);
    }
    let output = ctl.output()?;
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(table.lines().any(|l| l.split_whitespace().nth(1) == Some("counter")), "{table}");

    up.send_sigint();
    let exit = up.wait_exit(Duration::from_secs(40)).await;
    assert!(exit.is_some_and(|s| s.success()), "ferry up did not exit cleanly: {exit:?}\n{}", up.logs());
    for (name, pid) in &started {
        assert!(!alive(*pid), "{name} (pid {pid}) is still running after ferry up exited");
    }
    // Each child stopped when asked (providers: stdin closed, NATS: SIGTERM); none needed the
    // SIGKILL that follows a stuck stop.
    assert!(!up.logs().contains("killed after"), "a child had to be killed:\n{}", up.logs());
    assert!(std::net::TcpStream::connect(("127.0.0.1", http_port)).is_err(), "HTTP port still open");
    assert!(std::net::TcpStream::connect(("127.0.0.1", nats_port)).is_err(), "NATS port still open");
    let _ = std::fs::remove_dir_all(&state);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn ferry_up_serves_the_sample_from_a_bridged_python_keyvalue_provider() -> anyhow::Result<()> {
    let wasm = build_example("http-counter")?;
    let (nats_port, http_port) = (free_port()?, free_port()?);
    let state = tempfile::tempdir()?;
    let db = state.path().join("kv.sqlite3");
    let http = format!("127.0.0.1:{http_port}").parse()?;
    let python = ferry_tests::python()?;
    let script = ferry_tests::repo_path("examples/python-keyvalue/provider.py");

    let mut command = Command::new(binary("ferry")?);
    command
        .args(["up", "--lattice", "upbridge", "--nats-url", &format!("nats://127.0.0.1:{nats_port}")])
        .args(["--http-address", &format!("127.0.0.1:{http_port}"), "--state-dir"])
        .arg(state.path())
        .arg("--component")
        .arg(&wasm)
        .arg("--keyvalue-bridge")
        .arg(format!("{} {}", python.display(), script.display()))
        .env("KV_SQLITE_PATH", &db);
    let mut up = Process::spawn("ferry-up-bridge", command)?;
    up.wait_for_log("Ferry is up", Duration::from_secs(60)).await?;
    let started = children(&up.logs());
    let _reaper = Reaper(started.iter().map(|(_, pid)| *pid).collect());
    assert!(started.iter().any(|(name, _)| name == "bridged keyvalue provider"), "{}", up.logs());

    for expected in ["viewed 1 time.", "viewed 2 times."] {
        let (status, _, body) = fetch(http, request("GET", "localhost", "/hello", empty())?).await?;
        let body = String::from_utf8_lossy(&body);
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(body.contains(expected), "{body:?} does not say {expected:?}");
    }
    // The count is in the Python provider's SQLite file.
    let count = Command::new(&python)
        .args([
            "-c",
            "import sqlite3, sys; print(sqlite3.connect(sys.argv[1]).execute('select count(*) from kv').fetchone()[0])",
        ])
        .arg(&db)
        .output()?;
    assert_eq!(String::from_utf8_lossy(&count.stdout).trim(), "1", "{}", String::from_utf8_lossy(&count.stderr));

    up.send_sigint();
    let exit = up.wait_exit(Duration::from_secs(40)).await;
    assert!(exit.is_some_and(|s| s.success()), "ferry up did not exit cleanly: {exit:?}\n{}", up.logs());
    let script = script.display().to_string();
    let leftover = std::fs::read_dir("/proc")?
        .filter_map(|entry| std::fs::read(entry.ok()?.path().join("cmdline")).ok())
        .filter(|cmdline| String::from_utf8_lossy(cmdline).contains(&script))
        .count();
    assert_eq!(leftover, 0, "the Python provider outlived ferry up:\n{}", up.logs());
    Ok(())
}
