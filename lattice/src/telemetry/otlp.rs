//! OTLP export of a process's spans and metrics over gRPC, to `--otlp-endpoint` or the standard
//! `OTEL_EXPORTER_OTLP_*` variables. Off unless an endpoint is configured; then spans are made by
//! `tracing-opentelemetry` from the process's traced `tracing` spans (only Ferry's own, at info
//! or above, whatever the log filter), and the counters and histograms of
//! [`crate::metrics`] are recorded into OpenTelemetry instruments of the same names.
//!
//! The exporters talk gRPC through tonic, which needs a Tokio reactor; the SDK's batch span
//! processor and periodic metric reader run on threads of their own. Each export is therefore run
//! on a small runtime of the pipeline's own (one worker), so it works the same under a provider's
//! single-threaded runtime, a host's many, and while those runtimes shut down.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use ferry_proto::trace::TraceParent;
use opentelemetry::{
    Context, KeyValue,
    metrics::{Counter, Histogram, Meter, MeterProvider as _},
    trace::{SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState},
};
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::{
    Resource,
    error::OTelSdkResult,
    metrics::{SdkMeterProvider, Temporality, data::ResourceMetrics, exporter::PushMetricExporter},
    trace::{SdkTracerProvider, SpanData, SpanExporter},
};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// Whether spans and metrics are exported (set once, by [`Pipeline::start`]).
static EXPORTING: AtomicBool = AtomicBool::new(false);
/// The meter the metrics of [`crate::metrics`] are recorded with, once exporting.
static METER: OnceLock<Meter> = OnceLock::new();
/// Instruments by metric name, made on first use.
static INSTRUMENTS: Mutex<Option<HashMap<&'static str, Instrument>>> = Mutex::new(None);

/// Whether this process exports spans and metrics over OTLP.
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// Where a process exports to, and what it calls itself there.
#[derive(Debug, Clone, Default)]
pub struct Export {
    /// The collector's gRPC endpoint (`http://collector:4317`); `None` leaves it to the
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` / `OTEL_EXPORTER_OTLP_{TRACES,METRICS}_ENDPOINT` variables,
    /// and with none of them set nothing is exported.
    pub endpoint: Option<String>,
    /// `service.name`, unless `OTEL_SERVICE_NAME` says otherwise: `ferry-host`, a provider's id.
    pub service: String,
    /// More resource attributes: the lattice, the instance.
    pub attributes: Vec<(&'static str, String)>,
}

impl Export {
    /// Whether this configuration exports anything: an endpoint given, or one in the
    /// environment, and the SDK not disabled (`OTEL_SDK_DISABLED=true`).
    pub fn wanted(&self) -> bool {
        let set = |name: &str| std::env::var(name).is_ok_and(|v| !v.trim().is_empty());
        let disabled = std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.trim().eq_ignore_ascii_case("true"));
        !disabled
            && (self.endpoint.as_deref().is_some_and(|e| !e.trim().is_empty())
                || set("OTEL_EXPORTER_OTLP_ENDPOINT")
                || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
                || set("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"))
    }
}

/// The running export: its providers (flushed and stopped by [`Pipeline::shutdown`]) and the
/// runtime its exports run on.
pub(super) struct Pipeline {
    pub(super) tracer: SdkTracerProvider,
    meter: SdkMeterProvider,
    /// The observable gauges, kept for the pipeline's life.
    _gauges: Vec<opentelemetry::metrics::ObservableGauge<f64>>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Pipeline {
    /// Build the exporters and providers for `export`.
    pub(super) fn start(export: &Export) -> Result<Self, String> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("ferry-otlp")
            .enable_all()
            .build()
            .map_err(|err| format!("cannot start the OTLP exporter's runtime: {err}"))?;
        let handle = runtime.handle().clone();
        // tonic's channel spawns its worker where it is built.
        let _entered = runtime.enter();
        let mut spans = opentelemetry_otlp::SpanExporter::builder().with_tonic();
        let mut metrics =
            opentelemetry_otlp::MetricExporter::builder().with_tonic().with_temporality(Temporality::Cumulative);
        if let Some(endpoint) = export.endpoint.as_deref().filter(|e| !e.trim().is_empty()) {
            spans = spans.with_endpoint(endpoint);
            metrics = metrics.with_endpoint(endpoint);
        }
        let spans = spans.build().map_err(|err| format!("cannot build the OTLP span exporter: {err}"))?;
        let metrics = metrics.build().map_err(|err| format!("cannot build the OTLP metric exporter: {err}"))?;
        let resource = Resource::builder()
            .with_service_name(export.service.clone())
            .with_attributes(export.attributes.iter().map(|(k, v)| KeyValue::new(*k, v.clone())))
            .build();
        // `Resource::builder` reads OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES; an explicit
        // OTEL_SERVICE_NAME wins over the name given here.
        let resource = match std::env::var("OTEL_SERVICE_NAME") {
            Ok(name) if !name.trim().is_empty() => Resource::builder_empty()
                .with_attributes(resource.iter().map(|(k, v)| KeyValue::new(k.clone(), v.clone())))
                .with_service_name(name)
                .build(),
            _ => resource,
        };
        let tracer = SdkTracerProvider::builder()
            .with_batch_exporter(OnRuntime { inner: Arc::new(spans), handle: handle.clone() })
            .with_resource(resource.clone())
            .build();
        let meter = SdkMeterProvider::builder()
            .with_periodic_exporter(OnRuntime { inner: Arc::new(metrics), handle })
            .with_resource(resource)
            .build();
        let ferry_meter = meter.meter("ferry");
        // Gauges are read when the reader collects, from the same readings a scrape shows.
        let gauges = crate::metrics::GAUGES
            .iter()
            .map(|&(name, help)| {
                ferry_meter
                    .f64_observable_gauge(name)
                    .with_description(help)
                    .with_callback(move |observer| {
                        for reading in crate::metrics::gauges().into_iter().filter(|r| r.name == name) {
                            let labels: Vec<KeyValue> =
                                reading.labels.iter().map(|(k, v)| KeyValue::new(*k, v.clone())).collect();
                            observer.observe(reading.value, &labels);
                        }
                    })
                    .build()
            })
            .collect();
        let _ = METER.set(ferry_meter);
        EXPORTING.store(true, Ordering::Relaxed);
        drop(_entered);
        Ok(Self { tracer, meter, _gauges: gauges, runtime: Some(runtime) })
    }

    /// Export what is pending and stop. Blocks the calling thread for as long as the last
    /// exports take (bounded by the exporters' timeouts).
    pub(super) fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        let Some(runtime) = self.runtime.take() else { return };
        EXPORTING.store(false, Ordering::Relaxed);
        let flush = || {
            if let Err(err) = self.tracer.shutdown() {
                eprintln!("OTLP: the last spans were not exported: {err}");
            }
            if let Err(err) = self.meter.shutdown() {
                eprintln!("OTLP: the last metrics were not exported: {err}");
            }
        };
        // Inside an async runtime the blocking wait must be declared; elsewhere it is plain.
        match tokio::runtime::Handle::try_current() {
            Ok(current) if current.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(flush);
            }
            _ => flush(),
        }
        runtime.shutdown_background();
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        self.stop();
    }
}

/// An exporter whose exports run on the pipeline's runtime.
#[derive(Debug)]
struct OnRuntime<E> {
    inner: Arc<E>,
    handle: tokio::runtime::Handle,
}

impl SpanExporter for OnRuntime<opentelemetry_otlp::SpanExporter> {
    fn export(&self, batch: Vec<SpanData>) -> impl Future<Output = OTelSdkResult> + Send {
        let (inner, handle) = (self.inner.clone(), self.handle.clone());
        async move {
            handle.spawn(async move { inner.export(batch).await }).await.unwrap_or_else(|err| {
                Err(opentelemetry_sdk::error::OTelSdkError::InternalFailure(format!("span export task failed: {err}")))
            })
        }
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.set_resource(resource);
        }
    }
}

impl PushMetricExporter for OnRuntime<opentelemetry_otlp::MetricExporter> {
    fn export(&self, metrics: &ResourceMetrics) -> impl Future<Output = OTelSdkResult> + Send {
        // The periodic reader calls this on its own thread, outside any runtime, so blocking
        // on the pipeline's runtime is allowed; the borrowed metrics stay where they are.
        let result = self.handle.block_on(self.inner.export(metrics));
        std::future::ready(result)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn temporality(&self) -> Temporality {
        self.inner.temporality()
    }
}

/// Make `span` the child of `caller` in OpenTelemetry (or a root, without one) and return its
/// own trace position; `None` when the span is not recorded (filtered out, not exporting).
pub(super) fn adopt(span: &tracing::Span, caller: Option<TraceParent>) -> Option<TraceParent> {
    if let Some(caller) = caller {
        let remote = SpanContext::new(
            TraceId::from_bytes(caller.trace_id),
            SpanId::from_bytes(caller.span_id),
            TraceFlags::new(caller.flags),
            true,
            TraceState::default(),
        );
        span.set_parent(Context::new().with_remote_span_context(remote)).ok()?;
    }
    let context = span.context();
    let own = context.span().span_context().clone();
    own.is_valid().then(|| TraceParent {
        trace_id: own.trace_id().to_bytes(),
        span_id: own.span_id().to_bytes(),
        flags: own.trace_flags().to_u8(),
    })
}

enum Instrument {
    Counter(Counter<u64>),
    Histogram(Histogram<f64>),
}

fn attributes(labels: &[(&'static str, &str)]) -> Vec<KeyValue> {
    labels.iter().map(|(k, v)| KeyValue::new(*k, (*v).to_owned())).collect()
}

fn with_instrument(name: &'static str, make: impl FnOnce(&Meter) -> Instrument, record: impl FnOnce(&Instrument)) {
    let Some(meter) = METER.get() else { return };
    let mut instruments = INSTRUMENTS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let instrument = instruments.get_or_insert_with(HashMap::new).entry(name).or_insert_with(|| make(meter));
    record(instrument);
}

/// Add `by` to the OTLP counter `name` (when exporting).
pub(crate) fn count(name: &'static str, help: &'static str, labels: &[(&'static str, &str)], by: u64) {
    with_instrument(
        name,
        |meter| Instrument::Counter(meter.u64_counter(name).with_description(help).build()),
        |instrument| {
            if let Instrument::Counter(counter) = instrument {
                counter.add(by, &attributes(labels));
            }
        },
    );
}

/// Record `seconds` in the OTLP histogram `name` with `bounds` (when exporting).
pub(crate) fn observe(
    name: &'static str,
    help: &'static str,
    labels: &[(&'static str, &str)],
    bounds: &[f64],
    seconds: f64,
) {
    with_instrument(
        name,
        |meter| {
            Instrument::Histogram(
                meter
                    .f64_histogram(name)
                    .with_description(help)
                    .with_unit("s")
                    .with_boundaries(bounds.to_vec())
                    .build(),
            )
        },
        |instrument| {
            if let Instrument::Histogram(histogram) = instrument {
                histogram.record(seconds, &attributes(labels));
            }
        },
    );
}
