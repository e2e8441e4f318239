//! Ferry's HTTP benchmark: what the process split costs. One run measures, on this machine,
//!
//! * (a) a raw NATS request/reply echo round trip (the transport's floor),
//! * (b) the hello component called in-process through wasmtime, no NATS (the runtime's floor),
//! * (c) the same component end to end over HTTP: client → http-server provider → NATS → host,
//! * (d) the same component under `wasmtime serve` (the peer to beat),
//!
//! each at 1 and at 32 concurrent connections (or in-flight calls): requests/s, p50 and p99
//! latency, and the resident memory of the processes involved. Run it with
//! `bash scripts/bench.sh` (release build); results are recorded in docs/benchmarks.md.
//!
//! Environment: `BENCH_SECONDS` (per measurement, default 10), `BENCH_WASMTIME` (path of a
//! wasmtime 48 CLI; (d) is skipped without it), `BENCH_ONLY` (scenario letters to run, e.g.
//! `cd`; all by default), `FERRY_NATS_SERVER`.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use ferry_proto::link::Link;
use ferry_tests::{
    Lattice, NatsServer, Process, build_component, free_port,
    http::{empty, request, rss},
};
use futures::StreamExt as _;
use http_body_util::{BodyExt as _, Empty};
use hyper_util::rt::TokioIo;
use wasmtime::{Store, component::Linker};
use wasmtime_wasi::{ResourceTable, WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{
    WasiHttpCtx, WasiHttpCtxView, WasiHttpView,
    p2::bindings::{ProxyPre, http::types::Scheme},
};

const WARMUP: Duration = Duration::from_secs(1);
const CONCURRENCY: [usize; 2] = [1, 32];

/// Latencies of one measurement, and how long it ran.
struct Sample {
    latencies_us: Vec<u32>,
    elapsed: Duration,
    errors: u64,
}

impl Sample {
    fn rate(&self) -> f64 {
        self.latencies_us.len() as f64 / self.elapsed.as_secs_f64()
    }

    fn percentile(&mut self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return f64::NAN;
        }
        self.latencies_us.sort_unstable();
        let index = ((self.latencies_us.len() as f64 - 1.0) * p).round() as usize;
        f64::from(self.latencies_us[index]) / 1000.0
    }
}

/// Run `call` from `concurrency` tasks for `duration` (after a warm-up) and collect latencies.
async fn drive<F, Fut>(concurrency: usize, duration: Duration, make: F) -> Sample
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Box<dyn FnMut() -> futures::future::BoxFuture<'static, bool> + Send>>,
{
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        workers.push(make().await);
    }
    let start = Instant::now();
    let measure_from = start + WARMUP;
    let end = measure_from + duration;
    let tasks: Vec<_> = workers
        .into_iter()
        .map(|mut call| {
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(1 << 16);
                let mut errors = 0;
                loop {
                    let began = Instant::now();
                    if began >= end {
                        break;
                    }
                    let ok = call().await;
                    if began >= measure_from {
                        if ok {
                            latencies.push(began.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
                        } else {
                            errors += 1;
                        }
                    }
                }
                (latencies, errors)
            })
        })
        .collect();
    let mut sample = Sample { latencies_us: Vec::new(), elapsed: duration, errors: 0 };
    for task in tasks {
        let (latencies, errors) = task.await.expect("worker");
        sample.latencies_us.extend(latencies);
        sample.errors += errors;
    }
    sample
}

/// An HTTP/1.1 keep-alive connection issuing `GET /` in a loop.
async fn http_worker(address: SocketAddr) -> Box<dyn FnMut() -> futures::future::BoxFuture<'static, bool> + Send> {
    let stream = tokio::net::TcpStream::connect(address).await.expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.expect("handshake");
    tokio::spawn(conn);
    let sender = Arc::new(tokio::sync::Mutex::new(sender));
    Box::new(move || {
        let sender = sender.clone();
        Box::pin(async move {
            let req = request("GET", "localhost", "/", empty()).expect("request");
            let mut sender = sender.lock().await;
            match sender.send_request(req).await {
                Ok(resp) => {
                    let ok = resp.status().is_success();
                    resp.into_body().collect().await.is_ok() && ok
                }
                Err(_) => false,
            }
        })
    })
}

/// (a) NATS request/reply with a 100-byte payload echoed by a responder on its own connection.
async fn nats_echo(concurrency: usize, duration: Duration) -> anyhow::Result<Sample> {
    let nats = NatsServer::start().await?;
    let responder = async_nats::connect(&nats.url).await?;
    let mut sub = responder.subscribe("bench.echo").await?;
    responder.flush().await?;
    let echo = tokio::spawn(async move {
        while let Some(msg) = sub.next().await {
            if let Some(reply) = msg.reply {
                let _ = responder.publish(reply, msg.payload).await;
            }
        }
    });
    let client = async_nats::connect(&nats.url).await?;
    let payload = Bytes::from(vec![7u8; 100]);
    let sample = drive(concurrency, duration, || {
        let (client, payload) = (client.clone(), payload.clone());
        async move {
            Box::new(move || {
                let (client, payload) = (client.clone(), payload.clone());
                Box::pin(async move { client.request("bench.echo", payload).await.is_ok() })
                    as futures::future::BoxFuture<'static, bool>
            }) as Box<dyn FnMut() -> futures::future::BoxFuture<'static, bool> + Send>
        }
    })
    .await;
    echo.abort();
    Ok(sample)
}

struct BenchState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    hooks: NoOutgoingHttp,
}

/// The hello component makes no outgoing requests; any attempt is denied.
struct NoOutgoingHttp;

impl wasmtime_wasi_http::WasiHttpHooks for NoOutgoingHttp {
    fn send_request(
        &mut self,
        _request: hyper::Request<wasmtime_wasi_http::WasiBody>,
        _options: Option<wasmtime_wasi_http::RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ) -> Box<
        dyn Future<
                Output = Result<
                    (
                        hyper::Response<wasmtime_wasi_http::WasiBody>,
                        Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
                    ),
                    wasmtime_wasi_http::Error,
                >,
            > + Send,
    > {
        Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) })
    }
}

impl WasiView for BenchState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl WasiHttpView for BenchState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView { ctx: &mut self.http, table: &mut self.table, hooks: &mut self.hooks }
    }
}

/// (b) The component in this process on the host's engine: a fresh instance per request, as
/// the host does, without NATS or HTTP.
async fn in_process(wasm: &Path, concurrency: usize, duration: Duration) -> wasmtime::Result<Sample> {
    let engine = ferry_host::new_engine(&ferry_host::Limits::default())?;
    let mut linker = Linker::<BenchState>::new(&engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
    let component = wasmtime::component::Component::from_file(&engine, wasm)?;
    let pre = ProxyPre::new(linker.instantiate_pre(&component)?)?;
    let sample = drive(concurrency, duration, || {
        let (engine, pre) = (engine.clone(), pre.clone());
        async move {
            Box::new(move || {
                let (engine, pre) = (engine.clone(), pre.clone());
                Box::pin(async move { call_in_process(&engine, &pre).await.is_ok() })
                    as futures::future::BoxFuture<'static, bool>
            }) as Box<dyn FnMut() -> futures::future::BoxFuture<'static, bool> + Send>
        }
    })
    .await;
    Ok(sample)
}

async fn call_in_process(engine: &wasmtime::Engine, pre: &ProxyPre<BenchState>) -> wasmtime::Result<()> {
    let state = BenchState {
        wasi: WasiCtx::builder().build(),
        http: WasiHttpCtx::new(),
        table: ResourceTable::new(),
        hooks: NoOutgoingHttp,
    };
    let mut store = Store::new(engine, state);
    store.set_epoch_deadline(u64::MAX);
    let instance = pre.instantiate_async(&mut store).await?;
    let request = hyper::Request::builder().uri("http://localhost/").body(Empty::<Bytes>::new())?;
    let req = store.data_mut().http().new_incoming_request(Scheme::Http, request)?;
    let (sender, receiver) = tokio::sync::oneshot::channel();
    let out = store.data_mut().http().new_response_outparam(sender)?;
    let task =
        tokio::spawn(async move { instance.wasi_http_incoming_handler().call_handle(&mut store, req, out).await });
    let response = receiver.await??;
    response.into_body().collect().await?;
    task.await??;
    Ok(())
}

/// (c) Ferry end to end. Returns the samples and the host's and provider's RSS after the runs.
async fn ferry(wasm: &Path, duration: Duration) -> anyhow::Result<(Vec<Sample>, u64, u64)> {
    let lattice = Lattice::start().await?;
    let address: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
    let provider = lattice
        .start_provider_with("ferry-provider-http-server", "http", &["--config", &format!("address={address}")])
        .await?;
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
    let resp = lattice.ctl.send(&cmd, None).await?;
    anyhow::ensure!(resp.success, "component start failed: {}", resp.message);
    lattice.link(Link::new("http", "hello", "wasi", "http", vec!["incoming-handler".into()])).await?;
    ferry_tests::http::wait_for_route(address, "localhost", "/").await?;
    let mut samples = Vec::new();
    for concurrency in CONCURRENCY {
        samples.push(drive(concurrency, duration, || http_worker(address)).await);
    }
    Ok((samples, rss(lattice.host.pid())?, rss(provider.pid())?))
}

/// (d) `wasmtime serve` with the pooling allocator.
async fn wasmtime_serve(wasmtime: &Path, wasm: &Path, duration: Duration) -> anyhow::Result<(Vec<Sample>, u64)> {
    let address: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
    let mut command = Command::new(wasmtime);
    command.args(["serve", "-Scli", "-O", "pooling-allocator=y", "--addr", &address.to_string()]).arg(wasm);
    let mut server = Process::spawn("wasmtime-serve", command)?;
    server.wait_for_log("Serving HTTP", Duration::from_secs(60)).await?;
    ferry_tests::http::wait_for_route(address, "localhost", "/").await?;
    let mut samples = Vec::new();
    for concurrency in CONCURRENCY {
        samples.push(drive(concurrency, duration, || http_worker(address)).await);
    }
    Ok((samples, rss(server.pid())?))
}

fn row(name: &str, concurrency: usize, sample: &mut Sample, memory: &str) {
    let errors = if sample.errors > 0 { format!(" ({} errors)", sample.errors) } else { String::new() };
    println!(
        "| {name} | {concurrency} | {:.0}{errors} | {:.3} | {:.3} | {memory} |",
        sample.rate(),
        sample.percentile(0.50),
        sample.percentile(0.99)
    );
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let seconds = std::env::var("BENCH_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(10);
    let duration = Duration::from_secs(seconds);
    let wasm = build_component("hello")?;
    let wasmtime = std::env::var_os("BENCH_WASMTIME").map(PathBuf::from).filter(|p| p.exists());
    let only = std::env::var("BENCH_ONLY").unwrap_or_else(|_| "abcd".into());
    let wanted = |letter: char| only.contains(letter);

    println!(
        "Ferry HTTP benchmark: {seconds} s per measurement after {WARMUP:?} warm-up, hello component ({})",
        wasm.display()
    );
    println!();
    println!("| scenario | concurrency | req/s | p50 ms | p99 ms | memory (RSS) |");
    println!("|---|---:|---:|---:|---:|---|");
    for concurrency in CONCURRENCY.into_iter().filter(|_| wanted('a')) {
        let mut sample = nats_echo(concurrency, duration).await?;
        row("(a) NATS request/reply echo", concurrency, &mut sample, "-");
    }
    for concurrency in CONCURRENCY.into_iter().filter(|_| wanted('b')) {
        let mut sample = in_process(&wasm, concurrency, duration).await.map_err(|e| anyhow::anyhow!("{e:#}"))?;
        row("(b) in-process wasmtime", concurrency, &mut sample, "-");
    }
    let mut ferry_samples = Vec::new();
    if wanted('c') {
        let (samples, host_rss, provider_rss) = ferry(&wasm, duration).await?;
        ferry_samples = samples;
        let memory = format!("host {}, provider {}", mib(host_rss), mib(provider_rss));
        for (concurrency, sample) in CONCURRENCY.iter().zip(ferry_samples.iter_mut()) {
            row("(c) Ferry: HTTP → provider → NATS → host", *concurrency, sample, &memory);
        }
    }
    let mut serve_samples = match &wasmtime {
        _ if !wanted('d') => Vec::new(),
        Some(wasmtime) => {
            let (mut samples, serve_rss) = wasmtime_serve(wasmtime, &wasm, duration).await?;
            for (concurrency, sample) in CONCURRENCY.iter().zip(samples.iter_mut()) {
                row("(d) wasmtime serve", *concurrency, sample, &mib(serve_rss));
            }
            samples
        }
        None => {
            println!("| (d) wasmtime serve | - | skipped: set BENCH_WASMTIME | | | |");
            Vec::new()
        }
    };
    println!();
    for ((concurrency, ferry), serve) in CONCURRENCY.iter().zip(ferry_samples.iter_mut()).zip(serve_samples.iter_mut())
    {
        println!(
            "(c)/(d) at {concurrency} connection(s): throughput {:.2}x, p99 {:.3} ms vs {:.3} ms",
            ferry.rate() / serve.rate(),
            ferry.percentile(0.99),
            serve.percentile(0.99)
        );
    }
    Ok(())
}
