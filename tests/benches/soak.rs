//! Ferry's soak run (issue 13): mixed load for a long while against two hosts and two instances
//! of each provider, with a provider instance killed (SIGKILL) and started again every
//! `SOAK_KILL_EVERY` seconds, in turn key-value, blobstore, messaging and http-server.
//!
//! The load, from `SOAK_WORKERS` callers taking turns through four kinds of call:
//!
//! * HTTP: a POST to one of the two http-server instances (alternately) whose `kv-http`
//!   component sets a key of its own;
//! * key-value through the lattice: the same component, called as an http-server would;
//! * blob: a `blob-test` component writes an object of its own, then reads it back;
//! * messaging: a NATS request on `soak.echo.*`, handled by a `messaging-echo` component through
//!   the messaging provider (queue group `soak`), answered on the reply subject.
//!
//! Every 10 s it prints the resident memory of every process; at the end, the calls by kind and
//! outcome, error counts by kind, lost calls (keys and objects of calls that succeeded, missing),
//! and each process's memory growth after warm-up. Exits non-zero when a call was lost or
//! hung, or a host's memory grew past `SOAK_GROWTH_LIMIT_MIB` (default 32) after warm-up
//! (providers are restarted during the run; nats-server holds the data written).
//!
//! Run: `bash scripts/soak.sh` (release build). Environment: `SOAK_SECONDS` (default 600),
//! `SOAK_KILL_EVERY` (default 60), `SOAK_WORKERS` (default 8), `FERRY_NATS_SERVER`.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::{BTreeMap, HashSet},
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use ferry_proto::link::Link;
use ferry_tests::{Lattice, Process, TEST_CLIENT_ID, free_port, http};
use futures::StreamExt as _;
use serde_json::{Value, json};
use tokio::time::Instant;

const KV: &str = "ferry-provider-keyvalue";
const BLOB: &str = "ferry-provider-blobstore";
const MSG: &str = "ferry-provider-messaging";
const HTTP: &str = "ferry-provider-http-server";
/// A call not ended by then hangs.
const HANG: Duration = Duration::from_secs(60);
/// Memory samples taken before this are warm-up.
const WARMUP: Duration = Duration::from_secs(60);

fn env_secs(name: &str, default: u64) -> Duration {
    Duration::from_secs(std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default))
}

/// How one call ended: `ok`, or the kind of its failure.
type Outcome = String;

/// Everything the callers saw, by call kind and outcome; the keys and objects written.
#[derive(Default)]
struct Seen {
    outcomes: BTreeMap<(&'static str, Outcome), u64>,
    /// The first message of each kind of failure, by call kind and outcome.
    examples: BTreeMap<(&'static str, Outcome), String>,
    keys_written: Vec<String>,
    objects_written: Vec<String>,
    hung: u64,
}

/// The provider instances, by provider id, started again as they are killed.
struct Instances {
    lattice: Arc<Lattice>,
    running: Vec<(&'static str, &'static str, Vec<String>, Process)>,
}

impl Instances {
    async fn start(&mut self, bin: &'static str, id: &'static str, args: Vec<String>) -> anyhow::Result<()> {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let process = self.lattice.start_provider_with(bin, id, &refs).await?;
        self.running.push((bin, id, args, process));
        Ok(())
    }

    /// Kill instance `i` with SIGKILL and start it again with the same arguments.
    async fn kill_and_restart(&mut self, i: usize) -> anyhow::Result<&'static str> {
        let (bin, id, args, mut process) = self.running.remove(i);
        process.kill();
        self.start(bin, id, args).await?;
        let last = self.running.pop().expect("just started");
        self.running.insert(i, last);
        Ok(id)
    }
}

/// A failure's kind from a component's `{"error": "kind: …"}` answer.
fn kind_of(answer: &Value) -> String {
    answer["error"].as_str().unwrap_or("unknown").split(':').next().unwrap_or("unknown").to_owned()
}

async fn call(lattice: &Lattice, component: &str, command: Value) -> (Outcome, Value) {
    match tokio::time::timeout(HANG, lattice.call(component, command)).await {
        Err(_) => ("hung".into(), Value::Null),
        Ok(Err(err)) => (err.kind.as_wit_prefix().to_owned(), json!({"error": err.to_string()})),
        Ok(Ok((200, answer))) => ("ok".into(), answer),
        Ok(Ok((_, answer))) => (kind_of(&answer), answer),
    }
}

async fn http_set(address: SocketAddr, key: &str) -> Outcome {
    let body = json!({"op": "set", "bucket": "soak", "key": key, "value": "x"}).to_string();
    let request = match http::request("POST", "localhost", "/", http::full(body)) {
        Ok(request) => request,
        Err(_) => return "bad-request".into(),
    };
    match tokio::time::timeout(HANG, http::fetch(address, request)).await {
        Err(_) => "hung".into(),
        Ok(Err(_)) => "http-connect".into(),
        Ok(Ok((status, _, _))) if status.is_success() => "ok".into(),
        Ok(Ok((status, _, _))) => format!("http-{}", status.as_u16()),
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    // The harness's scan of events and replies for secrets would cost the figures.
    ferry_tests::leaks::no_taps();
    let total = env_secs("SOAK_SECONDS", 600);
    let kill_every = env_secs("SOAK_KILL_EVERY", 60);
    let workers: usize = std::env::var("SOAK_WORKERS").ok().and_then(|v| v.parse().ok()).unwrap_or(8);
    let growth_limit: u64 = std::env::var("SOAK_GROWTH_LIMIT_MIB").ok().and_then(|v| v.parse().ok()).unwrap_or(32);

    let lattice = Arc::new(Lattice::start_with_timeout(Duration::from_secs(10)).await?);
    let (second, second_id) = lattice.start_host().await?;
    let addresses: Vec<SocketAddr> =
        (0..2).map(|_| Ok(format!("127.0.0.1:{}", free_port()?).parse()?)).collect::<anyhow::Result<_>>()?;
    let mut instances = Instances { lattice: lattice.clone(), running: Vec::new() };
    for address in &addresses {
        instances.start(KV, "kv", vec![]).await?;
        instances.start(BLOB, "blob", vec![]).await?;
        instances.start(MSG, "msg", vec![]).await?;
        instances.start(HTTP, "http", vec!["--config".into(), format!("address={address}")]).await?;
    }
    for host in [lattice.host_id.clone(), second_id.clone()] {
        lattice.start_component_on("kv-http", "kvc", &[], Some(&host)).await?;
        lattice.start_component_on("blob-test", "blobs", &[], Some(&host)).await?;
        lattice.start_component_on("messaging-echo", "echo", &["echo-name"], Some(&host)).await?;
    }
    lattice.config("echo-name", &[("name", "echo")]).await?;
    lattice.config("blob-nats", &[("backend", "nats")]).await?;
    lattice.config("soak-subs", &[("subscriptions", "soak.echo.*"), ("queue_group", "soak")]).await?;
    lattice.config("route", &[("path", "/")]).await?;
    let http_in = |source: &str, target: &str, config: &[&str]| {
        let mut link = Link::new(source, target, "wasi", "http", vec!["incoming-handler".into()]);
        link.source_config = config.iter().map(|c| (*c).to_owned()).collect();
        link
    };
    lattice.link(http_in(TEST_CLIENT_ID, "kvc", &[])).await?;
    lattice.link(http_in(TEST_CLIENT_ID, "blobs", &[])).await?;
    lattice.link(http_in("http", "kvc", &["route"])).await?;
    let mut kv = Link::new("kvc", "kv", "wasi", "keyvalue", vec!["store".into(), "atomics".into(), "batch".into()]);
    kv.name = "default".into();
    lattice.link(kv).await?;
    let mut blob =
        Link::new("blobs", "blob", "wasi", "blobstore", vec!["blobstore".into(), "container".into(), "types".into()]);
    blob.target_config = vec!["blob-nats".into()];
    lattice.link(blob).await?;
    lattice.link(Link::new("echo", "msg", "wasmcloud", "messaging", vec!["consumer".into()])).await?;
    let mut handler = Link::new("msg", "echo", "wasmcloud", "messaging", vec!["handler".into()]);
    handler.source_config = vec!["soak-subs".into()];
    lattice.link(handler).await?;
    for address in &addresses {
        http::wait_for_route(*address, "localhost", "/").await?;
    }
    let (status, answer) = lattice.call("blobs", json!({"op": "create", "container": "soak"})).await?;
    anyhow::ensure!(status == 200, "cannot create the container: {answer}");
    println!(
        "soak: {} s, {workers} callers, a provider instance killed every {} s",
        total.as_secs(),
        kill_every.as_secs()
    );

    let seen = Arc::new(Mutex::new(Seen::default()));
    let start = Instant::now();
    let mut callers = Vec::new();
    for worker in 0..workers {
        let (lattice, seen, addresses) = (lattice.clone(), seen.clone(), addresses.clone());
        callers.push(tokio::spawn(async move {
            for seq in 0u64.. {
                if start.elapsed() >= total {
                    break;
                }
                let name = format!("w{worker}-{seq}");
                let mut example = String::new();
                let (kind, outcome): (&'static str, Outcome) = match seq % 4 {
                    0 => ("http+kv", http_set(addresses[usize::try_from(seq / 4 % 2).unwrap_or(0)], &name).await),
                    1 => {
                        let command = json!({"op": "set", "bucket": "soak", "key": name, "value": "x"});
                        let (outcome, answer) = call(&lattice, "kvc", command).await;
                        example = answer["error"].as_str().unwrap_or_default().to_owned();
                        ("kv", outcome)
                    }
                    2 => {
                        let write = json!({"op": "write", "container": "soak", "object": name, "text": "soak"});
                        let (mut outcome, mut answer) = call(&lattice, "blobs", write).await;
                        if outcome == "ok" {
                            let read = json!({"op": "read", "container": "soak", "object": name, "mode": "sync"});
                            (outcome, answer) = call(&lattice, "blobs", read).await;
                        }
                        example = answer["error"].as_str().unwrap_or_default().to_owned();
                        ("blob", outcome)
                    }
                    _ => {
                        let request = lattice.raw.request(format!("soak.echo.{worker}"), name.clone().into());
                        match tokio::time::timeout(HANG, request).await {
                            Err(_) => ("messaging", "hung".into()),
                            Ok(Err(err)) => ("messaging", format!("nats-{:?}", err.kind()).to_lowercase()),
                            Ok(Ok(reply)) if reply.payload.as_ref() == format!("echo: {name}").as_bytes() => {
                                ("messaging", "ok".into())
                            }
                            Ok(Ok(_)) => ("messaging", "wrong-answer".into()),
                        }
                    }
                };
                let mut seen = seen.lock().unwrap();
                if outcome == "ok" {
                    match seq % 4 {
                        0 | 1 => seen.keys_written.push(name),
                        2 => seen.objects_written.push(name),
                        _ => {}
                    }
                }
                seen.hung += u64::from(outcome == "hung");
                if outcome != "ok" {
                    seen.examples.entry((kind, outcome.clone())).or_insert(example);
                }
                *seen.outcomes.entry((kind, outcome)).or_default() += 1;
            }
        }));
    }

    // Every 10 s: memory of every process; every `kill_every`: one provider instance killed.
    let mut samples: BTreeMap<String, Vec<(Duration, u64)>> = BTreeMap::new();
    let mut next_kill = kill_every;
    let mut victim = 0usize;
    while start.elapsed() < total {
        tokio::time::sleep(Duration::from_secs(10).min(total.saturating_sub(start.elapsed()))).await;
        let at = start.elapsed();
        let mut line = format!("t={:>4}s", at.as_secs());
        let mut processes = vec![
            ("host-1".to_owned(), lattice.host.pid()),
            ("host-2".to_owned(), second.pid()),
            ("nats".to_owned(), lattice.nats.process.pid()),
        ];
        for (i, (_, id, _, process)) in instances.running.iter().enumerate() {
            processes.push((format!("{id}-{}", i / 4 + 1), process.pid()));
        }
        for (name, pid) in processes {
            let rss = http::rss(pid).unwrap_or_default();
            line.push_str(&format!(" {name} {:.1}", rss as f64 / 1048576.0));
            samples.entry(name).or_default().push((at, rss));
        }
        let done: u64 = seen.lock().unwrap().outcomes.values().sum();
        println!("{line} (MiB) calls {done}");
        if at >= next_kill && at < total {
            // In turn: kv, blob, msg, http; first and second instance alternately.
            let kind = victim % 4;
            let instance = (victim / 4) % 2;
            let id = instances.kill_and_restart(instance * 4 + kind).await?;
            println!("t={:>4}s killed and restarted {id} instance {}", start.elapsed().as_secs(), instance + 1);
            victim += 1;
            next_kill += kill_every;
        }
    }
    for caller in callers {
        caller.await?;
    }

    // Lost: keys and objects whose calls succeeded, missing now (read straight from JetStream:
    // tens of thousands of keys are more than one call through the component should list).
    let seen = Arc::into_inner(seen).expect("callers done").into_inner().unwrap();
    let js = async_nats::jetstream::new(lattice.raw.clone());
    let bucket = js.get_key_value(ferry_proto::subject::component_kv_bucket(&lattice.name, "soak")?).await?;
    let mut keys = HashSet::new();
    let mut listed = bucket.keys().await?;
    while let Some(key) = listed.next().await {
        keys.insert(key?);
    }
    let lost_keys = seen.keys_written.iter().filter(|k| !keys.contains(*k)).count();
    let container = js.get_object_store(ferry_proto::subject::component_object_store(&lattice.name, "soak")?).await?;
    let mut objects = HashSet::new();
    let mut listed = container.list().await?;
    while let Some(info) = listed.next().await {
        let info = info?;
        if !info.deleted {
            objects.insert(info.name);
        }
    }
    let lost_objects = seen.objects_written.iter().filter(|o| !objects.contains(*o)).count();

    println!("\n| call | outcome | count | first error |\n|---|---|---|---|");
    for ((kind, outcome), count) in &seen.outcomes {
        let example = seen.examples.get(&(*kind, outcome.clone())).map_or("", String::as_str);
        println!("| {kind} | {outcome} | {count} | {example} |");
    }
    let calls: u64 = seen.outcomes.values().sum();
    println!(
        "\ncalls {calls} over {} s; lost: {lost_keys} keys, {lost_objects} objects; hung {}",
        total.as_secs(),
        seen.hung
    );
    println!(
        "\n| process | RSS after warm-up (MiB) | RSS at the end | peak after warm-up | growth |\n|---|---|---|---|---|"
    );
    let mut grew = Vec::new();
    for (name, points) in &samples {
        let after: Vec<u64> = points.iter().filter(|(at, _)| *at >= WARMUP).map(|(_, rss)| *rss).collect();
        let (Some(first), Some(last)) = (after.first(), after.last()) else { continue };
        let peak = after.iter().max().copied().unwrap_or_default();
        let growth = i128::from(*last) - i128::from(*first);
        let mib = |b: u64| b as f64 / 1048576.0;
        println!(
            "| {name} | {:.1} | {:.1} | {:.1} | {:+.1} |",
            mib(*first),
            mib(*last),
            mib(peak),
            growth as f64 / 1048576.0
        );
        // Providers are restarted during the run, and nats-server holds the data written: the
        // hosts are what must stay flat.
        if name.starts_with("host") && growth > i128::from(growth_limit << 20) {
            grew.push(name.clone());
        }
    }
    anyhow::ensure!(lost_keys == 0 && lost_objects == 0, "calls were lost");
    anyhow::ensure!(seen.hung == 0, "calls hung");
    anyhow::ensure!(grew.is_empty(), "memory grew past {growth_limit} MiB after warm-up: {grew:?}");
    Ok(())
}
