//! Log set-up shared by every Ferry binary.

/// Install a stderr log subscriber, filtered by `FERRY_LOG` (else `default_filter`, else
/// `info`), unless the program already has one.
pub fn init_logging(default_filter: Option<&str>) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("FERRY_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(default_filter.unwrap_or("info")))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(false).try_init();
}
