//! No secret in the clear where it does not belong: credentials in URLs never reach logs, link
//! acks, control replies or events; config values are not logged; the CLI takes secrets from
//! files, stdin and the environment; a messaging link cannot subscribe to every reply inbox.

use std::{process::Command, time::Duration};

use ferry_proto::{ctl::LinkPutCommand, link::Link};
use ferry_tests::{Lattice, binary, free_port};
use futures::StreamExt as _;

const SECRET: &str = "hunter2-s3cret";

/// Put `link` and return the control reply as text (message and data).
async fn put_link(lattice: &Lattice, link: Link) -> anyhow::Result<(bool, String)> {
    let resp = lattice.ctl.send(&LinkPutCommand { request_id: "secret".into(), link }, None).await?;
    Ok((resp.success, format!("{} {:?}", resp.message, resp.data)))
}

#[tokio::test(flavor = "multi_thread")]
async fn credentials_in_urls_and_config_values_never_reach_logs_replies_or_events() -> anyhow::Result<()> {
    // Every process of every test is scanned for it from now on (ferry_tests::leaks).
    ferry_tests::leaks::register_secret(SECRET);
    let lattice = Lattice::start().await?;
    let mut events = lattice.raw.subscribe(format!("ferry.evt.{}.>", lattice.name)).await?;
    ferry_lattice::nats::sync_subscriptions(&lattice.raw).await?;
    let kv = lattice.start_provider("ferry-provider-keyvalue", "kv").await?;
    let msg = lattice.start_provider("ferry-provider-messaging", "msg").await?;
    lattice.start_component("kv-http", "kvc", &["app-secrets"]).await?;

    // Nothing listens on this port: both links fail, and say so without the password.
    let dead = format!("nats://ferry:{SECRET}@127.0.0.1:{}", free_port()?);
    lattice.config("kv-remote", &[("backend", "nats"), ("nats_url", &dead)]).await?;
    lattice.config("msg-remote", &[("cluster_uris", &dead)]).await?;
    lattice.config("app-secrets", &[("password", SECRET)]).await?;

    let mut kv_link = Link::new("kvc", "kv", "wasi", "keyvalue", vec!["store".into()]);
    kv_link.target_config = vec!["kv-remote".into()];
    let (ok, reply) = put_link(&lattice, kv_link).await?;
    assert!(!ok, "the link to a dead NATS must fail: {reply}");
    assert!(reply.contains("***@127.0.0.1"), "the reply should still say where: {reply}");
    let mut msg_link = Link::new("kvc", "msg", "wasmcloud", "messaging", vec!["consumer".into()]);
    msg_link.target_config = vec!["msg-remote".into()];
    let (ok, reply) = put_link(&lattice, msg_link).await?;
    assert!(!ok, "the link to a dead NATS must fail: {reply}");
    assert!(!reply.contains(SECRET), "{reply}");

    // The component reads its secret (so the value did travel), and nobody logged it.
    let value = lattice.ok("kvc", serde_json::json!({"op": "config", "key": "password"})).await?;
    assert_eq!(value, serde_json::json!(SECRET));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut seen = Vec::new();
    while let Ok(Some(event)) = tokio::time::timeout(Duration::from_millis(200), events.next()).await {
        seen.push(String::from_utf8_lossy(&event.payload).into_owned());
    }
    assert!(seen.iter().any(|e| e.contains("link_set_failed")), "{seen:?}");
    for (who, text) in
        [("host", lattice.host.logs()), ("kv", kv.logs()), ("msg", msg.logs()), ("events", seen.join("\n"))]
    {
        assert!(!text.contains(SECRET), "{who} shows the secret:\n{text}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cli_takes_secrets_from_files_stdin_and_the_environment() -> anyhow::Result<()> {
    let lattice = Lattice::start().await?;
    let dir = std::env::temp_dir().join(format!("ferry-secrets-{}-{}", std::process::id(), free_port()?));
    std::fs::create_dir_all(&dir)?;
    let file = dir.join("db.env");
    std::fs::write(&file, format!("# database\npassword={SECRET}\nuser=app\n"))?;

    let ctl = |args: &[&str]| {
        let mut command = Command::new(binary("ferry")?);
        command.args(["ctl", "--nats-url", &lattice.nats.url, "--lattice", &lattice.name, "config", "put"]);
        command.args(args).env("FERRY_TEST_TOKEN", "from-env").env("FERRY_OPERATOR_SEED", &lattice.operator_seed);
        let output = command.output()?;
        anyhow::ensure!(output.status.success(), "ferry ctl failed: {}", String::from_utf8_lossy(&output.stderr));
        anyhow::Ok(())
    };
    ctl(&["db", "--from-file", &file.display().to_string(), "--from-env", "token=FERRY_TEST_TOKEN", "mode=plain"])?;
    let got = lattice.ctl.config_get("", "db", None).await?;
    assert!(got.success, "{}", got.message);
    let values = got.data.unwrap_or_default();
    assert_eq!(values["password"], SECRET, "{values:?}");
    assert_eq!(values["user"], "app");
    assert_eq!(values["token"], "from-env");
    assert_eq!(values["mode"], "plain");
    // Asked without a reply key, a host withholds the values: its reply crosses NATS.
    let plain = ferry_proto::ctl::ConfigGetCommand { request_id: "p".into(), name: "db".into(), reply_key: None };
    let withheld = lattice.ctl.send(&plain, None).await?.data.unwrap_or_default();
    assert_eq!(withheld.get("password").map(String::as_str), Some(ferry_proto::ctl::WITHHELD), "{withheld:?}");

    // A host takes its cluster seed from a file.
    let seed_file = dir.join("seed");
    std::fs::write(&seed_file, format!("{}\n", lattice.seed))?;
    let mut command = Command::new(binary("ferry")?);
    command
        .args(["host", "--nats-url", &lattice.nats.url, "--lattice", &lattice.name, "--cluster-seed-file"])
        .arg(&seed_file)
        .env_remove("FERRY_CLUSTER_SEED");
    let mut host = ferry_tests::Process::spawn("seed-file-host", command)?;
    host.wait_for_log("host ready", Duration::from_secs(30)).await?;
    assert!(host.logs().contains(lattice.cluster.public_key()), "{}", host.logs());
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_messaging_link_cannot_subscribe_to_every_reply_inbox() -> anyhow::Result<()> {
    let lattice = Lattice::start().await?;
    let _msg = lattice.start_provider("ferry-provider-messaging", "msg").await?;
    lattice.start_component("messaging-echo", "echo", &[]).await?;
    for pattern in ["_INBOX.>", "_INBOX.*.*"] {
        lattice.config("inbox-subs", &[("subscriptions", pattern)]).await?;
        let mut link = Link::new("msg", "echo", "wasmcloud", "messaging", vec!["handler".into()]);
        link.source_config = vec!["inbox-subs".into()];
        let (ok, reply) = put_link(&lattice, link).await?;
        assert!(!ok, "a subscription to {pattern} must be refused: {reply}");
        assert!(reply.contains("reply inboxes"), "{reply}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn link_config_travels_sealed_to_its_provider() -> anyhow::Result<()> {
    let lattice = Lattice::start().await?;
    let _kv = lattice.start_provider("ferry-provider-keyvalue", "kv").await?;
    lattice.start_component("kv-http", "kvc", &[]).await?;
    // A credential in the link's own NATS URL (the lattice's server, which takes any user).
    let with_password = lattice.nats.url.replacen("nats://", &format!("nats://ferry:{SECRET}@"), 1);
    lattice.config("kv-secret", &[("backend", "nats"), ("nats_url", &with_password)]).await?;
    let mut capture = lattice.raw.subscribe(ferry_proto::subject::link_put(&lattice.name, "kv")?).await?;
    ferry_lattice::nats::sync_subscriptions(&lattice.raw).await?;

    let mut link = Link::new("kvc", "kv", "wasi", "keyvalue", vec!["store".into()]);
    link.target_config = vec!["kv-secret".into()];
    let (ok, reply) = put_link(&lattice, link).await?;
    assert!(ok, "the provider must open the sealed link put: {reply}");
    let captured = tokio::time::timeout(Duration::from_secs(5), capture.next()).await?.expect("a link put");
    assert!(
        !captured.payload.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()),
        "the link put shows the config value on the bus"
    );
    lattice.ok("kvc", serde_json::json!({"op": "set", "bucket": "b", "key": "k", "value": "v"})).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_harness_tap_finds_secrets_in_events_and_control_replies_only() -> anyhow::Result<()> {
    let nats = ferry_tests::NatsServer::start().await?;
    let raw = async_nats::connect(&nats.url).await?;
    let tap = ferry_tests::leaks::Tap::start(&raw).await?;
    ferry_lattice::nats::sync_subscriptions(&raw).await?;
    let (_, seed) = ferry_proto::auth::ClusterKey::generate()?;
    let publisher = async_nats::connect(&nats.url).await?;
    publisher.publish("ferry.evt.test.host_started", format!("{{\"note\":\"{seed}\"}}").into()).await?;
    let reply = serde_json::json!({"request_id": "r", "success": false, "message": format!("bad seed {seed}")});
    publisher.publish("_INBOX.abc.1", serde_json::to_vec(&reply)?.into()).await?;
    // An invocation's answer may carry what the component read (a config value): not scanned.
    publisher.publish("_INBOX.abc.2", seed.clone().into_bytes().into()).await?;
    publisher.publish("ferry.rpc.test.kv", seed.clone().into_bytes().into()).await?;
    ferry_lattice::nats::sync_subscriptions(&publisher).await?;
    let mut found = Vec::new();
    for _ in 0..50 {
        found.extend(tap.take_found());
        if found.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    found.extend(tap.take_found());
    assert_eq!(found.len(), 2, "{found:#?}");
    assert!(found.iter().any(|f| f.contains("in an event on ferry.evt.test.host_started")), "{found:#?}");
    assert!(found.iter().any(|f| f.contains("in a control reply on _INBOX.abc.1")), "{found:#?}");
    assert!(found.iter().all(|f| !f.contains(&seed)), "a find never repeats the secret: {found:#?}");
    Ok(())
}
