//! Metrics of one process — invocations served, their outcome and latency — in Prometheus' text
//! format, for a scrape endpoint (`--metrics-listen`, [`serve`]). Nothing is recorded, and no
//! lock taken, until the process turns metrics on ([`enable`]): one that does not export them
//! pays a relaxed atomic load per call.
//!
//! The metric names are defined here, once, for hosts and providers alike; when the process
//! exports over OTLP ([`crate::telemetry::otlp`]) the same series go there too.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    net::SocketAddr,
    sync::{
        Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Invocations a host ran, by component, operation and outcome (`ok` or the error kind).
pub const INVOCATIONS: &str = "ferry_invocations_total";
/// How long they took, by component and operation.
pub const INVOCATION_SECONDS: &str = "ferry_invocation_duration_seconds";
/// Invocations a provider served, by provider, operation and outcome.
pub const PROVIDER_INVOCATIONS: &str = "ferry_provider_invocations_total";
/// How long they took, by provider and operation.
pub const PROVIDER_INVOCATION_SECONDS: &str = "ferry_provider_invocation_duration_seconds";
/// Instances of a component running an invocation now, by component (a gauge).
pub const INSTANCES_IN_USE: &str = "ferry_component_instances_in_use";
/// Invocations of a component taken in and waiting for an instance, by component (a gauge).
pub const QUEUED_INVOCATIONS: &str = "ferry_component_queued_invocations";
/// Whether a provider answered its last health check healthy (1) or not (0), by provider, as
/// the host checking it saw it (a gauge).
pub const PROVIDER_HEALTHY: &str = "ferry_provider_healthy";
/// Bytes of bodies streamed between processes (chunked payloads), by direction `sent` or
/// `received`.
pub const STREAMED_BYTES: &str = "ferry_streamed_bytes_total";
/// The gauges a process may report, with their help: what an OTLP exporter observes.
pub const GAUGES: [(&str, &str); 3] = [
    (INSTANCES_IN_USE, "Instances running an invocation now."),
    (QUEUED_INVOCATIONS, "Invocations waiting for an instance."),
    (PROVIDER_HEALTHY, "1 when the provider's last health check passed, else 0."),
];

/// Upper bounds of the latency buckets, in seconds: 100 µs to 10 s.
const BUCKETS: [f64; 15] =
    [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

static ENABLED: AtomicBool = AtomicBool::new(false);
static REGISTRY: Mutex<BTreeMap<&'static str, Family>> = Mutex::new(BTreeMap::new());
/// Gauges read when they are asked for (a scrape, an export), not kept up to date per call.
static COLLECTORS: Mutex<Vec<Collector>> = Mutex::new(Vec::new());

/// One gauge reading: its name (one of [`GAUGES`]), labels and value.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    /// The gauge.
    pub name: &'static str,
    /// Its labels.
    pub labels: Vec<(&'static str, String)>,
    /// Its value now.
    pub value: f64,
}

/// What reads a process's gauges when asked (its components' instances and queues, say).
pub type Collector = Box<dyn Fn() -> Vec<Reading> + Send + Sync>;

/// Label values of one series, in the order they were given.
type Labels = Vec<(&'static str, String)>;

struct Family {
    help: &'static str,
    series: BTreeMap<Labels, Series>,
}

enum Series {
    Counter(u64),
    Gauge(f64),
    Histogram { buckets: [u64; BUCKETS.len()], sum: f64, count: u64 },
}

/// Start recording (once a process exports metrics).
pub fn enable() {
    ENABLED.store(true, Ordering::Relaxed);
}

/// Whether metrics are recorded.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

fn with_series(
    name: &'static str,
    help: &'static str,
    labels: &[(&'static str, &str)],
    update: impl FnOnce(&mut Option<Series>),
) {
    let labels: Labels = labels.iter().map(|(k, v)| (*k, (*v).to_owned())).collect();
    let mut registry = REGISTRY.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let family = registry.entry(name).or_insert_with(|| Family { help, series: BTreeMap::new() });
    if let Some(existing) = family.series.get_mut(&labels) {
        let mut slot = Some(std::mem::replace(existing, Series::Counter(0)));
        update(&mut slot);
        match slot {
            Some(series) => *existing = series,
            None => {
                family.series.remove(&labels);
            }
        }
    } else {
        let mut slot = None;
        update(&mut slot);
        if let Some(series) = slot {
            family.series.insert(labels, series);
        }
    }
}

/// Add `by` to counter `name` with `labels` (when metrics are on).
pub fn count(name: &'static str, help: &'static str, labels: &[(&'static str, &str)], by: u64) {
    if !enabled() {
        return;
    }
    if crate::telemetry::exporting() {
        crate::telemetry::otlp::count(name, help, labels, by);
    }
    with_series(name, help, labels, |series| match series {
        Some(Series::Counter(value)) => *value += by,
        _ => *series = Some(Series::Counter(by)),
    });
}

/// Record `took` in histogram `name` with `labels` (when metrics are on).
pub fn observe(name: &'static str, help: &'static str, labels: &[(&'static str, &str)], took: Duration) {
    if !enabled() {
        return;
    }
    let seconds = took.as_secs_f64();
    if crate::telemetry::exporting() {
        crate::telemetry::otlp::observe(name, help, labels, &BUCKETS, seconds);
    }
    with_series(name, help, labels, |series| {
        if !matches!(series, Some(Series::Histogram { .. })) {
            *series = Some(Series::Histogram { buckets: [0; BUCKETS.len()], sum: 0.0, count: 0 });
        }
        if let Some(Series::Histogram { buckets, sum, count }) = series {
            for (bound, bucket) in BUCKETS.iter().zip(buckets.iter_mut()) {
                if seconds <= *bound {
                    *bucket += 1;
                }
            }
            *sum += seconds;
            *count += 1;
        }
    });
}

/// Set gauge `name` (one of [`GAUGES`]) with `labels` to `value` (when metrics are on).
pub fn set_gauge(name: &'static str, labels: &[(&'static str, &str)], value: f64) {
    if !enabled() {
        return;
    }
    let help = GAUGES.iter().find(|(n, _)| *n == name).map_or("", |(_, help)| help);
    with_series(name, help, labels, |series| *series = Some(Series::Gauge(value)));
}

/// Read gauges through `collector` whenever they are asked for, from now on.
pub fn register_collector(collector: Collector) {
    COLLECTORS.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(collector);
}

/// Every gauge's current reading: those set ([`set_gauge`]) and those collected.
pub fn gauges() -> Vec<Reading> {
    let mut readings = Vec::new();
    {
        let registry = REGISTRY.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for (name, family) in registry.iter() {
            for (labels, series) in &family.series {
                if let Series::Gauge(value) = series {
                    readings.push(Reading { name, labels: labels.clone(), value: *value });
                }
            }
        }
    }
    for collector in COLLECTORS.lock().unwrap_or_else(std::sync::PoisonError::into_inner).iter() {
        readings.extend(collector());
    }
    readings
}

/// One invocation's count and latency, under the names a host (`component`) or a provider
/// (`provider`) records them.
pub fn invocation(served_by: Served<'_>, operation: &str, outcome: &str, took: Duration) {
    if !enabled() {
        return;
    }
    let (counter, histogram, who, id) = match served_by {
        Served::Component(id) => (INVOCATIONS, INVOCATION_SECONDS, "component", id),
        Served::Provider(id) => (PROVIDER_INVOCATIONS, PROVIDER_INVOCATION_SECONDS, "provider", id),
    };
    count(
        counter,
        "Invocations served, by outcome (ok or the error kind).",
        &[(who, id), ("operation", operation), ("outcome", outcome)],
        1,
    );
    observe(histogram, "Time to serve an invocation, in seconds.", &[(who, id), ("operation", operation)], took);
}

/// Who served an invocation.
#[derive(Debug, Clone, Copy)]
pub enum Served<'a> {
    /// A component, on a host.
    Component(&'a str),
    /// A provider.
    Provider(&'a str),
}

/// Everything recorded, in Prometheus' text exposition format (version 0.0.4).
pub fn render() -> String {
    let mut out = String::new();
    let registry = REGISTRY.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    for (name, family) in registry.iter() {
        let kind = match family.series.values().next() {
            Some(Series::Histogram { .. }) => "histogram",
            // Gauges, set and collected alike, are written below.
            Some(Series::Gauge(_)) => continue,
            _ => "counter",
        };
        let _ = writeln!(out, "# HELP {name} {}", family.help);
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (labels, series) in &family.series {
            match series {
                Series::Counter(value) => {
                    let _ = writeln!(out, "{name}{} {value}", label_text(labels, None));
                }
                Series::Gauge(_) => {}
                Series::Histogram { buckets, sum, count } => {
                    for (bound, bucket) in BUCKETS.iter().zip(buckets) {
                        let _ = writeln!(out, "{name}_bucket{} {bucket}", label_text(labels, Some(&bound.to_string())));
                    }
                    let _ = writeln!(out, "{name}_bucket{} {count}", label_text(labels, Some("+Inf")));
                    let _ = writeln!(out, "{name}_sum{} {sum}", label_text(labels, None));
                    let _ = writeln!(out, "{name}_count{} {count}", label_text(labels, None));
                }
            }
        }
    }
    drop(registry);
    let readings = gauges();
    for (name, help) in GAUGES {
        let mut of_name = readings.iter().filter(|r| r.name == name).peekable();
        if of_name.peek().is_none() {
            continue;
        }
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} gauge");
        for reading in of_name {
            let _ = writeln!(out, "{name}{} {}", label_text(&reading.labels, None), reading.value);
        }
    }
    out
}

/// `{k="v",…}` with values escaped, and `le` last when given.
fn label_text(labels: &Labels, le: Option<&str>) -> String {
    let escape = |v: &str| v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
    let mut parts: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{}\"", escape(v))).collect();
    if let Some(le) = le {
        parts.push(format!("le=\"{le}\""));
    }
    if parts.is_empty() { String::new() } else { format!("{{{}}}", parts.join(",")) }
}

/// Turn metrics on and answer `GET /metrics` on `address` until `stop`; the address bound.
///
/// # Errors
/// When the address cannot be bound.
pub async fn serve(
    address: SocketAddr,
    stop: CancellationToken,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    use hyper::{Response, StatusCode, body::Incoming, service::service_fn};
    let listener = tokio::net::TcpListener::bind(address).await?;
    let bound = listener.local_addr()?;
    enable();
    info!(address = %bound, "serving metrics on /metrics");
    let task = tokio::spawn(async move {
        loop {
            let (stream, _) = tokio::select! {
                () = stop.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(err) => {
                        warn!(cause = %err, "metrics listener failed to accept");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            tokio::spawn(async move {
                let service = service_fn(|request: hyper::Request<Incoming>| async move {
                    let (status, body) = if request.uri().path() == "/metrics" {
                        (StatusCode::OK, render())
                    } else {
                        (StatusCode::NOT_FOUND, "not found: metrics are on /metrics\n".to_owned())
                    };
                    let mut response = Response::new(http_body_util::Full::new(bytes::Bytes::from(body)));
                    *response.status_mut() = status;
                    response.headers_mut().insert(
                        hyper::header::CONTENT_TYPE,
                        hyper::header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                    );
                    Ok::<_, std::convert::Infallible>(response)
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
            });
        }
    });
    Ok((bound, task))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_histograms_render_in_prometheus_text() {
        enable();
        count("ferry_test_total", "A test counter.", &[("who", "a\"b")], 2);
        count("ferry_test_total", "A test counter.", &[("who", "a\"b")], 3);
        observe("ferry_test_seconds", "A test histogram.", &[("op", "x")], Duration::from_millis(2));
        let text = render();
        assert!(text.contains("# TYPE ferry_test_total counter\nferry_test_total{who=\"a\\\"b\"} 5\n"), "{text}");
        assert!(text.contains("ferry_test_seconds_bucket{op=\"x\",le=\"0.001\"} 0\n"), "{text}");
        assert!(text.contains("ferry_test_seconds_bucket{op=\"x\",le=\"0.0025\"} 1\n"), "{text}");
        assert!(text.contains("ferry_test_seconds_count{op=\"x\"} 1\n"), "{text}");
    }
}
