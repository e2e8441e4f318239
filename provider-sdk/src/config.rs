//! Start-up data: from one JSON line on stdin (host-spawned) or from flags and environment
//! variables (sidecar). See docs/provider-startup.md.

use std::collections::BTreeMap;

use clap::Parser;
use ferry_proto::startup::{ProviderStartup, STARTUP_VERSION};
use tokio::io::AsyncBufReadExt;

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
    /// Provider-wide config, `key=value`, repeatable.
    #[arg(long = "config", value_parser = parse_pair)]
    pub config: Vec<(String, String)>,
}

fn parse_pair(s: &str) -> Result<(String, String), String> {
    s.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())).ok_or_else(|| format!("expected key=value, got {s:?}"))
}

impl StartupArgs {
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
            let (startup, stdin) = read_stdin().await?;
            return Ok((startup, Some(parent_gone(stdin))));
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

type Stdin = tokio::io::BufReader<tokio::io::Stdin>;

fn parent_gone(mut stdin: Stdin) -> ParentGone {
    Box::pin(async move {
        let mut line = String::new();
        loop {
            line.clear();
            match stdin.read_line(&mut line).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        tracing::info!("stdin closed: the host that started this provider is gone");
    })
}

async fn read_stdin() -> Result<(ProviderStartup, Stdin), SdkError> {
    let mut line = String::new();
    let mut stdin = tokio::io::BufReader::new(tokio::io::stdin());
    let read = tokio::time::timeout(std::time::Duration::from_secs(30), stdin.read_line(&mut line)).await.map_err(
        |_| SdkError::Startup("no start-up data on stdin within 30 s (pass --provider-id to run on your own)".into()),
    )??;
    if read == 0 {
        return Err(SdkError::Startup(
            "stdin closed before start-up data (pass --provider-id to run on your own)".into(),
        ));
    }
    let startup = ProviderStartup::from_json(line.trim().as_bytes()).map_err(|e| SdkError::Startup(e.to_string()))?;
    Ok((startup, stdin))
}
