//! The bridge's command line: the SDK's start-up flags, where the foreign provider listens,
//! and how to start it (`--exec`). See providers/bridge/README.md.

use std::{fmt, path::PathBuf, str::FromStr, time::Duration};

use clap::Parser;
use ferry_provider_sdk::StartupArgs;

/// Flags of `ferry-provider-bridge`.
#[derive(Debug, Parser)]
#[command(name = "ferry-provider-bridge", about = "A Ferry provider that forwards to a gRPC provider beside it")]
pub(crate) struct BridgeArgs {
    #[command(flatten)]
    pub(crate) startup: StartupArgs,
    /// Where the foreign provider serves gRPC: `unix:PATH` or `HOST:PORT` (`http://HOST:PORT`).
    /// With --exec it defaults to a socket in a private directory.
    #[arg(long, env = "FERRY_BRIDGE_CONNECT")]
    pub(crate) connect: Option<Address>,
    /// Where the bridge serves the `Lattice` service to the foreign provider: `unix:PATH` or
    /// `HOST:PORT`. With --exec it defaults to a socket beside the provider's.
    #[arg(long, env = "FERRY_BRIDGE_LATTICE_LISTEN")]
    pub(crate) lattice_listen: Option<Address>,
    /// How often the foreign provider's health is asked, in milliseconds.
    #[arg(long, env = "FERRY_BRIDGE_HEALTH_INTERVAL_MS", default_value_t = 1000)]
    pub(crate) health_interval_ms: u64,
    /// How long the bridge waits for the foreign provider before joining the lattice anyway, in
    /// milliseconds; links and calls wait for it no longer than that.
    #[arg(long, env = "FERRY_BRIDGE_WAIT_MS", default_value_t = 10_000)]
    pub(crate) wait_ms: u64,
    /// Time a process started with --exec gets between SIGTERM and SIGKILL, in milliseconds.
    #[arg(long, env = "FERRY_BRIDGE_STOP_GRACE_MS", default_value_t = 5_000)]
    pub(crate) stop_grace_ms: u64,
    /// Start the foreign provider and keep it running: the command and its arguments. Comes
    /// last: every word after it belongs to the command.
    #[arg(long, num_args = 1.., allow_hyphen_values = true, value_name = "CMD")]
    pub(crate) exec: Vec<String>,
}

impl BridgeArgs {
    pub(crate) fn health_interval(&self) -> Duration {
        Duration::from_millis(self.health_interval_ms.max(10))
    }
}

/// Where the foreign provider listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Address {
    /// A Unix socket (the default: no port to pick, reachable only on this machine, guarded by
    /// file permissions).
    Unix(PathBuf),
    /// A TCP address, `host:port`.
    Tcp(String),
}

impl FromStr for Address {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(path) = s.strip_prefix("unix://").or_else(|| s.strip_prefix("unix:")) {
            if path.is_empty() {
                return Err("unix: needs a socket path, `unix:/run/kv.sock`".into());
            }
            return Ok(Address::Unix(PathBuf::from(path)));
        }
        let hostport = s.strip_prefix("http://").or_else(|| s.strip_prefix("tcp://")).unwrap_or(s);
        let hostport = hostport.trim_end_matches('/');
        match hostport.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
                Ok(Address::Tcp(hostport.to_owned()))
            }
            _ => Err(format!("expected unix:PATH or HOST:PORT, got {s:?}")),
        }
    }
}

/// The address as gRPC libraries take it for a server to listen on: `unix:PATH` or
/// `HOST:PORT` (what a process started with --exec finds in `FERRY_BRIDGE_LISTEN`).
impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Unix(path) => write!(f, "unix:{}", path.display()),
            Address::Tcp(hostport) => f.write_str(hostport),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_in_every_spelling_and_garbage_is_refused() {
        assert_eq!("unix:/run/a.sock".parse(), Ok(Address::Unix("/run/a.sock".into())));
        assert_eq!("unix:///run/a.sock".parse(), Ok(Address::Unix("/run/a.sock".into())));
        assert_eq!("127.0.0.1:50051".parse(), Ok(Address::Tcp("127.0.0.1:50051".into())));
        assert_eq!("http://localhost:7/".parse(), Ok(Address::Tcp("localhost:7".into())));
        for bad in ["unix:", "localhost", ":80", "host:port", "host:70000"] {
            assert!(bad.parse::<Address>().is_err(), "{bad}");
        }
        assert_eq!(Address::Unix("/x.sock".into()).to_string(), "unix:/x.sock");
    }

    #[test]
    fn exec_takes_every_word_after_it() {
        let args = BridgeArgs::try_parse_from([
            "bridge",
            "--provider-id",
            "kv",
            "--exec",
            "python3",
            "provider.py",
            "--threads",
            "-v",
        ])
        .expect("valid flags");
        assert_eq!(args.exec, ["python3", "provider.py", "--threads", "-v"]);
        assert_eq!(args.startup.provider_id.as_deref(), Some("kv"));
    }
}
