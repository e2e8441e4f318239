//! Log set-up shared by every Ferry binary: the same filter (`--log-level`, `FERRY_LOG`) and
//! format (`--log-format`, `FERRY_LOG_FORMAT`) everywhere, on stderr.

use std::{fmt, str::FromStr};

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
/// has one.
pub fn init_logging(default_filter: Option<&str>) {
    let filter = std::env::var("FERRY_LOG").ok().filter(|f| !f.trim().is_empty());
    init_logging_with(filter.as_deref().or(default_filter), None);
}

/// Install a stderr log subscriber with `filter` (else `FERRY_LOG`, else `info`) in `format`
/// (else `FERRY_LOG_FORMAT`, else text), unless the program already has one. An unusable
/// filter or format falls back to the default, with a warning once logging is up.
pub fn init_logging_with(filter: Option<&str>, format: Option<LogFormat>) {
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
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(false);
    let installed = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(true).with_span_list(false).try_init(),
    };
    if installed.is_ok() {
        for problem in problems {
            tracing::warn!("{problem}");
        }
    }
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
