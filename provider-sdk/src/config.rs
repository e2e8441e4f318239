//! Start-up data: from one JSON line on stdin (host-spawned) or from flags and environment
//! variables (sidecar). See docs/provider-startup.md.

use std::{collections::BTreeMap, num::NonZeroUsize};

use clap::Parser;
use ferry_proto::startup::{ProviderStartup, STARTUP_VERSION};

use crate::SdkError;

/// Flags and environment variables of a provider process started on its own.
///
/// When `--provider-id` (or `FERRY_PROVIDER_ID`) is absent the provider reads its start-up data
/// as one JSON line from stdin instead, which is what a host does when it spawns one.
#[derive(Debug, Clone, Parser)]
#[command(about = "A Ferry capability provider")]
pub struct StartupArgs {
    /// NATS server URL.
    #[arg(long, env = "FERRY_NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
    /// Lattice to join.
    #[arg(long, env = "FERRY_LATTICE", default_value = "default")]
    pub lattice: String,
    /// Provider id; when absent, start-up data is read from stdin.
    #[arg(long, env = "FERRY_PROVIDER_ID")]
    pub provider_id: Option<String>,
    /// Provider credential (`ferrycred1.…`), from `ferry keys credential`.
    #[arg(long, env = "FERRY_PROVIDER_CREDENTIAL", hide_env_values = true)]
    pub credential: Option<String>,
    /// File holding the provider credential.
    #[arg(long, env = "FERRY_PROVIDER_CREDENTIAL_FILE")]
    pub credential_file: Option<std::path::PathBuf>,
    /// Default timeout of invocations this provider makes, in milliseconds.
    #[arg(long, env = "FERRY_RPC_TIMEOUT_MS")]
    pub rpc_timeout_ms: Option<u64>,
    /// Log filter, `info` or `ferry=debug`.
    #[arg(long, env = "FERRY_LOG")]
    pub log_level: Option<String>,
    /// Log format: `text`, or `json` (one object per line).
    #[arg(long, env = "FERRY_LOG_FORMAT", value_parser = clap::builder::PossibleValuesParser::new(["text", "json"]))]
    pub log_format: Option<String>,
    /// Export spans and metrics over OTLP/gRPC to this collector endpoint
    /// (`http://collector:4317`); without it, to `OTEL_EXPORTER_OTLP_ENDPOINT` when set.
    #[arg(long, value_name = "URL")]
    pub otlp_endpoint: Option<String>,
    /// Serve the provider's metrics (Prometheus text format) on `GET /metrics` at this address.
    #[arg(long, env = "FERRY_METRICS_LISTEN", value_name = "ADDRESS")]
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Provider-wide config, `key=value`, repeatable.
    #[arg(long = "config", value_parser = parse_pair)]
    pub config: Vec<(String, String)>,
    /// Threads the provider's tasks run on ([`crate::run_process`]). One, the default, is
    /// cheapest per call for a provider whose work is waiting on NATS and its backend: no task
    /// is woken on another thread. More suit a provider that spends CPU on each call; more
    /// instances of the provider (they share calls) scale either kind.
    #[arg(long, env = "FERRY_PROVIDER_THREADS", default_value_t = NonZeroUsize::MIN)]
    pub threads: NonZeroUsize,
}

fn parse_pair(s: &str) -> Result<(String, String), String> {
    s.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())).ok_or_else(|| format!("expected key=value, got {s:?}"))
}

impl StartupArgs {
    /// The runtime [`Self::threads`] asks for: single-threaded for one, a pool of that many
    /// worker threads for more.
    ///
    /// # Errors
    /// [`SdkError::Io`] when the runtime cannot be built (threads, the I/O driver).
    pub fn runtime(&self) -> Result<tokio::runtime::Runtime, SdkError> {
        let mut builder = match self.threads.get() {
            1 => tokio::runtime::Builder::new_current_thread(),
            n => {
                let mut builder = tokio::runtime::Builder::new_multi_thread();
                builder.worker_threads(n);
                builder
            }
        };
        Ok(builder.enable_all().build()?)
    }

    /// Turn flags into start-up data, reading stdin when no provider id was given.
    ///
    /// # Errors
    /// [`SdkError::Startup`] when data is missing or invalid.
    pub async fn resolve(self) -> Result<ProviderStartup, SdkError> {
        Ok(self.resolve_with_parent().await?.0)
    }

    /// Like [`StartupArgs::resolve`]; when the data came from stdin, also returns a future that
    /// resolves when stdin closes — the spawning host is gone — so the provider can stop.
    pub(crate) async fn resolve_with_parent(self) -> Result<(ProviderStartup, Option<ParentGone>), SdkError> {
        let Some(provider_id) = self.provider_id else {
            let (startup, gone) = read_stdin().await?;
            return Ok((startup, Some(gone)));
        };
        let credential = match (self.credential, self.credential_file) {
            (Some(c), _) => c,
            (None, Some(path)) => tokio::fs::read_to_string(&path)
                .await
                .map_err(|e| SdkError::Startup(format!("cannot read credential file {}: {e}", path.display())))?,
            (None, None) => {
                return Err(SdkError::Startup(
                    "a provider started on its own needs --credential or --credential-file (see `ferry keys credential`)".into(),
                ));
            }
        };
        let startup = ProviderStartup {
            version: STARTUP_VERSION,
            lattice: self.lattice,
            provider_id,
            nats_url: self.nats_url,
            credential: credential.trim().to_owned(),
            rpc_timeout_ms: self.rpc_timeout_ms,
            log_level: self.log_level,
            log_format: self.log_format,
            config: self.config.into_iter().collect::<BTreeMap<_, _>>(),
        };
        // Round-trip through the validating parser so both paths check the same things.
        let startup =
            ProviderStartup::from_json(startup.to_json()?.as_bytes()).map_err(|e| SdkError::Startup(e.to_string()))?;
        Ok((startup, None))
    }
}

/// Resolves when the parent process closes our stdin.
pub(crate) type ParentGone = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// A host-spawned provider that is too stuck to notice its stdin closing still dies with its
/// host: the kernel sends it SIGKILL when the host goes (the parent-death signal).
fn die_with_parent() -> Result<(), SdkError> {
    let parent = rustix::process::getppid();
    if let Err(err) = rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL)) {
        tracing::warn!(cause = %err, "cannot arm the parent-death signal; relying on stdin alone");
        return Ok(());
    }
    // The host may have gone before the signal was armed.
    if rustix::process::getppid() != parent {
        return Err(SdkError::Startup("the host that started this provider is gone".into()));
    }
    Ok(())
}

/// Longest wait for the start-up line on stdin.
const STARTUP_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Read the start-up line from stdin and watch for its end, which means the parent is gone.
///
/// Stdin is read on a plain thread, not on tokio's blocking pool: a runtime waits for its
/// blocking tasks when it shuts down, and a read of a pipe the parent keeps open never ends, so
/// a provider stopped by SIGTERM would hang on its way out.
async fn read_stdin() -> Result<(ProviderStartup, ParentGone), SdkError> {
    let (line_tx, line_rx) = tokio::sync::oneshot::channel::<std::io::Result<String>>();
    let (eof_tx, eof_rx) = tokio::sync::oneshot::channel::<()>();
    std::thread::Builder::new()
        .name("ferry-stdin".into())
        .spawn(move || {
            let mut stdin = std::io::stdin().lock();
            let mut line = String::new();
            let first = std::io::BufRead::read_line(&mut stdin, &mut line).map(|_| line);
            let got_line = matches!(&first, Ok(line) if !line.is_empty());
            let _ = line_tx.send(first);
            if got_line {
                // Anything after the start-up line is ignored; the end of the stream matters.
                let _ = std::io::copy(&mut stdin, &mut std::io::sink());
            }
            let _ = eof_tx.send(());
        })
        .map_err(|e| SdkError::Startup(format!("cannot start the stdin reader: {e}")))?;
    let line = tokio::time::timeout(STARTUP_READ_TIMEOUT, line_rx)
        .await
        .map_err(|_| {
            SdkError::Startup("no start-up data on stdin within 30 s (pass --provider-id to run on your own)".into())
        })?
        .map_err(|_| SdkError::Startup("the stdin reader stopped before start-up data".into()))??;
    if line.is_empty() {
        return Err(SdkError::Startup(
            "stdin closed before start-up data (pass --provider-id to run on your own)".into(),
        ));
    }
    let startup = ProviderStartup::from_json(line.trim().as_bytes()).map_err(|e| SdkError::Startup(e.to_string()))?;
    die_with_parent()?;
    let gone = Box::pin(async move {
        // A dropped sender (the thread is gone) means the same as end of file.
        let _ = eof_rx.await;
        tracing::info!("stdin closed: the host that started this provider is gone");
    });
    Ok((startup, gone))
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;
    use tokio::runtime::RuntimeFlavor;

    use super::StartupArgs;

    fn flavor(args: &[&str]) -> RuntimeFlavor {
        let args = StartupArgs::try_parse_from([&["provider"], args].concat()).expect("valid flags");
        args.runtime().expect("runtime").handle().runtime_flavor()
    }

    #[test]
    fn one_thread_unless_asked_for_more() {
        assert_eq!(flavor(&[]), RuntimeFlavor::CurrentThread);
        assert_eq!(flavor(&["--threads", "1"]), RuntimeFlavor::CurrentThread);
        assert_eq!(flavor(&["--threads", "3"]), RuntimeFlavor::MultiThread);
    }

    #[test]
    fn zero_or_garbage_threads_are_refused_by_name() {
        for bad in ["0", "-2", "many"] {
            let flag = format!("--threads={bad}");
            let err = StartupArgs::try_parse_from(["provider", flag.as_str()]).expect_err(bad).to_string();
            assert!(err.contains("--threads"), "{bad}: {err}");
        }
    }
}
