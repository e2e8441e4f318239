//! Real `nats-server` and `redis-server` processes on free loopback ports.

use std::{
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::Process;

/// A free TCP port on 127.0.0.1.
///
/// # Errors
/// When no port can be bound.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

async fn wait_for_port(port: u16, process: &mut Process) -> anyhow::Result<()> {
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if start.elapsed() > Duration::from_secs(20) {
            bail!("server on port {port} did not start:\n{}", process.logs());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    Ok(())
}

/// `nats-server -js` on a free port with its own store directory.
#[derive(Debug)]
pub struct NatsServer {
    /// The process; killed on drop.
    pub process: Process,
    /// Client URL, `nats://127.0.0.1:PORT`.
    pub url: String,
    store: PathBuf,
    port: u16,
}

impl NatsServer {
    /// Start one; the binary is `$FERRY_NATS_SERVER` or `nats-server` on PATH.
    ///
    /// # Errors
    /// When the binary is missing or does not start.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with_config("").await
    }

    /// [`NatsServer::start`] with `config` (nats-server's configuration syntax) as its
    /// configuration file, for settings that have no flag (`ping_interval: "1s"`, …).
    ///
    /// # Errors
    /// As [`NatsServer::start`].
    pub async fn start_with_config(config: &str) -> anyhow::Result<Self> {
        let port = free_port()?;
        let store = std::env::temp_dir().join(format!("ferry-test-js-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&store)?;
        std::fs::write(store.join("nats.conf"), config)?;
        let process = spawn_nats(port, &store).await?;
        Ok(Self { process, url: format!("nats://127.0.0.1:{port}"), store, port })
    }

    /// Kill the server with SIGKILL and start it again on the same port and store, as after a
    /// crash; returns the new process (killed on drop; [`NatsServer::process`] is the dead one
    /// from then on).
    ///
    /// # Errors
    /// When it does not start again.
    pub async fn crash_and_restart(&self) -> anyhow::Result<Process> {
        crate::process::signal(self.process.pid(), "KILL");
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
            if start.elapsed() > Duration::from_secs(10) {
                bail!("the killed nats-server still listens on {}", self.port);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        spawn_nats(self.port, &self.store).await
    }
}

/// `nats-server` with JetStream on `port`, storing in `store` (which holds its `nats.conf`).
async fn spawn_nats(port: u16, store: &Path) -> anyhow::Result<Process> {
    let bin = std::env::var("FERRY_NATS_SERVER").unwrap_or_else(|_| "nats-server".into());
    let mut command = Command::new(&bin);
    command.arg("-c").arg(store.join("nats.conf"));
    command.args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"]).arg(store);
    let mut process = Process::spawn("nats-server", command).with_context(|| format!("is {bin} installed?"))?;
    wait_for_port(port, &mut process).await?;
    Ok(process)
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.process.kill();
        let _ = std::fs::remove_dir_all(&self.store);
    }
}

/// `redis-server` on a free port, nothing persisted.
#[derive(Debug)]
pub struct RedisServer {
    /// The process; killed on drop.
    pub process: Process,
    /// Client URL, `redis://127.0.0.1:PORT`.
    pub url: String,
}

impl RedisServer {
    /// Start one; the binary is `$FERRY_REDIS_SERVER` or `redis-server` on PATH.
    ///
    /// # Errors
    /// When the binary is missing or does not start.
    pub async fn start() -> anyhow::Result<Self> {
        let port = free_port()?;
        let bin = std::env::var("FERRY_REDIS_SERVER").unwrap_or_else(|_| "redis-server".into());
        let mut command = Command::new(&bin);
        command.args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]);
        let mut process = Process::spawn("redis-server", command).with_context(|| format!("is {bin} installed?"))?;
        wait_for_port(port, &mut process).await?;
        Ok(Self { process, url: format!("redis://127.0.0.1:{port}") })
    }
}
