//! `ferry up`: a whole local lattice in one command — NATS (started if nothing answers), a host,
//! the key-value provider as a child process, and a component linked to it. Ctrl-C stops all of
//! it.

use std::{
    io::Write as _,
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
use tokio_util::sync::CancellationToken;

/// The identity `ferry call` uses to invoke components of a `ferry up` lattice.
pub(crate) const CLI_CLIENT_ID: &str = "ferry-cli";
const KEYVALUE_ID: &str = "keyvalue";

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
    /// The component to serve (.wasm).
    #[arg(long)]
    component: PathBuf,
    /// Its component id.
    #[arg(long, default_value = "counter")]
    component_id: String,
}

/// A child process stopped with SIGTERM (then SIGKILL after a grace period) on drop.
struct Managed {
    name: &'static str,
    child: Child,
    /// Kept open while the child should live: a host-spawned provider stops when it closes.
    _stdin: Option<std::process::ChildStdin>,
}

impl Drop for Managed {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                eprintln!("ferry up: {} stopped", self.name);
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        eprintln!("ferry up: {} killed after the grace period", self.name);
    }
}

pub(crate) async fn run(args: UpArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.state_dir)
        .with_context(|| format!("failed to create {}", args.state_dir.display()))?;
    let component = std::fs::canonicalize(&args.component)
        .with_context(|| format!("failed to find component {}", args.component.display()))?;
    let (cluster, seed) = load_or_create_seed(&args.state_dir.join("cluster.seed"))?;

    // Children are declared before the host so they are stopped after it on the way out.
    let (nats, _nats_server) = connect_or_start_nats(&args.nats_url, &args.state_dir).await?;
    let host = ferry_host::HostBuilder::new(&args.nats_url, &args.lattice)
        .cluster_seed(seed)
        .build()
        .await
        .context("failed to build host")?;
    let stop = CancellationToken::new();
    let host_task = tokio::spawn(host.run(stop.clone().cancelled_owned()));

    let result = async {
        let ctl = ferry_host::CtlClient::new(nats.clone(), &args.lattice, Duration::from_secs(120));
        let provider = spawn_provider(&args, &cluster)?;
        let start = ComponentStart {
            request_id: "ferry-up".into(),
            component_id: args.component_id.clone(),
            image: component.display().to_string(),
            max_instances: None,
            config: Vec::new(),
        };
        expect_ok(ctl.request("component", "start", None, &start).await?)?;
        let kv = Link::new(
            &args.component_id,
            KEYVALUE_ID,
            "wasi",
            "keyvalue",
            vec!["store".into(), "atomics".into(), "batch".into()],
        );
        expect_ok(
            ctl.request("link", "put", None, &LinkPutCommand { request_id: "ferry-up".into(), link: kv }).await?,
        )?;
        let cli = Link::new(CLI_CLIENT_ID, &args.component_id, "wasi", "http", vec!["incoming-handler".into()]);
        expect_ok(
            ctl.request("link", "put", None, &LinkPutCommand { request_id: "ferry-up".into(), link: cli }).await?,
        )?;

        let credential = cluster.issue_credential(&args.lattice, CLI_CLIENT_ID, ferry_proto::time::now_ms(), 24 * 7);
        write_secret(&args.state_dir.join("cli.credential"), &credential.encode())?;
        println!(
            "Ferry is up: lattice {:?} on {}, component {:?} linked to the key-value provider.",
            args.lattice, args.nats_url, args.component_id
        );
        println!("Try:  target/debug/ferry call {} /hello", args.component_id);
        println!("Stop: Ctrl-C");
        ferry_provider_sdk::shutdown_signal().await;
        drop(provider);
        Ok::<(), anyhow::Error>(())
    }
    .await;

    stop.cancel();
    match host_task.await {
        Ok(Ok(())) => eprintln!("ferry up: host stopped"),
        Ok(Err(err)) => eprintln!("ferry up: host failed: {err}"),
        Err(err) => eprintln!("ferry up: host task failed: {err}"),
    }
    let _ = nats.drain().await;
    result
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
    if let Ok(Ok(client)) = tokio::time::timeout(Duration::from_secs(2), async_nats::connect(url)).await {
        eprintln!("ferry up: using the NATS server at {url}");
        return Ok((client, None));
    }
    let port = url.rsplit(':').next().and_then(|p| p.trim_end_matches('/').parse::<u16>().ok()).unwrap_or(4222);
    let bin = std::env::var("FERRY_NATS_SERVER").unwrap_or_else(|_| "nats-server".into());
    let log = std::fs::File::create(state.join("nats-server.log"))?;
    let child = Command::new(&bin)
        .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
        .arg(state.join("nats"))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("failed to start {bin} (install nats-server >= 2.10 or run scripts/up.sh)"))?;
    let server = Managed { name: "nats-server", child, _stdin: None };
    eprintln!("ferry up: started nats-server on port {port} (data in {})", state.join("nats").display());
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(client) = async_nats::connect(url).await {
            return Ok((client, Some(server)));
        }
        if Instant::now() > deadline {
            bail!("nats-server did not come up on {url}; see {}", state.join("nats-server.log").display());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Start the key-value provider the way a host does: start-up data as one JSON line on stdin.
fn spawn_provider(args: &UpArgs, cluster: &ClusterKey) -> anyhow::Result<Managed> {
    let exe = std::env::current_exe()?;
    let bin = exe.with_file_name("ferry-provider-keyvalue");
    let startup = ProviderStartup {
        version: STARTUP_VERSION,
        lattice: args.lattice.clone(),
        provider_id: KEYVALUE_ID.into(),
        nats_url: args.nats_url.clone(),
        credential: cluster.issue_credential(&args.lattice, KEYVALUE_ID, ferry_proto::time::now_ms(), 24 * 7).encode(),
        rpc_timeout_ms: None,
        log_level: None,
        config: Default::default(),
    };
    let mut child = Command::new(&bin)
        .stdin(Stdio::piped())
        .spawn()
        .with_context(|| format!("failed to start {} (build the workspace binaries first)", bin.display()))?;
    let mut stdin = child.stdin.take();
    if let Some(stdin) = stdin.as_mut() {
        writeln!(stdin, "{}", startup.to_json()?).context("failed to send start-up data to the provider")?;
    }
    Ok(Managed { name: "keyvalue provider", child, _stdin: stdin })
}
