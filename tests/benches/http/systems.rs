//! The systems under test: Ferry end to end ((c) the hello component, (k) the same exporting
//! every span over OTLP, (e) a key-value get on
//! Redis and on NATS KV, (f) the key-value component answering with no capability call),
//! `wasmtime serve` (d), and a host's start-up time and idle memory (h).

use std::{
    io::BufRead as _,
    net::SocketAddr,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use ferry_proto::{auth::ClusterKey, ctl::operator::OperatorKey, link::Link};
use ferry_tests::{Lattice, NatsServer, Process, RedisServer, binary, free_port, http::rss};
use serde_json::json;

use crate::load::{HttpCall, Sample, Turns, Watched, drive, http_worker, take_turns};

/// The samples of one system at each concurrency, and the peak memory of its processes during
/// the last (most loaded) run.
pub(crate) struct Measured {
    pub(crate) samples: Vec<Sample>,
    pub(crate) memory: Vec<(&'static str, u64)>,
}

pub(crate) async fn measure(
    address: SocketAddr,
    call: &HttpCall,
    concurrency: &[usize],
    duration: Duration,
    watched: &[Watched],
) -> Measured {
    let mut samples = Vec::new();
    for &n in concurrency {
        samples.push(drive(n, duration, watched, || http_worker(address, call.clone())).await);
    }
    let memory = samples.last().map(|s| s.peak_rss.clone()).unwrap_or_default();
    Measured { samples, memory }
}

/// (c) Ferry end to end: HTTP client → http-server provider → NATS → host → hello component.
pub(crate) async fn ferry_hello(wasm: &Path, concurrency: &[usize], duration: Duration) -> anyhow::Result<Measured> {
    let lattice = Lattice::start().await?;
    let address: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
    let provider = lattice
        .start_provider_with("ferry-provider-http-server", "http", &["--config", &format!("address={address}")])
        .await?;
    let (host_pid, host_id) = (lattice.host.pid(), lattice.host_id.clone());
    serve_hello(&lattice, wasm, address, &provider, (host_pid, &host_id), concurrency, duration).await
}

/// (k) (c) with every process exporting spans and metrics over OTLP, every request sampled,
/// to a receiver in this process; and how many spans it got.
pub(crate) async fn ferry_hello_traced(
    wasm: &Path,
    concurrency: &[usize],
    duration: Duration,
) -> anyhow::Result<(Measured, usize)> {
    let receiver = ferry_tests::otlp::OtlpReceiver::start().await?;
    let endpoint = receiver.endpoint();
    let lattice = Lattice::start().await?;
    let (host, host_id) = lattice.start_host_with(&["--otlp-endpoint", &endpoint]).await?;
    let address: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
    let export = [("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()), ("OTEL_TRACES_SAMPLER", "always_on")];
    let provider = lattice
        .start_provider_env("ferry-provider-http-server", "http", &["--config", &format!("address={address}")], &export)
        .await?;
    let measured =
        serve_hello(&lattice, wasm, address, &provider, (host.pid(), &host_id), concurrency, duration).await?;
    Ok((measured, receiver.spans().len()))
}

/// Start the hello component on `host`, route `provider` at `address` to it, and measure.
async fn serve_hello(
    lattice: &Lattice,
    wasm: &Path,
    address: SocketAddr,
    provider: &Process,
    (host_pid, host_id): (u32, &str),
    concurrency: &[usize],
    duration: Duration,
) -> anyhow::Result<Measured> {
    let cmd = ferry_proto::ctl::ComponentStart {
        request_id: "bench".into(),
        component_id: "hello".into(),
        image: ferry_lattice::ComponentStore::open(&lattice.raw, &lattice.name)
            .await?
            .upload(&std::fs::read(wasm)?)
            .await?
            .to_string(),
        max_instances: Some(100),
        config: Vec::new(),
    };
    let resp = lattice.ctl.send(&cmd, Some(host_id)).await?;
    anyhow::ensure!(resp.success, "component start failed: {}", resp.message);
    lattice.link(Link::new("http", "hello", "wasi", "http", vec!["incoming-handler".into()])).await?;
    ferry_tests::http::wait_for_route(address, "localhost", "/").await?;
    let watched = [
        Watched { name: "host", pid: host_pid },
        Watched { name: "http", pid: provider.pid() },
        Watched { name: "nats", pid: lattice.nats.process.pid() },
    ];
    Ok(measure(address, &HttpCall::get(), concurrency, duration, &watched).await)
}

/// The key-value lattice: the `kv-http` component twice, `kvr` linked to the key-value
/// provider on Redis and `kvn` on NATS KV, served by one http-server provider under `/redis`
/// and `/nats`.
pub(crate) struct KvLattice {
    lattice: Lattice,
    redis: RedisServer,
    http: Process,
    kv: Process,
    address: SocketAddr,
}

impl KvLattice {
    pub(crate) async fn start() -> anyhow::Result<Self> {
        let lattice = Lattice::start().await?;
        let redis = RedisServer::start().await?;
        let address: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
        let http = lattice
            .start_provider_with("ferry-provider-http-server", "http", &["--config", &format!("address={address}")])
            .await?;
        let kv = lattice.start_provider("ferry-provider-keyvalue", "kv").await?;
        lattice.config("redis", &[("backend", "redis"), ("url", &redis.url)]).await?;
        for (component, path, backend) in [("kvr", "/redis", Some("redis")), ("kvn", "/nats", None)] {
            kv_route(&lattice, component, path, "kv", backend).await?;
        }
        ferry_tests::http::wait_for_route(address, "localhost", "/redis").await?;
        ferry_tests::http::wait_for_route(address, "localhost", "/nats").await?;
        Ok(Self { lattice, redis, http, kv, address })
    }

    /// (f) `kvr` answering without a capability call.
    pub(crate) async fn plain(&self, concurrency: &[usize], duration: Duration) -> Measured {
        let watched = self.watched(false, false);
        let call = HttpCall::post_json("/redis", &json!({"op": "noop"}));
        measure(self.address, &call, concurrency, duration, &watched).await
    }

    /// (e) One key-value get per request, on Redis (`redis`) or on NATS KV.
    pub(crate) async fn get(&self, redis: bool, concurrency: &[usize], duration: Duration) -> Measured {
        let watched = self.watched(true, redis);
        let path = if redis { "/redis" } else { "/nats" };
        let call = HttpCall::post_json(path, &json!({"op": "get", "bucket": "bench", "key": "k"}));
        measure(self.address, &call, concurrency, duration, &watched).await
    }

    /// (e) and (f) taking turns (as `turns` says) on one call in flight: the no-call answer,
    /// the get on Redis, the get on NATS KV, round after round; one sample each, in that order.
    pub(crate) async fn turns(&self, duration: Duration, turns: Turns) -> Vec<Sample> {
        let calls = [
            HttpCall::post_json("/redis", &json!({"op": "noop"})),
            HttpCall::post_json("/redis", &json!({"op": "get", "bucket": "bench", "key": "k"})),
            HttpCall::post_json("/nats", &json!({"op": "get", "bucket": "bench", "key": "k"})),
        ];
        let mut workers = Vec::new();
        for call in calls {
            workers.push(http_worker(self.address, call).await);
        }
        take_turns(workers, duration, turns).await
    }

    fn watched(&self, kv: bool, redis: bool) -> Vec<Watched> {
        let mut watched = vec![
            Watched { name: "host", pid: self.lattice.host.pid() },
            Watched { name: "http", pid: self.http.pid() },
            Watched { name: "nats", pid: self.lattice.nats.process.pid() },
        ];
        if kv {
            watched.push(Watched { name: "kv", pid: self.kv.pid() });
        }
        if redis {
            watched.push(Watched { name: "redis", pid: self.redis.process.pid() });
        }
        watched
    }
}

/// A `kv-http` component `component`, linked to the key-value provider `provider` (with the
/// named target config, if any), served by the http-server provider `http` under `path`, with
/// the key the benchmark reads already set.
pub(crate) async fn kv_route(
    lattice: &Lattice,
    component: &str,
    path: &str,
    provider: &str,
    target_config: Option<&str>,
) -> anyhow::Result<()> {
    lattice.start_component("kv-http", component, &[]).await?;
    let mut kv_link = Link::new(component, provider, "wasi", "keyvalue", vec!["store".into()]);
    kv_link.target_config = target_config.into_iter().map(str::to_owned).collect();
    lattice.link(kv_link).await?;
    let route = format!("route-{component}");
    lattice.config(&route, &[("path", path)]).await?;
    let mut http_link = Link::new("http", component, "wasi", "http", vec!["incoming-handler".into()]);
    http_link.source_config = vec![route];
    lattice.link(http_link).await?;
    lattice.ok(component, json!({"op": "set", "bucket": "bench", "key": "k", "value": "a value"})).await?;
    Ok(())
}

/// (d) `wasmtime serve` with the pooling allocator.
pub(crate) async fn wasmtime_serve(
    wasmtime: &Path,
    wasm: &Path,
    concurrency: &[usize],
    duration: Duration,
) -> anyhow::Result<Measured> {
    let address: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
    let mut command = Command::new(wasmtime);
    command.args(["serve", "-Scli", "-O", "pooling-allocator=y", "--addr", &address.to_string()]).arg(wasm);
    let mut server = Process::spawn("wasmtime-serve", command)?;
    server.wait_for_log("Serving HTTP", Duration::from_secs(60)).await?;
    ferry_tests::http::wait_for_route(address, "localhost", "/").await?;
    let watched = [Watched { name: "wasmtime", pid: server.pid() }];
    Ok(measure(address, &HttpCall::get(), concurrency, duration, &watched).await)
}

/// (h) How long `ferry host` takes from spawn to its ready line, and its resident memory a
/// second later with nothing running; one entry per start.
pub(crate) async fn host_start(runs: usize) -> anyhow::Result<Vec<(Duration, u64)>> {
    let nats = NatsServer::start().await?;
    let (_, seed) = ClusterKey::generate()?;
    let (operator, _) = OperatorKey::generate()?;
    let mut results = Vec::new();
    for run in 0..runs {
        let mut command = Command::new(binary("ferry")?);
        command
            .args(["host", "--nats-url", &nats.url, "--lattice", &format!("start{run}"), "--operator-key"])
            .arg(operator.public_key())
            .env("FERRY_CLUSTER_SEED", &seed)
            .env("FERRY_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let began = Instant::now();
        let mut child = command.spawn().context("spawn ferry host")?;
        let stdout = child.stdout.take().context("stdout")?;
        let stderr = child.stderr.take().context("stderr")?;
        let ready = tokio::task::spawn_blocking(move || {
            let (tx, rx) = std::sync::mpsc::channel();
            for pipe in [Box::new(stdout) as Box<dyn std::io::Read + Send>, Box::new(stderr)] {
                let tx = tx.clone();
                std::thread::spawn(move || {
                    for line in std::io::BufReader::new(pipe).lines().map_while(Result::ok) {
                        if line.contains("host ready") {
                            let _ = tx.send(Instant::now());
                        }
                    }
                });
            }
            rx.recv_timeout(Duration::from_secs(30))
        })
        .await?
        .context("the host did not log its ready line")?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let idle = rss(child.id())?;
        results.push((ready - began, idle));
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        let _ = child.wait();
    }
    Ok(results)
}
