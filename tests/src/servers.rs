//! Real `nats-server` and `redis-server` processes on free loopback ports.

use std::{
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::Command,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::Process;

/// A free TCP port on 127.0.0.1, never one this test run has handed out before: ports are
/// chosen before the servers that bind them start, and the kernel may offer a port it just
/// released again (a cluster node's monitor once got its own route port).
///
/// # Errors
/// When no port can be bound.
pub fn free_port() -> anyhow::Result<u16> {
    static HANDED_OUT: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    for _ in 0..1000 {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        if HANDED_OUT.lock().unwrap_or_else(|p| p.into_inner()).insert(port) {
            return Ok(port);
        }
    }
    bail!("every free port the kernel offered was handed out already")
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
    jetstream: bool,
    monitor: Option<u16>,
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
        Self::start_node(config, true, None).await
    }

    /// A server with `config`, JetStream on or off, answering monitoring requests on port
    /// `monitor` when given (a cluster node, a leaf node).
    async fn start_node(config: &str, jetstream: bool, monitor: Option<u16>) -> anyhow::Result<Self> {
        let port = free_port()?;
        let store = std::env::temp_dir().join(format!("ferry-test-js-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&store)?;
        std::fs::write(store.join("nats.conf"), config)?;
        let process = spawn_node(port, &store, jetstream, monitor).await?;
        Ok(Self { process, url: format!("nats://127.0.0.1:{port}"), store, port, jetstream, monitor })
    }

    /// Kill the server with SIGKILL and start it again on the same port and store, as after a
    /// crash; returns the new process (killed on drop; [`NatsServer::process`] is the dead one
    /// from then on).
    ///
    /// # Errors
    /// When it does not start again.
    pub async fn crash_and_restart(&self) -> anyhow::Result<Process> {
        self.crash().await?;
        self.start_again().await
    }

    /// Kill the server with SIGKILL and wait until its port is closed.
    ///
    /// # Errors
    /// When it still listens after 10 s.
    pub async fn crash(&self) -> anyhow::Result<()> {
        crate::process::signal(self.process.pid(), "KILL");
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
            if start.elapsed() > Duration::from_secs(10) {
                bail!("the killed nats-server still listens on {}", self.port);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }

    /// Start the server (again) on its port and store; the new process, killed on drop.
    ///
    /// # Errors
    /// When it does not start.
    pub async fn start_again(&self) -> anyhow::Result<Process> {
        spawn_node(self.port, &self.store, self.jetstream, self.monitor).await
    }

    /// How many clients are connected to this server now (from its monitoring endpoint).
    ///
    /// # Errors
    /// When the server has no monitoring port or does not answer.
    pub fn client_connections(&self) -> anyhow::Result<u64> {
        self.monitor_count("connz", "num_connections")
    }

    /// The number `field` of the server's monitoring page `page` (`connz`, `leafz`, …).
    fn monitor_count(&self, page: &str, field: &str) -> anyhow::Result<u64> {
        use std::io::{Read as _, Write as _};
        let port = self.monitor.context("this server has no monitoring port")?;
        let mut stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(stream, "GET /{page} HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer)?;
        let body = answer.split("\r\n\r\n").nth(1).context("no body in the monitoring answer")?;
        let json: serde_json::Value = serde_json::from_str(body)?;
        json[field].as_u64().with_context(|| format!("no {field} in /{page}"))
    }
}

/// `nats-server` on `port` with the configuration in `store`, JetStream (storing in `store`)
/// when `jetstream`, monitoring on `monitor` when given; returns once it accepts clients.
async fn spawn_node(port: u16, store: &Path, jetstream: bool, monitor: Option<u16>) -> anyhow::Result<Process> {
    let bin = std::env::var("FERRY_NATS_SERVER").unwrap_or_else(|_| "nats-server".into());
    let mut command = Command::new(&bin);
    command.arg("-c").arg(store.join("nats.conf"));
    command.args(["-a", "127.0.0.1", "-p", &port.to_string()]);
    if jetstream {
        command.arg("-js").arg("-sd").arg(store);
    }
    if let Some(monitor) = monitor {
        command.args(["-m", &monitor.to_string()]);
    }
    let mut process = Process::spawn("nats-server", command).with_context(|| format!("is {bin} installed?"))?;
    wait_for_port(port, &mut process).await?;
    Ok(process)
}

/// Nodes of a NATS cluster joined by routes, each with JetStream and a leaf-node port.
#[derive(Debug)]
pub struct NatsCluster {
    /// The nodes, in the order they were started.
    pub nodes: Vec<Arc<NatsServer>>,
    leaf_ports: Vec<u16>,
}

impl NatsCluster {
    /// Start `size` nodes and wait until JetStream can place a stream with `size` replicas.
    ///
    /// # Errors
    /// When a node does not start or JetStream is not ready within 60 s.
    pub async fn start(size: usize) -> anyhow::Result<Self> {
        let cluster_ports = (0..size).map(|_| free_port()).collect::<Result<Vec<_>, _>>()?;
        let leaf_ports = (0..size).map(|_| free_port()).collect::<Result<Vec<_>, _>>()?;
        let mut nodes = Vec::new();
        for (i, (cluster_port, leaf_port)) in cluster_ports.iter().zip(&leaf_ports).enumerate() {
            let routes: Vec<String> = cluster_ports
                .iter()
                .filter(|p| *p != cluster_port)
                .map(|p| format!("\"nats-route://127.0.0.1:{p}\""))
                .collect();
            let config = format!(
                "server_name: \"node{i}\"\ncluster {{\n  name: \"ferry\"\n  listen: \"127.0.0.1:{cluster_port}\"\n  routes: [{}]\n}}\nleafnodes {{\n  listen: \"127.0.0.1:{leaf_port}\"\n}}\njetstream {{\n  domain: \"hub\"\n}}\n",
                routes.join(", ")
            );
            nodes.push(Arc::new(NatsServer::start_node(&config, true, Some(free_port()?)).await?));
        }
        let cluster = Self { nodes, leaf_ports };
        cluster.wait_for_jetstream(size).await?;
        Ok(cluster)
    }

    /// Every node's client URL, comma-separated: what each Ferry process is given.
    pub fn urls(&self) -> String {
        self.nodes.iter().map(|n| n.url.as_str()).collect::<Vec<_>>().join(",")
    }

    /// A leaf node of the cluster (no JetStream of its own: it reaches the cluster's).
    ///
    /// # Errors
    /// When it does not start.
    pub async fn start_leaf(&self) -> anyhow::Result<NatsServer> {
        let remotes: Vec<String> = self.leaf_ports.iter().map(|p| format!("\"nats-leaf://127.0.0.1:{p}\"")).collect();
        // Clients of the leaf speak to JetStream as usual (`$JS.API…`); the leaf maps that to the
        // cluster's domain, so no Ferry process needs to know it runs on a leaf.
        let config = format!(
            "server_name: \"leaf\"\nleafnodes {{\n  remotes: [ {{ urls: [{}] }} ]\n}}\nmappings: {{\n  \"$JS.API.>\": \"$JS.hub.API.>\"\n  \"$KV.>\": \"$JS.hub.API.$KV.>\"\n  \"$O.>\": \"$JS.hub.API.$O.>\"\n}}\n",
            remotes.join(", ")
        );
        let leaf = NatsServer::start_node(&config, false, Some(free_port()?)).await?;
        // Ready once its connection to the cluster is up: before, JetStream is out of reach.
        let start = Instant::now();
        while leaf.monitor_count("leafz", "leafnodes")? == 0 {
            if start.elapsed() > Duration::from_secs(30) {
                bail!("the leaf node never connected to the cluster:\n{}", leaf.process.logs());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(leaf)
    }

    /// Wait until JetStream places (and removes) a stream with `replicas` replicas: the cluster
    /// has elected its leader and every node has joined.
    async fn wait_for_jetstream(&self, replicas: usize) -> anyhow::Result<()> {
        let client = async_nats::connect(self.nodes.iter().map(|n| n.url.as_str()).collect::<Vec<_>>()).await?;
        let js = async_nats::jetstream::new(client);
        let start = Instant::now();
        loop {
            let config = async_nats::jetstream::kv::Config {
                bucket: "ferry-test-ready".into(),
                num_replicas: replicas,
                ..Default::default()
            };
            match js.create_key_value(config).await {
                Ok(_) => {
                    let _ = js.delete_key_value("ferry-test-ready").await;
                    return Ok(());
                }
                Err(err) if start.elapsed() > Duration::from_secs(60) => {
                    bail!("the cluster's JetStream never got ready: {err}")
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
            }
        }
    }
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

/// Debian's `docker-registry` (the reference distribution server) on a free port, storing in a
/// temporary directory that outlives a stop, so it can be started again with what was pushed;
/// with htpasswd (basic) authentication when given a user and password.
#[derive(Debug)]
pub struct RegistryServer {
    process: Option<Process>,
    dir: tempfile::TempDir,
    /// `127.0.0.1:PORT`: the registry part of a reference, and what `--allow-insecure-registry`
    /// takes.
    pub address: String,
    port: u16,
}

impl RegistryServer {
    /// Start one; `auth`: the only user and its password.
    ///
    /// # Errors
    /// When `docker-registry` (or, with `auth`, `htpasswd`) is missing or does not start.
    pub async fn start(auth: Option<(&str, &str)>) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let port = free_port()?;
        let mut config = format!(
            "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.path().join("data").display()
        );
        if let Some((user, password)) = auth {
            let htpasswd = dir.path().join("htpasswd");
            // The password goes in on stdin, not on a command line.
            let mut child = Command::new("htpasswd")
                .args(["-nBi", user])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .context("is htpasswd (apache2-utils) installed?")?;
            {
                use std::io::Write as _;
                let mut stdin = child.stdin.take().context("htpasswd stdin")?;
                stdin.write_all(password.as_bytes())?;
            }
            let output = child.wait_with_output()?;
            anyhow::ensure!(output.status.success(), "htpasswd failed");
            std::fs::write(&htpasswd, &output.stdout)?;
            config.push_str(&format!("auth:\n  htpasswd:\n    realm: ferry-test\n    path: {}\n", htpasswd.display()));
        }
        std::fs::write(dir.path().join("config.yml"), config)?;
        let mut server = Self { process: None, dir, address: format!("127.0.0.1:{port}"), port };
        server.start_again().await?;
        Ok(server)
    }

    /// Stop it (SIGTERM); what it stores stays.
    pub fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.terminate(std::time::Duration::from_secs(5));
        }
    }

    /// Start it again, on the same port with the same content.
    ///
    /// # Errors
    /// When it does not start.
    pub async fn start_again(&mut self) -> anyhow::Result<()> {
        self.stop();
        let mut command = Command::new("docker-registry");
        command.arg("serve").arg(self.dir.path().join("config.yml"));
        let mut process = Process::spawn("docker-registry", command).context("is docker-registry installed?")?;
        wait_for_port(self.port, &mut process).await?;
        self.process = Some(process);
        Ok(())
    }

    /// The registry's log so far.
    pub fn logs(&self) -> String {
        self.process.as_ref().map(Process::logs).unwrap_or_default()
    }
}
