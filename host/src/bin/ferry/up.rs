//! `ferry up`: a whole local lattice in one command — NATS (started if nothing answers), a
//! host, the key-value and http-server providers as child processes, and a sample component
//! linked to both. Ctrl-C stops all of it, front to back: the HTTP listener drains first, NATS
//! goes last.

use std::{
    collections::BTreeMap,
    io::Write as _,
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use ferry_proto::{
    auth::ClusterKey,
    ctl::{ComponentStart, LinkPutCommand},
    link::Link,
    startup::{ProviderStartup, STARTUP_VERSION},
};

/// The identity `ferry call` uses to invoke components of a `ferry up` lattice.
pub(crate) const CLI_CLIENT_ID: &str = "ferry-cli";
const KEYVALUE_ID: &str = "keyvalue";
const HTTP_SERVER_ID: &str = "http-server";
/// Where `scripts/up.sh` builds the sample component, relative to the repository root.
const SAMPLE_COMPONENT: &str = "examples/target/wasm32-wasip2/release/http_counter.wasm";
/// How long each part gets to stop before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);

#[derive(clap::Args)]
pub(crate) struct UpArgs {
    /// NATS server URL; a nats-server is started there if nothing answers.
    #[arg(long, env = "FERRY_NATS_URL", default_value = "nats://127.0.0.1:4222")]
    nats_url: String,
    /// Lattice name.
    #[arg(long, env = "FERRY_LATTICE", default_value = "default")]
    lattice: String,
    /// Where the cluster seed, the CLI credential and NATS data live.
    #[arg(long, default_value = ".ferry")]
    state_dir: PathBuf,
    /// The component to serve (.wasm); by default the sample HTTP counter, built from
    /// examples/http-counter when it is not built yet.
    #[arg(long)]
    component: Option<PathBuf>,
    /// Its component id.
    #[arg(long, default_value = "counter")]
    component_id: String,
    /// Address the http-server provider listens on.
    #[arg(long, default_value = "127.0.0.1:8000")]
    http_address: std::net::SocketAddr,
}

/// A child process, in its own process group so a terminal's Ctrl-C reaches only `ferry up`,
/// which stops the children in order: SIGTERM, then SIGKILL after [`STOP_GRACE`].
struct Managed {
    name: &'static str,
    child: Child,
    /// Kept open while the child should live: a host-spawned provider stops when it closes,
    /// so the providers go even if `ferry up` itself is killed.
    stdin: Option<std::process::ChildStdin>,
}

impl Managed {
    fn spawn(name: &'static str, command: &mut Command) -> std::io::Result<Self> {
        let child = command.process_group(0).spawn()?;
        eprintln!("ferry up: started {name} (pid {})", child.id());
        Ok(Self { name, child, stdin: None })
    }

    /// Stop the child and wait for it (on a blocking thread: this polls).
    async fn stop(mut self) {
        let _ = tokio::task::spawn_blocking(move || self.stop_now()).await;
    }

    fn stop_now(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                eprintln!("ferry up: {} stopped ({status})", self.name);
                self.stdin = None;
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        eprintln!("ferry up: {} killed after {STOP_GRACE:?}", self.name);
    }
}

impl Drop for Managed {
    fn drop(&mut self) {
        // Only reached on an error path; `stop` has normally run already.
        self.stop_now();
    }
}

pub(crate) async fn run(args: UpArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.state_dir)
        .with_context(|| format!("failed to create {}", args.state_dir.display()))?;
    let component = resolve_component(args.component.as_deref())?;
    let (cluster, seed) = load_or_create_seed(&args.state_dir.join("cluster.seed"))?;

    let (nats, nats_server) = connect_or_start_nats(&args.nats_url, &args.state_dir).await?;
    let host = ferry_host::HostBuilder::new(&args.nats_url, &args.lattice)
        .cluster_seed(seed)
        .build()
        .await
        .context("failed to build host")?;
    let host = host.start().await.context("failed to start host")?;

    let mut providers = Vec::new();
    let result = async {
        let ctl = ferry_lattice::CtlClient::new(nats.clone(), &args.lattice, Duration::from_secs(120));
        providers.push(spawn_provider(
            &args,
            &cluster,
            "keyvalue provider",
            "ferry-provider-keyvalue",
            KEYVALUE_ID,
            BTreeMap::new(),
        )?);
        let http_config = BTreeMap::from([("address".to_owned(), args.http_address.to_string())]);
        providers.push(spawn_provider(
            &args,
            &cluster,
            "http-server provider",
            "ferry-provider-http-server",
            HTTP_SERVER_ID,
            http_config,
        )?);
        let start = ComponentStart {
            request_id: "ferry-up".into(),
            component_id: args.component_id.clone(),
            image: component.display().to_string(),
            max_instances: None,
            config: Vec::new(),
        };
        expect_ok(ctl.send(&start, None).await?.into_json())?;
        let links = [
            Link::new(
                &args.component_id,
                KEYVALUE_ID,
                "wasi",
                "keyvalue",
                vec!["store".into(), "atomics".into(), "batch".into()],
            ),
            Link::new(HTTP_SERVER_ID, &args.component_id, "wasi", "http", vec!["incoming-handler".into()]),
            Link::new(CLI_CLIENT_ID, &args.component_id, "wasi", "http", vec!["incoming-handler".into()]),
        ];
        for link in links {
            expect_ok(ctl.send(&LinkPutCommand { request_id: "ferry-up".into(), link }, None).await?.into_json())?;
        }

        let credential = cluster.issue_credential(&args.lattice, CLI_CLIENT_ID, ferry_proto::time::now_ms(), 24 * 7);
        write_secret(&args.state_dir.join("cli.credential"), &credential.encode())?;
        wait_for_listener(args.http_address).await;
        println!(
            "Ferry is up: lattice {:?} on {}, component {:?} served by the http-server provider.",
            args.lattice, args.nats_url, args.component_id
        );
        println!("Try:  curl http://{}/hello", args.http_address);
        println!("Stop: Ctrl-C");
        ferry_lattice::shutdown_signal().await;
        eprintln!("ferry up: stopping");
        Ok::<(), anyhow::Error>(())
    }
    .await;

    // Front to back: the HTTP listener drains while the host still serves, NATS goes last.
    while let Some(provider) = providers.pop() {
        provider.stop().await;
    }
    match tokio::time::timeout(STOP_GRACE, host.stop()).await {
        Ok(()) => eprintln!("ferry up: host stopped"),
        Err(_) => eprintln!("ferry up: host did not stop within {STOP_GRACE:?}"),
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), nats.drain()).await;
    if let Some(server) = nats_server {
        server.stop().await;
    }
    result
}

/// The component to serve: the given path, or the sample, built when missing.
fn resolve_component(path: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(path) = path {
        return std::fs::canonicalize(path).with_context(|| format!("failed to find component {}", path.display()));
    }
    let sample = Path::new(SAMPLE_COMPONENT);
    if !sample.exists() {
        let source = Path::new("examples/http-counter");
        if !source.exists() {
            bail!("no --component given and examples/http-counter not found: run from the repository root");
        }
        eprintln!("ferry up: building the sample component (examples/http-counter)");
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["build", "--quiet", "--release", "--target", "wasm32-wasip2", "--target-dir", "../target"])
            .current_dir(source)
            .status()
            .context("failed to run cargo")?;
        if !status.success() {
            bail!("building examples/http-counter failed (is the wasm32-wasip2 target installed?)");
        }
    }
    std::fs::canonicalize(sample).with_context(|| format!("failed to find {SAMPLE_COMPONENT}"))
}

/// Wait (briefly) until the http-server provider accepts connections, so the printed URL works.
async fn wait_for_listener(address: std::net::SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(address).await.is_err() {
        if Instant::now() > deadline {
            eprintln!("ferry up: warning: nothing listens on {address} yet; see the http-server provider's log");
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn expect_ok(resp: ferry_proto::ctl::CtlResponse) -> anyhow::Result<()> {
    if !resp.success {
        bail!("{}", resp.message);
    }
    Ok(())
}

fn load_or_create_seed(path: &Path) -> anyhow::Result<(ClusterKey, String)> {
    if let Ok(seed) = std::fs::read_to_string(path) {
        let key =
            ClusterKey::from_seed(&seed).with_context(|| format!("invalid cluster seed in {}", path.display()))?;
        return Ok((key, seed.trim().to_owned()));
    }
    let (key, seed) = ClusterKey::generate()?;
    write_secret(path, &seed)?;
    Ok((key, seed))
}

fn write_secret(path: &Path, secret: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("failed to write {}", path.display()))?;
    writeln!(file, "{secret}")?;
    Ok(())
}

async fn connect_or_start_nats(url: &str, state: &Path) -> anyhow::Result<(async_nats::Client, Option<Managed>)> {
    let options = ferry_lattice::NatsOptions::new(url, "ferry-up");
    if let Ok(Ok(connection)) = tokio::time::timeout(Duration::from_secs(2), options.connect()).await {
        eprintln!("ferry up: using the NATS server at {url}");
        return Ok((connection.client, None));
    }
    let port = url.rsplit(':').next().and_then(|p| p.trim_end_matches('/').parse::<u16>().ok()).unwrap_or(4222);
    let bin = std::env::var("FERRY_NATS_SERVER").unwrap_or_else(|_| "nats-server".into());
    let log = std::fs::File::create(state.join("nats-server.log"))?;
    let server = Managed::spawn(
        "nats-server",
        Command::new(&bin)
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(state.join("nats"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log),
    )
    .with_context(|| format!("failed to start {bin} (install nats-server >= 2.10 or run scripts/up.sh)"))?;
    eprintln!("ferry up: started nats-server on port {port} (data in {})", state.join("nats").display());
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(connection) = options.connect().await {
            return Ok((connection.client, Some(server)));
        }
        if Instant::now() > deadline {
            bail!("nats-server did not come up on {url}; see {}", state.join("nats-server.log").display());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Start a provider the way a host does: start-up data as one JSON line on stdin.
fn spawn_provider(
    args: &UpArgs,
    cluster: &ClusterKey,
    name: &'static str,
    bin: &str,
    id: &str,
    config: BTreeMap<String, String>,
) -> anyhow::Result<Managed> {
    let exe = std::env::current_exe()?;
    let path = exe.with_file_name(bin);
    let startup = ProviderStartup {
        version: STARTUP_VERSION,
        lattice: args.lattice.clone(),
        provider_id: id.into(),
        nats_url: args.nats_url.clone(),
        credential: cluster.issue_credential(&args.lattice, id, ferry_proto::time::now_ms(), 24 * 7).encode(),
        rpc_timeout_ms: None,
        log_level: None,
        config,
    };
    let mut managed = Managed::spawn(name, Command::new(&path).stdin(Stdio::piped()))
        .with_context(|| format!("failed to start {} (build the workspace binaries first)", path.display()))?;
    let mut stdin = managed.child.stdin.take();
    if let Some(stdin) = stdin.as_mut() {
        writeln!(stdin, "{}", startup.to_json()?).context("failed to send start-up data to the provider")?;
    }
    managed.stdin = stdin;
    Ok(managed)
}
