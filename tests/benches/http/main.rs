//! Ferry's latency and throughput benchmark: what the process split and a capability call
//! cost. One run measures, on this machine,
//!
//! * (a) a raw NATS request/reply echo round trip (the transport's floor),
//! * (b) the hello component called in-process through wasmtime, no NATS (the runtime's floor),
//! * (c) the same component end to end over HTTP: client → http-server provider → NATS → host,
//! * (d) the same component under `wasmtime serve` (the peer to beat),
//! * (e) an HTTP request whose component makes one key-value get, on Redis and on NATS KV,
//! * (f) the same key-value component answering without a capability call,
//! * (g) a raw Redis GET round trip (with (a), the floor of (e)),
//! * (h) a host's time from spawn to ready, and its idle memory,
//! * (e)/(f) once more with one call in flight taking turns, so that what the get adds is
//!   measured in the same stretch of time as the answer without it: one call each, round after
//!   round (each call cold), and in runs of 200 ms each (warm; the targets use these),
//! * (i) the same get through the gRPC sidecar bridge: to the Python example (SQLite), to a
//!   Rust gRPC stub (memory), next to an SDK provider doing the stub's work (memory) and
//!   Ferry's own provider on Redis; the stub, memory and Python ones once more taking turns,
//!   both ways, so that what the bridge itself adds is measured in the same stretch of time,
//! * (j) a gRPC get to that stub over a Unix socket from the benchmark itself (the floor of
//!   what the bridge adds, as (a) is of a NATS hop),
//! * (k) (c) with tracing on: the host and the http-server exporting spans (every request
//!   sampled) and metrics over OTLP to a receiver in the benchmark process,
//!
//! at 1 and 32 requests in flight: requests/s, p50 and p99 latency, the CPU each process spends
//! per request, and resident memory; then each target of docs/benchmarks.md, computed from
//! this run. Run it with `bash scripts/bench.sh` (release build); results are recorded in
//! docs/benchmarks.md.
//!
//! Environment: `BENCH_SECONDS` (per measurement, default 10), `BENCH_WASMTIME` (path of a
//! wasmtime 48 CLI; (d) is skipped without it), `BENCH_ONLY` (scenario letters to run, e.g.
//! `efg`; all by default), `FERRY_NATS_SERVER`, `FERRY_REDIS_SERVER`.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod bridge;
mod floors;
mod load;
mod systems;

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use ferry_tests::build_component;
use load::{Sample, Turns, WARMUP};
use systems::Measured;

const CONCURRENCY: [usize; 2] = [1, 32];

/// Every measurement of the run, by scenario key, one sample per concurrency.
#[derive(Default)]
struct Results {
    samples: BTreeMap<&'static str, Vec<Sample>>,
    memory: BTreeMap<&'static str, Vec<(&'static str, u64)>>,
    /// (e) and (f) measured taking turns in warm runs, by scenario key.
    turns: BTreeMap<&'static str, Sample>,
}

impl Results {
    fn record(&mut self, key: &'static str, title: &str, samples: Vec<Sample>, memory: Vec<(&'static str, u64)>) {
        let shown = if memory.is_empty() {
            "-".to_owned()
        } else {
            memory.iter().map(|(name, bytes)| format!("{name} {}", mib(*bytes))).collect::<Vec<_>>().join(", ")
        };
        let mut samples = samples;
        for (concurrency, sample) in CONCURRENCY.iter().zip(samples.iter_mut()) {
            let errors = if sample.errors > 0 { format!(" ({} errors)", sample.errors) } else { String::new() };
            println!(
                "| {title} | {concurrency} | {:.0}{errors} | {:.3} | {:.3} | {} | {shown} |",
                sample.rate(),
                sample.percentile(0.50),
                sample.percentile(0.99),
                sample.cpu_per_request(),
            );
        }
        self.samples.insert(key, samples);
        self.memory.insert(key, memory);
    }

    fn record_measured(&mut self, key: &'static str, title: &str, measured: Measured) {
        self.record(key, title, measured.samples, measured.memory);
    }

    /// p50 (ms) of `key` at concurrency index `at`.
    fn p50(&mut self, key: &str, at: usize) -> Option<f64> {
        self.samples.get_mut(key).and_then(|s| s.get_mut(at)).map(|s| s.percentile(0.50))
    }

    fn p99(&mut self, key: &str, at: usize) -> Option<f64> {
        self.samples.get_mut(key).and_then(|s| s.get_mut(at)).map(|s| s.percentile(0.99))
    }

    fn rate(&self, key: &str, at: usize) -> Option<f64> {
        self.samples.get(key).and_then(|s| s.get(at)).map(Sample::rate)
    }

    fn rss(&self, key: &str, process: &str) -> Option<u64> {
        self.memory.get(key)?.iter().find(|(name, _)| *name == process).map(|(_, bytes)| *bytes)
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20))
}

fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "NOT met" }
}

/// What each way of taking turns is called in the output.
fn turns_title(turns: Turns) -> String {
    match turns {
        Turns::EachCall => "one call each".to_owned(),
        Turns::Runs(length) => format!("runs of {} ms each, warm", length.as_millis()),
    }
}

/// One sample per route taken in turns, by name: p50, p99, errors and the p50 over the first.
fn print_turn_samples(names: &[&str], turns: &mut [Sample]) -> Vec<f64> {
    let first = turns.first_mut().map(|s| s.percentile(0.50)).unwrap_or(f64::NAN);
    let mut p50s = Vec::new();
    for (name, sample) in names.iter().zip(turns.iter_mut()) {
        let (p50, p99) = (sample.percentile(0.50), sample.percentile(0.99));
        let errors = if sample.errors > 0 { format!(", {} errors", sample.errors) } else { String::new() };
        println!("- {name}: p50 {p50:.3} ms (+{:.3} over {}), p99 {p99:.3} ms{errors}", p50 - first, names[0]);
        p50s.push(p50);
    }
    p50s
}

/// (e) and (f) taking turns on one call in flight, each way: their p50s and what the get adds.
/// The targets use the warm runs (decision 86).
fn print_turns(r: &mut Results, turns: Vec<(Turns, Vec<Sample>)>) {
    let names = ["f", "e-redis", "e-nats"];
    for (how, mut samples) in turns {
        println!();
        println!(
            "(e)/(f) taking turns, 1 in flight, {} (no-call answer, get on Redis, get on NATS KV, round after round):",
            turns_title(how)
        );
        print_turn_samples(&names, &mut samples);
        if matches!(how, Turns::Runs(_)) {
            for (name, sample) in names.iter().zip(samples) {
                r.turns.insert(name, sample);
            }
        }
    }
}

/// (i) taking turns, each way, and the bridge's target: what it adds over the same work in an
/// SDK provider, at p50 with one call in flight, from the warm runs (decision 86).
fn print_bridge_turns(turns: Vec<(Turns, Vec<Sample>)>) {
    for (how, mut samples) in turns {
        println!();
        println!(
            "(i) taking turns, 1 in flight, {} (SDK provider in memory, bridge → stub, bridge → Python, round after round):",
            turns_title(how)
        );
        let p50s = print_turn_samples(&["memory", "stub", "python"], &mut samples);
        if let (Some(memory), Some(stub)) = (p50s.first(), p50s.get(1)) {
            let added = stub - memory;
            match how {
                Turns::Runs(_) => println!(
                    "- the bridge adds {added:.3} ms at p50, 1 in flight (bridge → stub minus SDK provider, same work) (target <= 0.15 ms): {}",
                    verdict(added <= 0.15)
                ),
                Turns::EachCall => println!("- the bridge adds {added:.3} ms at p50 to a cold call"),
            }
        }
    }
}

/// Each target of issue 11, from this run's figures (skipped when a scenario did not run).
fn targets(r: &mut Results, host_start: Option<(Duration, u64)>) {
    println!();
    println!("Targets:");
    // From the turns when they ran (same moments), else from the separate runs.
    let turn = |r: &mut Results, key: &str| r.turns.get_mut(key).map(|s| s.percentile(0.50));
    let (kv_redis, kv_nats, plain, how) = match (turn(r, "e-redis"), turn(r, "e-nats"), turn(r, "f")) {
        (Some(redis), Some(nats), Some(plain)) => (Some(redis), Some(nats), Some(plain), "taking turns in warm runs"),
        _ => (r.p50("e-redis", 0), r.p50("e-nats", 0), r.p50("f", 0), "separate runs"),
    };
    if let (Some(kv), Some(plain), Some(nats), Some(redis)) = (kv_redis, plain, r.p50("a", 0), r.p50("g", 0)) {
        let added = kv - plain;
        let floor = nats + redis;
        println!(
            "- key-value get on Redis adds {added:.3} ms at p50, 1 in flight ({how}); floor (NATS {nats:.3} + Redis {redis:.3}) = {floor:.3} ms; {:.2}x the floor (target <= 1.3x): {}",
            added / floor,
            verdict(added <= 1.3 * floor)
        );
    }
    if let (Some(kv), Some(plain)) = (kv_nats, plain) {
        println!("- key-value get on NATS KV adds {:.3} ms at p50, 1 in flight ({how})", kv - plain);
    }
    if let (Some(kv), Some(plain)) = (r.rate("e-redis", 1), r.rate("f", 1)) {
        println!(
            "- 32 in flight: key-value get {kv:.0} req/s / plain {plain:.0} req/s = {:.2} (target >= 0.7): {}",
            kv / plain,
            verdict(kv >= 0.7 * plain)
        );
    }
    if let (Some(ferry), Some(serve), Some(nats)) = (r.p50("c", 0), r.p50("d", 0), r.p50("a", 0)) {
        let floor = serve + nats;
        println!(
            "- HTTP, 1 connection: p50 {ferry:.3} ms; floor (wasmtime serve {serve:.3} + NATS {nats:.3}) = {floor:.3} ms; {:.2}x (target <= 1.1x): {}",
            ferry / floor,
            verdict(ferry <= 1.1 * floor)
        );
    }
    if let (Some(ferry), Some(serve), Some(ferry_p99), Some(serve_p99)) =
        (r.rate("c", 1), r.rate("d", 1), r.p99("c", 1), r.p99("d", 1))
    {
        println!(
            "- HTTP, 32 connections: {ferry:.0} vs {serve:.0} req/s = {:.2}x (target >= 1.0x), p99 {ferry_p99:.3} vs {serve_p99:.3} ms: {}",
            ferry / serve,
            verdict(ferry >= serve && ferry_p99 <= serve_p99)
        );
    }
    if let (Some(host), Some(serve)) = (r.rss("c", "host"), r.rss("d", "wasmtime")) {
        println!(
            "- host peak RSS under the 32-connection load {} vs wasmtime serve {} = {:.2}x (target <= 0.7x): {}",
            mib(host),
            mib(serve),
            host as f64 / serve as f64,
            verdict(host as f64 <= 0.7 * serve as f64)
        );
    }
    if let Some((ready, idle)) = host_start {
        println!(
            "- host ready {:.1} ms after spawn (median; target <= 30 ms): {}; idle host RSS {} (target <= 12 MB): {}",
            ready.as_secs_f64() * 1e3,
            verdict(ready <= Duration::from_millis(30)),
            mib(idle),
            verdict(idle <= 12_000_000)
        );
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // The harness's scan of events and replies for secrets would cost the figures.
    ferry_tests::leaks::no_taps();
    let seconds = std::env::var("BENCH_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(10);
    let duration = Duration::from_secs(seconds);
    let hello = build_component("hello")?;
    let wasmtime = std::env::var_os("BENCH_WASMTIME").map(PathBuf::from).filter(|p| p.exists());
    let only = std::env::var("BENCH_ONLY").unwrap_or_else(|_| "abcdefghijk".into());
    let wanted = |letter: char| only.contains(letter);

    println!(
        "Ferry benchmark: {seconds} s per measurement after {WARMUP:?} warm-up; CPU is microseconds per request per process"
    );
    println!();
    println!("| scenario | in flight | req/s | p50 ms | p99 ms | CPU µs/req | peak RSS at 32 |");
    println!("|---|---:|---:|---:|---:|---|---|");
    let mut r = Results::default();
    let mut turns = None;
    if wanted('a') {
        r.record("a", "(a) NATS request/reply echo", floors::nats_echo(&CONCURRENCY, duration).await?, Vec::new());
    }
    if wanted('g') {
        r.record("g", "(g) Redis GET", floors::redis_get(&CONCURRENCY, duration).await?, Vec::new());
    }
    if wanted('b') {
        let samples = floors::in_process(&hello, &CONCURRENCY, duration).await.map_err(|e| anyhow::anyhow!("{e:#}"))?;
        r.record("b", "(b) in-process wasmtime", samples, Vec::new());
    }
    if wanted('c') {
        let measured = systems::ferry_hello(&hello, &CONCURRENCY, duration).await?;
        r.record_measured("c", "(c) Ferry: HTTP → provider → NATS → host", measured);
    }
    if wanted('k') {
        let (measured, spans) = systems::ferry_hello_traced(&hello, &CONCURRENCY, duration).await?;
        r.record_measured("k", "(k) (c) with tracing on, 100 % sampled, OTLP export", measured);
        println!("| (k) spans received | {spans} | | | | | |");
    }
    if wanted('d') {
        match &wasmtime {
            Some(wasmtime) => {
                let measured = systems::wasmtime_serve(wasmtime, &hello, &CONCURRENCY, duration).await?;
                r.record_measured("d", "(d) wasmtime serve", measured);
            }
            None => println!("| (d) wasmtime serve | - | skipped: set BENCH_WASMTIME | | | | |"),
        }
    }
    if wanted('e') || wanted('f') {
        let kv = systems::KvLattice::start().await?;
        if wanted('f') {
            r.record_measured(
                "f",
                "(f) Ferry: kv component, no capability call",
                kv.plain(&CONCURRENCY, duration).await,
            );
        }
        if wanted('e') {
            let measured = kv.get(true, &CONCURRENCY, duration).await;
            r.record_measured("e-redis", "(e) Ferry: HTTP + key-value get, Redis", measured);
            let measured = kv.get(false, &CONCURRENCY, duration).await;
            r.record_measured("e-nats", "(e) Ferry: HTTP + key-value get, NATS KV", measured);
        }
        if wanted('e') && wanted('f') {
            let mut both = Vec::new();
            for how in [Turns::EachCall, Turns::RUNS] {
                both.push((how, kv.turns(duration, how).await));
            }
            turns = Some(both);
        }
    }
    let mut host_start = None;
    if wanted('h') {
        let mut runs = systems::host_start(5).await?;
        runs.sort_by_key(|(ready, _)| *ready);
        let shown: Vec<String> = runs.iter().map(|(ready, _)| format!("{:.1}", ready.as_secs_f64() * 1e3)).collect();
        let idle = runs.iter().map(|(_, idle)| *idle).max().unwrap_or_default();
        println!();
        println!(
            "(h) host start: ready after {} ms (5 starts, sorted); idle RSS up to {}",
            shown.join(", "),
            mib(idle)
        );
        host_start = runs.get(runs.len() / 2).map(|(ready, _)| (*ready, idle));
    }
    if wanted('j') {
        r.record(
            "j",
            "(j) gRPC get to the stub over a Unix socket",
            bridge::grpc_floor(&CONCURRENCY, duration).await?,
            Vec::new(),
        );
    }
    let mut bridge_turns = None;
    if wanted('i') {
        let bridged = bridge::BridgeLattice::start().await?;
        for (key, provider, title) in [
            ("i-memory", "kvmem", "(i) key-value get, SDK provider in memory"),
            ("i-stub", "kvstub", "(i) key-value get, bridge → Rust gRPC stub (memory)"),
            ("i-python", "kvpy", "(i) key-value get, bridge → Python (SQLite)"),
            ("i-redis", "kv", "(i) key-value get, Ferry's provider on Redis"),
        ] {
            r.record_measured(key, title, bridged.measure(provider, &CONCURRENCY, duration).await);
        }
        let mut both = Vec::new();
        for how in [Turns::EachCall, Turns::RUNS] {
            both.push((how, bridged.turns(duration, how).await));
        }
        bridge_turns = Some(both);
    }
    if let Some(turns) = turns {
        print_turns(&mut r, turns);
    }
    if let Some(turns) = bridge_turns {
        print_bridge_turns(turns);
    }
    targets(&mut r, host_start);
    Ok(())
}
