//! `ferry up`: a whole local lattice in one command — NATS (started if nothing answers), a
//! host, the four first-party providers (key-value, http-server, messaging, blobstore) started
//! and supervised by that host, and a sample component linked to key-value and http-server.
//! Ctrl-C stops all of it, front to back: the host stops its providers (the HTTP listener
//! drains first) and its components, NATS goes last.
//!
//! Nothing of it is open to every local process: the nats-server it starts is configured by
//! `ferry nats-config` — every process connects with an nkey of its own, providers reach only
//! their own subjects (keys in `.ferry/identities`) — and its host obeys only the operator key
//! `ferry up` created there. `.ferry/env` holds what `ferry ctl` and `ferry call` need.

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
    ctl::{ComponentStart, LinkPutCommand, ProviderStart},
    link::Link,
};

/// The identity `ferry call` uses to invoke components of a `ferry up` lattice.
pub(crate) const CLI_CLIENT_ID: &str = "ferry-cli";
const KEYVALUE_ID: &str = "keyvalue";
const HTTP_SERVER_ID: &str = "http-server";
const MESSAGING_ID: &str = "messaging";
const BLOBSTORE_ID: &str = "blobstore";
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
    /// The component to serve: a file (.wasm), uploaded into the lattice, or a registry image
    /// (`oci://REGISTRY/REPOSITORY:TAG`, `…@sha256:…`), which the host pulls; by default the
    /// sample HTTP counter, built from examples/http-counter when it is not built yet.
    #[arg(long, value_name = "FILE|IMAGE")]
    component: Option<String>,
    /// Its component id.
    #[arg(long, default_value = "counter")]
    component_id: String,
    /// Address the http-server provider listens on.
    #[arg(long, default_value = "127.0.0.1:8000")]
    http_address: std::net::SocketAddr,
    /// Serve key-value from a provider in another language instead of Ferry's own: the command
    /// line that starts it, run by ferry-provider-bridge (`--exec`) under the same provider id
    /// (docs/bridge.md), e.g. ".ferry/venv/bin/python examples/python-keyvalue/provider.py".
    #[arg(long, value_name = "COMMAND")]
    keyvalue_bridge: Option<String>,
    /// How the host reaches registries (for a component given as an image).
    #[command(flatten)]
    registry: crate::registry::RegistryArgs,
}

/// Where the served component comes from.
enum ComponentSource {
    /// A file, uploaded into the lattice.
    File(PathBuf),
    /// A registry image, pulled by the host.
    Image(ferry_proto::image::OciRef),
}

/// The nats-server `ferry up` started, in its own process group so a terminal's Ctrl-C reaches
/// only `ferry up`, which stops it last: SIGTERM, then SIGKILL after [`STOP_GRACE`]. (Providers
/// are not started this way: the host supervises them.)
struct Managed {
    name: &'static str,
    child: Child,
}

impl Managed {
    fn spawn(name: &'static str, command: &mut Command) -> std::io::Result<Self> {
        let child = command.process_group(0).spawn()?;
        eprintln!("ferry up: started {name} (pid {})", child.id());
        Ok(Self { name, child })
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

pub(crate) async fn run(args: UpArgs, log_format: Option<ferry_lattice::telemetry::LogFormat>) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.state_dir)
        .with_context(|| format!("failed to create {}", args.state_dir.display()))?;
    let component = resolve_component(args.component.as_deref())?;
    let registry = args.registry.settings()?;
    let (cluster, seed) = load_or_create_seed(&args.state_dir.join("cluster.seed"))?;
    let operator_seed = args.state_dir.join("operator.seed");
    let operator = load_or_create_operator(&operator_seed)?;

    let (nats, nats_server, nats_url, identities) =
        connect_or_start_nats(&args.nats_url, &args.state_dir, &args.lattice).await?;
    // The host runs the provider binaries that sit beside this one, and nothing else.
    let bin_dir = std::env::current_exe()?.parent().context("ferry has no directory")?.to_path_buf();
    let mut host = ferry_host::HostBuilder::new(&nats_url, &args.lattice)
        .cluster_seed(seed)
        .allow_file_dir(&bin_dir)
        .registry(registry)
        .operator_key(operator.public_key());
    if let Some(format) = log_format {
        host = host.log_format(format);
    }
    if let Some(dir) = &identities {
        let security = ferry_lattice::NatsSecurity {
            auth: ferry_lattice::NatsAuth::NkeySeed(read_seed(&dir.join("host.nk"))?),
            ..Default::default()
        };
        host = host.nats_security(security).provider_nats_dir(dir.join("providers"));
    }
    let host = host.build().await.context("failed to build host")?;
    let host = host.start().await.context("failed to start host")?;

    let result = async {
        let ctl = ferry_lattice::CtlClient::new(nats.clone(), &args.lattice, Duration::from_secs(120))
            .with_operator(operator);
        let blob_root = args.state_dir.join("blobs");
        let keyvalue = match &args.keyvalue_bridge {
            None => ("keyvalue provider", "ferry-provider-keyvalue", KEYVALUE_ID, BTreeMap::new()),
            Some(command) => (
                "bridged keyvalue provider",
                "ferry-provider-bridge",
                KEYVALUE_ID,
                BTreeMap::from([("exec".to_owned(), command.clone())]),
            ),
        };
        let providers = [
            keyvalue,
            (
                "http-server provider",
                "ferry-provider-http-server",
                HTTP_SERVER_ID,
                BTreeMap::from([("address".to_owned(), args.http_address.to_string())]),
            ),
            ("messaging provider", "ferry-provider-messaging", MESSAGING_ID, BTreeMap::new()),
            (
                "blobstore provider",
                "ferry-provider-blobstore",
                BLOBSTORE_ID,
                BTreeMap::from([("root".to_owned(), blob_root.display().to_string())]),
            ),
        ];
        for (name, bin, id, config) in providers {
            let start = ProviderStart {
                request_id: "ferry-up".into(),
                provider_id: id.into(),
                binary: bin_dir.join(bin).display().to_string(),
                config,
            };
            let resp = ctl.send(&start, Some(host.id())).await?;
            let started = resp.data.filter(|_| resp.success).with_context(|| {
                format!("failed to start the {name} (build the workspace binaries first): {}", resp.message)
            })?;
            eprintln!("ferry up: started {name} (pid {})", started.provider.pid.unwrap_or_default());
        }
        let image = match &component {
            ComponentSource::File(path) => {
                let bytes =
                    std::fs::read(path).with_context(|| format!("failed to read component {}", path.display()))?;
                ferry_lattice::ComponentStore::open(&nats, &args.lattice).await?.upload(&bytes).await?.to_string()
            }
            ComponentSource::Image(image) => {
                eprintln!("ferry up: the host pulls {image}");
                image.to_string()
            }
        };
        let start = ComponentStart {
            request_id: "ferry-up".into(),
            component_id: args.component_id.clone(),
            image,
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
        let credential_file = args.state_dir.join("cli.credential");
        write_secret(&credential_file, &credential.encode())?;
        // What `ferry ctl` and `ferry call` need to reach this lattice, for `. .ferry/env`.
        let mut env = format!(
            "FERRY_NATS_URL={nats_url}\nFERRY_LATTICE={}\nFERRY_OPERATOR_SEED_FILE={}\nFERRY_CLI_CREDENTIAL_FILE={}",
            args.lattice,
            absolute(&operator_seed).display(),
            absolute(&credential_file).display()
        );
        if let Some(dir) = &identities {
            env.push_str(&format!("\nFERRY_NATS_NKEY_FILE={}", absolute(&dir.join("ctl.nk")).display()));
        }
        write_secret(&args.state_dir.join("env"), &env)?;
        wait_for_listener(args.http_address).await;
        println!(
            "Ferry is up: lattice {:?} on {}, component {:?} served by the http-server provider.",
            args.lattice, args.nats_url, args.component_id
        );
        println!("Try:  curl http://{}/hello", args.http_address);
        println!(
            "Ctl:  set -a; . {}; set +a; ferry ctl component list",
            absolute(&args.state_dir.join("env")).display()
        );
        println!("Stop: Ctrl-C");
        ferry_lattice::shutdown_signal().await;
        eprintln!("ferry up: stopping");
        Ok::<(), anyhow::Error>(())
    }
    .await;

    // Front to back: the host stops its providers (the HTTP listener drains while components
    // still serve), then its components; NATS goes last.
    match tokio::time::timeout(STOP_GRACE * 2, host.stop()).await {
        Ok(()) => eprintln!("ferry up: host stopped"),
        Err(_) => eprintln!("ferry up: host did not stop within {STOP_GRACE:?}"),
    }
    let _ = tokio::time::timeout(Duration::from_secs(6), ferry_lattice::nats::close(&nats)).await;
    if let Some(server) = nats_server {
        server.stop().await;
    }
    result
}

/// The component to serve: the given image or path, or the sample, built when missing. A
/// plain `REGISTRY/REPOSITORY:TAG` is an image unless a file of that name exists.
fn resolve_component(given: Option<&str>) -> anyhow::Result<ComponentSource> {
    if let Some(given) = given {
        if given.starts_with("oci://") {
            return Ok(ComponentSource::Image(ferry_proto::image::OciRef::parse(given)?));
        }
        if !Path::new(given).exists()
            && let Ok(image) = ferry_proto::image::OciRef::parse(given)
        {
            return Ok(ComponentSource::Image(image));
        }
        let path = std::fs::canonicalize(given).with_context(|| format!("failed to find component {given}"))?;
        return Ok(ComponentSource::File(path));
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
            .env_remove("RUSTC_WORKSPACE_WRAPPER")
            .env_remove("CLIPPY_ARGS")
            .current_dir(source)
            .status()
            .context("failed to run cargo")?;
        if !status.success() {
            bail!("building examples/http-counter failed (is the wasm32-wasip2 target installed?)");
        }
    }
    let path = std::fs::canonicalize(sample).with_context(|| format!("failed to find {SAMPLE_COMPONENT}"))?;
    Ok(ComponentSource::File(path))
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

/// The operator key in `path`, created there (0600) on first use: it signs `ferry up`'s
/// commands, and its host obeys nothing else.
fn load_or_create_operator(path: &Path) -> anyhow::Result<ferry_proto::ctl::operator::OperatorKey> {
    use ferry_proto::ctl::operator::OperatorKey;
    if let Ok(seed) = std::fs::read_to_string(path) {
        return OperatorKey::from_seed(&seed).with_context(|| format!("invalid operator seed in {}", path.display()));
    }
    let (key, seed) = OperatorKey::generate()?;
    write_secret(path, &seed)?;
    Ok(key)
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_owned())
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

/// The providers `ferry up` runs and what each may do on its NATS beyond its own subjects
/// (`ferry nats-config --provider`): the key-value provider may be bridged (the bridge calls
/// components) and keeps data in JetStream by default, like the blobstore can.
const PROVIDER_GRANTS: [&str; 4] =
    ["keyvalue:calls,jetstream", "http-server:calls", "messaging:calls", "blobstore:jetstream"];

/// An nkey seed from a file `ferry nats-config` wrote.
fn read_seed(path: &Path) -> anyhow::Result<String> {
    Ok(std::fs::read_to_string(path).with_context(|| format!("failed to read {}", path.display()))?.trim().to_owned())
}

/// A connection to the NATS at `url` — one that answers already, or a nats-server started
/// here on which every process connects with an nkey of its own (`ferry nats-config`, the
/// identities kept in `state/identities`) — the URL the host and its providers connect with,
/// and the identities directory when they are used. A state directory from before identities
/// (it holds `nats.token`) goes on with its token-protected server, so the data it stored stays
/// where it is.
async fn connect_or_start_nats(
    url: &str,
    state: &Path,
    lattice: &str,
) -> anyhow::Result<(async_nats::Client, Option<Managed>, String, Option<PathBuf>)> {
    if state.join("nats.token").exists() {
        let (client, server, url) = connect_or_start_token_nats(url, state).await?;
        return Ok((client, server, url, None));
    }
    let identities = state.join("identities");
    let ctl_seed = identities.join("ctl.nk");
    let as_operator = |seed: String| {
        ferry_lattice::NatsOptions::new(url, "ferry-up").with_auth(ferry_lattice::NatsAuth::NkeySeed(seed))
    };
    // A server of an earlier `ferry up` still running knows our keys; any other NATS is the
    // user's own, used as it is.
    if ctl_seed.exists() {
        let options = as_operator(read_seed(&ctl_seed)?);
        if let Ok(Ok(connection)) = tokio::time::timeout(Duration::from_secs(2), options.connect()).await {
            eprintln!("ferry up: using the NATS server at {url}");
            return Ok((connection.client, None, url.to_owned(), Some(identities)));
        }
    }
    let options = ferry_lattice::NatsOptions::new(url, "ferry-up");
    if let Ok(Ok(connection)) = tokio::time::timeout(Duration::from_secs(2), options.connect()).await {
        eprintln!("ferry up: using the NATS server at {url}");
        eprintln!("ferry up: warning: that server admits anyone; the one ferry up starts requires a key per process");
        return Ok((connection.client, None, url.to_owned(), None));
    }
    let (_, address) = url.split_once("://").unwrap_or(("nats", url));
    let port = address.rsplit(':').next().and_then(|p| p.trim_end_matches('/').parse::<u16>().ok()).unwrap_or(4222);
    let store = state.join("nats");
    let config = crate::nats_config::NatsConfigArgs::local(
        lattice,
        &identities,
        &format!("127.0.0.1:{port}"),
        &absolute(&store),
        &PROVIDER_GRANTS,
    );
    crate::nats_config::generate(&config)?;
    let bin = std::env::var("FERRY_NATS_SERVER").unwrap_or_else(|_| "nats-server".into());
    let log = std::fs::File::create(state.join("nats-server.log"))?;
    let server = Managed::spawn(
        "nats-server",
        Command::new(&bin)
            .arg("-c")
            .arg(identities.join("nats-server.conf"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log),
    )
    .with_context(|| format!("failed to start {bin} (install nats-server >= 2.10 or run scripts/up.sh)"))?;
    eprintln!(
        "ferry up: nats-server listens on port {port}, a key per process required (keys in {}, data in {})",
        identities.display(),
        store.display()
    );
    let options = as_operator(read_seed(&ctl_seed)?);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(connection) = options.connect().await {
            return Ok((connection.client, Some(server), url.to_owned(), Some(identities)));
        }
        if Instant::now() > deadline {
            bail!("nats-server did not come up on {url}; see {}", state.join("nats-server.log").display());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// [`connect_or_start_nats`] for a state directory from before identities: a connection to
/// the NATS at `url` — one that answers already, or a nats-server started here that only admits
/// clients with the token kept in `state` — and the URL, token included, that the host and its
/// providers connect with.
async fn connect_or_start_token_nats(
    url: &str,
    state: &Path,
) -> anyhow::Result<(async_nats::Client, Option<Managed>, String)> {
    let token_file = state.join("nats.token");
    let token = match std::fs::read_to_string(&token_file) {
        Ok(token) if !token.trim().is_empty() => token.trim().to_owned(),
        _ => {
            let token = format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
            write_secret(&token_file, &token)?;
            token
        }
    };
    let (scheme, address) = url.split_once("://").unwrap_or(("nats", url));
    let with_token = format!("{scheme}://{token}@{address}");
    // A server of an earlier `ferry up` still running takes the token; any other NATS is the
    // user's own, used as it is.
    for (candidate, own) in [(with_token.as_str(), true), (url, false)] {
        let options = ferry_lattice::NatsOptions::new(candidate, "ferry-up");
        if let Ok(Ok(connection)) = tokio::time::timeout(Duration::from_secs(2), options.connect()).await {
            eprintln!("ferry up: using the NATS server at {url}");
            if !own {
                eprintln!("ferry up: warning: that server admits anyone; the one ferry up starts requires a token");
            }
            return Ok((connection.client, None, candidate.to_owned()));
        }
    }
    let port = address.rsplit(':').next().and_then(|p| p.trim_end_matches('/').parse::<u16>().ok()).unwrap_or(4222);
    let bin = std::env::var("FERRY_NATS_SERVER").unwrap_or_else(|_| "nats-server".into());
    let log = std::fs::File::create(state.join("nats-server.log"))?;
    // The token goes in a config file only the user can read, not on a command line.
    let config = state.join("nats-server.conf");
    let store = state.join("nats");
    write_secret(
        &config,
        &format!(
            "listen: \"127.0.0.1:{port}\"\njetstream {{ store_dir: {store:?} }}\nauthorization {{ token: \"{token}\" }}"
        ),
    )?;
    let server = Managed::spawn(
        "nats-server",
        Command::new(&bin).arg("-c").arg(&config).stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log),
    )
    .with_context(|| format!("failed to start {bin} (install nats-server >= 2.10 or run scripts/up.sh)"))?;
    eprintln!("ferry up: nats-server listens on port {port}, token required (data in {})", store.display());
    let options = ferry_lattice::NatsOptions::new(&with_token, "ferry-up");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(connection) = options.connect().await {
            return Ok((connection.client, Some(server), with_token));
        }
        if Instant::now() > deadline {
            bail!("nats-server did not come up on {url}; see {}", state.join("nats-server.log").display());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
