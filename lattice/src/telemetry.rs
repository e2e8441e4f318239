//! Telemetry set-up shared by every Ferry binary: logs with the same filter (`--log-level`,
//! `FERRY_LOG`) and format (`--log-format`, `FERRY_LOG_FORMAT`) everywhere, on stderr; the OTLP
//! export of spans and metrics when an endpoint is configured ([`otlp`]); and the place of each
//! traced call in its trace ([`follow`]), the same whether spans are exported or not.

use std::{fmt, str::FromStr};

use ferry_proto::trace::TraceParent;
use tracing_subscriber::{Layer as _, layer::SubscriberExt as _, util::SubscriberInitExt as _};

pub mod otlp;

pub use otlp::{Export, exporting};

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per line — `timestamp`, `level`, `target`, `message` and the event's
    /// fields at the top level, and `span` with the trace and span ids of the call it belongs
    /// to — for log shippers.
    Json,
}

impl LogFormat {
    /// The name the flags and `FERRY_LOG_FORMAT` take.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Json => "json",
        }
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            other => Err(format!("unknown log format {other:?} (text or json)")),
        }
    }
}

/// Install a stderr log subscriber, filtered by `FERRY_LOG` (else `default_filter`, else
/// `info`) and formatted as `FERRY_LOG_FORMAT` says (else text), unless the program already
/// has one. Exports nothing.
pub fn init_logging(default_filter: Option<&str>) {
    let filter = std::env::var("FERRY_LOG").ok().filter(|f| !f.trim().is_empty());
    init(filter.as_deref().or(default_filter), None, None).leak();
}

/// [`init`] for a program that exports nothing.
pub fn init_logging_with(filter: Option<&str>, format: Option<LogFormat>) {
    init(filter, None, format).leak();
}

/// A process's telemetry once [`init`] set it up: hold it for the process's life and
/// [`Telemetry::shutdown`] it at the end, so the last spans and metrics are exported.
#[must_use = "dropping it stops the export of spans and metrics"]
pub struct Telemetry {
    pipeline: Option<otlp::Pipeline>,
}

impl Telemetry {
    /// Export what is pending and stop exporting. Blocks for as long as the last export takes.
    pub fn shutdown(mut self) {
        if let Some(pipeline) = self.pipeline.take() {
            pipeline.shutdown();
        }
    }

    /// Keep exporting for the rest of the process, without a final flush.
    fn leak(self) {
        std::mem::forget(self);
    }
}

/// Install the process's log subscriber — `filter` (else `FERRY_LOG`, else `info`) in `format`
/// (else `FERRY_LOG_FORMAT`, else text) — and, when `export` configures an endpoint, the OTLP
/// export of spans and metrics, unless the program already has a subscriber. An unusable
/// filter, format or export configuration falls back to the default (no export), with a
/// warning once logging is up.
pub fn init(filter: Option<&str>, export: Option<&Export>, format: Option<LogFormat>) -> Telemetry {
    if tracing::dispatcher::has_been_set() {
        return Telemetry { pipeline: None };
    }
    let mut problems = Vec::new();
    let filter = filter
        .map(str::to_owned)
        .or_else(|| std::env::var("FERRY_LOG").ok())
        .filter(|f| !f.trim().is_empty())
        .unwrap_or_else(|| "info".to_owned());
    let filter = tracing_subscriber::EnvFilter::try_new(&filter).unwrap_or_else(|err| {
        problems.push(format!("log filter {filter:?} is not usable ({err}); logging at info"));
        tracing_subscriber::EnvFilter::new("info")
    });
    let format = format.unwrap_or_else(|| match std::env::var("FERRY_LOG_FORMAT") {
        Ok(name) if !name.trim().is_empty() => name.parse().unwrap_or_else(|err: String| {
            problems.push(format!("FERRY_LOG_FORMAT: {err}; writing text"));
            LogFormat::Text
        }),
        _ => LogFormat::Text,
    });
    let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(false);
    let logs = match format {
        LogFormat::Text => logs.with_filter(filter).boxed(),
        LogFormat::Json => {
            logs.json().flatten_event(true).with_current_span(true).with_span_list(false).with_filter(filter).boxed()
        }
    };
    let pipeline = match export.filter(|export| export.wanted()).map(otlp::Pipeline::start) {
        Some(Ok(pipeline)) => Some(pipeline),
        Some(Err(err)) => {
            problems.push(format!("{err}; spans and metrics are not exported"));
            None
        }
        None => None,
    };
    // Spans go to OTLP whatever the log filter says: Ferry's own, at info or above; no event
    // becomes a span event (logs are logs).
    let spans = pipeline.as_ref().map(|pipeline| {
        use opentelemetry::trace::TracerProvider as _;
        tracing_opentelemetry::layer().with_tracer(pipeline.tracer.tracer("ferry")).with_filter(
            tracing_subscriber::filter::filter_fn(|meta| {
                meta.is_span() && meta.target().starts_with("ferry") && *meta.level() <= tracing::Level::INFO
            }),
        )
    });
    let installed = tracing_subscriber::registry().with(logs).with(spans).try_init();
    if pipeline.is_some() {
        crate::metrics::enable();
    }
    if installed.is_ok() {
        for problem in problems {
            tracing::warn!("{problem}");
        }
    }
    Telemetry { pipeline }
}

/// Give `span` (declared with empty `trace_id` and `span_id` fields) its place in a trace: the
/// child of `caller` when the call carries one, a new root when there is none but spans are
/// exported. Records the ids on the span (so log lines within it carry them) and returns what
/// calls made within it carry; `None` when the call is not traced.
pub fn follow(span: &tracing::Span, caller: Option<TraceParent>) -> Option<TraceParent> {
    let own = if exporting() {
        otlp::adopt(span, caller).or_else(|| caller.map(|c| c.child()))
    } else {
        caller.map(|c| c.child())
    };
    if let Some(own) = &own {
        span.record("trace_id", tracing::field::display(own.trace_id_hex()));
        span.record("span_id", tracing::field::display(own.span_id_hex()));
    }
    own
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_parse_by_name() {
        assert_eq!("json".parse::<LogFormat>(), Ok(LogFormat::Json));
        assert_eq!(" Text ".parse::<LogFormat>(), Ok(LogFormat::Text));
        assert!("yaml".parse::<LogFormat>().is_err());
        assert_eq!(LogFormat::Json.to_string(), "json");
    }
}
