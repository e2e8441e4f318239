//! `ferry ctl` over real hosts: every command, tables for people, `--json` for scripts, exit
//! codes (0 done, 1 failed, 2 usage, 3 nobody answered), auctions deciding where a start goes,
//! and bad input refused with nothing changed. And every command on raw NATS with bad input.

use std::{process::Output, time::Duration};

use ferry_proto::ctl::{CommandKind, CtlResponse, HostInventory, LinkGetCommand};
use ferry_tests::{Lattice, Process, binary, build_component};

/// Run `ferry ctl ARGS`; its output.
fn ctl(lattice: &Lattice, args: &[&str]) -> anyhow::Result<Output> {
    Ok(lattice.ctl_command(args)?.output()?)
}

/// Run `ferry ctl ARGS`, which must exit with `code`; its stdout.
fn expect(lattice: &Lattice, args: &[&str], code: i32) -> anyhow::Result<String> {
    let output = ctl(lattice, args)?;
    let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    anyhow::ensure!(
        output.status.code() == Some(code),
        "ferry ctl {args:?} exited {:?}, not {code}\nstdout: {stdout}\nstderr: {stderr}",
        output.status.code()
    );
    Ok(stdout.into_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn every_ctl_command_works_with_tables_json_auctions_and_exit_codes() -> anyhow::Result<()> {
    let lattice = Lattice::start().await?;
    let kv = binary("ferry-provider-keyvalue")?;
    let dir = kv.parent().expect("a directory").display().to_string();
    let (mut second, second_id) = lattice.start_host_with(&["--label", "zone=b", "--allow-file-dir", &dir]).await?;
    let (first_id, kv) = (lattice.host_id.clone(), kv.display().to_string());
    let (echo, hello) = (build_component("http-echo")?, build_component("hello")?);
    let (echo, hello) = (echo.display().to_string(), hello.display().to_string());

    // Hosts, as a table and as JSON.
    let hosts = expect(&lattice, &["get", "hosts"], 0)?;
    assert!(hosts.starts_with("HOST") && hosts.contains(&first_id) && hosts.contains(&second_id), "{hosts}");
    assert!(hosts.contains("zone=b"), "{hosts}");
    let json: Vec<CtlResponse> = serde_json::from_str(&expect(&lattice, &["--json", "get", "hosts"], 0)?)?;
    assert_eq!(json.len(), 2);

    // Labels, on a host named by a prefix of its id.
    expect(&lattice, &["label", "put", &second_id[..10], "tier", "gold"], 0)?;
    assert!(expect(&lattice, &["get", "hosts"], 0)?.contains("tier=gold,zone=b"));
    expect(&lattice, &["label", "del", &second_id[..10], "missing"], 1)?;
    expect(&lattice, &["label", "put", &second_id, "bell", "ding\u{7}"], 1)?;
    expect(&lattice, &["label", "put", &second_id, "bad key", "v"], 1)?;
    assert!(!expect(&lattice, &["get", "hosts"], 0)?.contains("bell"), "a refused label was set");
    expect(&lattice, &["label", "del", &second_id, "tier"], 0)?;

    // A start goes where the auction says; a constraint nobody meets gets no bid.
    let out = expect(&lattice, &["component", "start", &echo, "echo", "--constraint", "zone=b"], 0)?;
    assert!(out.contains(&second_id), "{out}");
    expect(&lattice, &["component", "start", &echo, "other", "--constraint", "zone=nowhere"], 3)?;
    let components = expect(&lattice, &["get", "components"], 0)?;
    assert!(components.contains("echo") && components.contains(&second_id[..12]) && !components.contains("other"));

    // Scale and update reach every host that runs it; an id nobody runs answers 3.
    expect(&lattice, &["component", "scale", "echo", "3"], 0)?;
    expect(&lattice, &["component", "scale", "nobody", "3"], 3)?;
    expect(&lattice, &["component", "update", "echo", &hello], 0)?;
    let inventory: Vec<CtlResponse<ferry_proto::ctl::Inventory>> =
        serde_json::from_str(&expect(&lattice, &["--json", "get", "inventory", &second_id[..8]], 0)?)?;
    let components = &inventory[0].data.as_ref().expect("inventory").components;
    assert_eq!((components[0].max_instances, components[0].digest.len()), (3, 64));
    assert_eq!(components[0].digest, ferry_proto::image::sha256_hex(&std::fs::read(&hello)?), "updated");

    // A provider: only the host that allows binaries bids.
    expect(&lattice, &["provider", "start", "kv", &kv], 0)?;
    let providers = expect(&lattice, &["get", "providers"], 0)?;
    assert!(providers.contains("kv") && providers.contains(&second_id[..12]), "{providers}");
    expect(&lattice, &["provider", "start", "kv2", &kv, "--constraint", "zone=a"], 3)?;

    // Links and config.
    expect(&lattice, &["link", "put", "echo", "kv", "wasi:keyvalue", "--interface", "store"], 0)?;
    let links = expect(&lattice, &["get", "links"], 0)?;
    assert!(links.contains("wasi:keyvalue") && links.contains("store"), "{links}");
    expect(&lattice, &["link", "put", "echo", "kv", "nopackage", "--interface", "store"], 1)?;
    expect(&lattice, &["link", "del", "echo", "kv", "wasi:keyvalue"], 0)?;
    expect(&lattice, &["config", "put", "cfg", "a=1"], 0)?;
    let config = expect(&lattice, &["get", "config", "cfg"], 0)?;
    assert!(config.lines().any(|l| l.split_whitespace().eq(["a", "1"])), "{config}");
    expect(&lattice, &["config", "del", "cfg"], 0)?;
    expect(&lattice, &["get", "config", "cfg"], 1)?;

    // Bad usage is 2, and changed nothing.
    expect(&lattice, &["component", "scale", "echo", "many"], 2)?;
    let components = expect(&lattice, &["get", "components"], 0)?;
    let echo = components.lines().find(|l| l.contains("echo")).expect("echo listed");
    assert_eq!(echo.split_whitespace().nth(2), Some("3"), "{components}");

    // Watch prints events as they happen, and stops on Ctrl-C.
    let mut watch = Process::spawn("ctl-watch", lattice.ctl_command(&["--json", "watch"])?)?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    expect(&lattice, &["label", "put", &second_id, "seen", "yes"], 0)?;
    watch.wait_for_log("labels_changed", Duration::from_secs(10)).await?;
    watch.send_sigint();
    assert!(watch.wait_exit(Duration::from_secs(10)).await.is_some_and(|s| s.success()), "{}", watch.logs());

    // Stops, then the host itself.
    expect(&lattice, &["provider", "stop", "kv"], 0)?;
    expect(&lattice, &["provider", "stop", "kv"], 3)?;
    expect(&lattice, &["component", "stop", "echo"], 0)?;
    assert!(!expect(&lattice, &["get", "components"], 0)?.contains("echo"));
    expect(&lattice, &["host", "stop", &second_id[..10]], 0)?;
    assert!(second.wait_exit(Duration::from_secs(20)).await.is_some_and(|s| s.success()));
    let hosts = expect(&lattice, &["get", "hosts"], 0)?;
    assert!(!hosts.contains(&second_id), "{hosts}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn every_command_on_raw_nats_refuses_malformed_input_and_changes_nothing() -> anyhow::Result<()> {
    let lattice = Lattice::start().await?;
    lattice.start_component_on("http-echo", "echo", &[], Some(&lattice.host_id)).await?;
    lattice.config("cfg", &[("k", "v")]).await?;
    let before = state(&lattice).await?;
    for kind in CommandKind::ALL {
        let subject = ferry_proto::subject::ctl(&lattice.name, kind.resource(), kind.verb(), Some(&lattice.host_id))?;
        for body in [&b"{not json"[..], br#"{"request_id": 7}"#, b"[1, 2]", br#""a string""#] {
            let reply = lattice.ctl.request_raw(subject.clone(), body.to_vec()).await?;
            let reply: CtlResponse = serde_json::from_slice(&reply)?;
            assert!(
                !reply.success && reply.message.starts_with("malformed"),
                "{}.{} took {:?}: {reply:?}",
                kind.resource(),
                kind.verb(),
                String::from_utf8_lossy(body)
            );
        }
    }
    assert_eq!(state(&lattice).await?, before, "malformed commands changed the lattice");
    Ok(())
}

/// What a host runs, the links and the config, read back.
async fn state(lattice: &Lattice) -> anyhow::Result<String> {
    let inventory = lattice.ctl.send(&HostInventory::default(), Some(&lattice.host_id)).await?.data.expect("inventory");
    let links = lattice.ctl.send(&LinkGetCommand::default(), None).await?.data.unwrap_or_default();
    let config = lattice.ctl.config_get("", "cfg", None).await?;
    let components: Vec<_> =
        inventory.components.iter().map(|c| (&c.component_id, c.max_instances, &c.digest)).collect();
    Ok(format!("{components:?} {:?} {:?} {:?}", inventory.host.labels, links, config.data))
}
