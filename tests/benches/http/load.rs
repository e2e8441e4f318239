//! The load generator every scenario shares: N workers, each with one call in flight, for a
//! fixed time after a warm-up; every latency recorded, and the CPU each watched process spent
//! while it measured.

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use futures::future::BoxFuture;
use http_body_util::BodyExt as _;
use hyper_util::rt::TokioIo;

/// How long each measurement warms up before it records.
pub(crate) const WARMUP: Duration = Duration::from_secs(1);

/// How often a measurement reads the watched processes' resident memory.
const RSS_EVERY: Duration = Duration::from_millis(250);

/// One worker: issues a call and says whether it succeeded.
pub(crate) type Worker = Box<dyn FnMut() -> BoxFuture<'static, bool> + Send>;

/// A process whose CPU time a measurement reports, per request.
#[derive(Clone, Debug)]
pub(crate) struct Watched {
    pub(crate) name: &'static str,
    pub(crate) pid: u32,
}

/// Latencies of one measurement, how long it ran, and the CPU spent by each watched process.
pub(crate) struct Sample {
    latencies_us: Vec<u32>,
    elapsed: Duration,
    pub(crate) errors: u64,
    cpu: Vec<(&'static str, Duration)>,
    /// The largest resident set of each watched process seen while recording.
    pub(crate) peak_rss: Vec<(&'static str, u64)>,
}

impl Sample {
    pub(crate) fn rate(&self) -> f64 {
        self.latencies_us.len() as f64 / self.elapsed.as_secs_f64()
    }

    /// The `p` quantile of the latencies, in milliseconds.
    pub(crate) fn percentile(&mut self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return f64::NAN;
        }
        self.latencies_us.sort_unstable();
        let index = ((self.latencies_us.len() as f64 - 1.0) * p).round() as usize;
        f64::from(self.latencies_us[index]) / 1000.0
    }

    /// CPU microseconds per successful request, per watched process, as `name N, …`.
    pub(crate) fn cpu_per_request(&self) -> String {
        let requests = self.latencies_us.len().max(1) as f64;
        let parts: Vec<String> =
            self.cpu.iter().map(|(name, cpu)| format!("{name} {:.0}", cpu.as_secs_f64() * 1e6 / requests)).collect();
        if parts.is_empty() { "-".into() } else { parts.join(", ") }
    }
}

fn cpu_of(watched: &[Watched]) -> Vec<Duration> {
    watched.iter().map(|w| ferry_tests::http::cpu_time(w.pid).unwrap_or_default()).collect()
}

/// Run workers made by `make`, `concurrency` of them, for `duration` after [`WARMUP`]; the CPU
/// of `watched` is read when recording starts and when it ends.
pub(crate) async fn drive<F, Fut>(concurrency: usize, duration: Duration, watched: &[Watched], make: F) -> Sample
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Worker>,
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
    tokio::time::sleep_until(measure_from.into()).await;
    let cpu_before = cpu_of(watched);
    let mut peak = vec![0u64; watched.len()];
    while Instant::now() + RSS_EVERY < end {
        tokio::time::sleep(RSS_EVERY).await;
        for (peak, w) in peak.iter_mut().zip(watched) {
            *peak = (*peak).max(ferry_tests::http::rss(w.pid).unwrap_or_default());
        }
    }
    tokio::time::sleep_until(end.into()).await;
    let cpu_after = cpu_of(watched);
    let cpu = watched.iter().zip(cpu_before.iter().zip(cpu_after)).map(|(w, (b, a))| (w.name, a - *b)).collect();
    let peak_rss = watched.iter().zip(peak).map(|(w, bytes)| (w.name, bytes)).collect();
    let mut sample = Sample { latencies_us: Vec::new(), elapsed: duration, errors: 0, cpu, peak_rss };
    for task in tasks {
        let (latencies, errors) = task.await.expect("worker");
        sample.latencies_us.extend(latencies);
        sample.errors += errors;
    }
    sample
}

/// How workers taking turns on one call in flight hand over to each other.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Turns {
    /// One call each, round after round: every call finds the caches holding the other
    /// workers' processes, so each is measured cold.
    EachCall,
    /// A run of calls this long each, round after round, the first [`SETTLE`] calls of each run
    /// not recorded: steady one-in-flight calls, as in a separate run, with the machine's drift
    /// shared between the workers as in [`Turns::EachCall`].
    Runs(Duration),
}

impl Turns {
    /// The runs' length the benchmark uses: long enough for hundreds of calls, short enough
    /// for dozens of rounds in a measurement.
    pub(crate) const RUNS: Self = Self::Runs(Duration::from_millis(200));
}

/// Calls at the start of each run of [`Turns::Runs`] that warm the route up and are not
/// recorded.
const SETTLE: usize = 5;

/// One call in flight, the workers taking turns (`turns` says how) for `duration` after
/// [`WARMUP`]: one sample per worker. Their calls are made in the same stretch of time, so the
/// drift of a shared machine cancels out of the difference between them.
pub(crate) async fn take_turns(mut workers: Vec<Worker>, duration: Duration, turns: Turns) -> Vec<Sample> {
    let measure_from = Instant::now() + WARMUP;
    let end = measure_from + duration;
    let mut samples: Vec<Sample> = workers
        .iter()
        .map(|_| Sample {
            latencies_us: Vec::new(),
            elapsed: duration,
            errors: 0,
            cpu: Vec::new(),
            peak_rss: Vec::new(),
        })
        .collect();
    while Instant::now() < end {
        for (call, sample) in workers.iter_mut().zip(samples.iter_mut()) {
            let (run_end, settle) = match turns {
                Turns::EachCall => (None, 0),
                Turns::Runs(length) => (Some(Instant::now() + length), SETTLE),
            };
            let mut made = 0;
            loop {
                let began = Instant::now();
                let ok = call().await;
                if began >= measure_from && made >= settle {
                    if ok {
                        sample.latencies_us.push(began.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
                    } else {
                        sample.errors += 1;
                    }
                }
                made += 1;
                if run_end.is_none_or(|run_end| Instant::now() >= run_end) {
                    break;
                }
            }
        }
    }
    samples
}

/// What an HTTP worker sends on every request.
#[derive(Clone, Debug)]
pub(crate) struct HttpCall {
    pub(crate) method: &'static str,
    pub(crate) path: &'static str,
    pub(crate) body: Bytes,
}

impl HttpCall {
    /// `GET /`.
    pub(crate) fn get() -> Self {
        Self { method: "GET", path: "/", body: Bytes::new() }
    }

    /// `POST path` with a JSON body.
    pub(crate) fn post_json(path: &'static str, body: &serde_json::Value) -> Self {
        Self { method: "POST", path, body: serde_json::to_vec(body).expect("json").into() }
    }
}

/// An HTTP/1.1 keep-alive connection to `address` issuing `call` in a loop; a call succeeds
/// when the answer is 2xx and its body arrives whole.
pub(crate) async fn http_worker(address: SocketAddr, call: HttpCall) -> Worker {
    let stream = tokio::net::TcpStream::connect(address).await.expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.expect("handshake");
    tokio::spawn(conn);
    let sender = Arc::new(tokio::sync::Mutex::new(sender));
    Box::new(move || {
        let (sender, call) = (sender.clone(), call.clone());
        Box::pin(async move {
            let body = ferry_tests::http::full(call.body);
            let req = ferry_tests::http::request(call.method, "localhost", call.path, body).expect("request");
            let mut sender = sender.lock().await;
            // The connection takes the next request only once it has finished the last one.
            if sender.ready().await.is_err() {
                return false;
            }
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
