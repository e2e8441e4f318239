//! `ferry`: run a host, drive a lattice (`ctl`), and manage keys.

/// The process's allocator: mimalloc's per-thread caches cost less per request than glibc's
/// malloc, which spent ~10 % of a host's CPU (docs/benchmarks.md, issue 11).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod call;
mod claims;
mod ctl;
mod keys;
mod nats_config;
mod registry;
mod secret;
mod up;

use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "ferry", version, about = "Run WebAssembly components on a lattice of hosts and capability providers")]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log filter of `host` and `up` (and their providers), `info` or `ferry_host=debug`.
    #[arg(long, global = true, env = "FERRY_LOG")]
    log_level: Option<String>,
    /// Log format of `host` and `up` (and their providers): `text`, or `json` (one object per
    /// line).
    #[arg(long, global = true, env = "FERRY_LOG_FORMAT")]
    log_format: Option<ferry_lattice::telemetry::LogFormat>,
}

#[derive(Subcommand)]
enum Command {
    /// Run a host that joins a lattice and serves components.
    Host(Box<HostArgs>),
    /// Send control commands to the hosts of a lattice.
    Ctl(ctl::CtlArgs),
    /// Deploy wadm application manifests and follow them (`deploy`, `list`, `status`,
    /// `undeploy`, `history`).
    App(ctl::AppArgs),
    /// Generate key pairs of every kind a lattice uses and provider credentials.
    Keys(keys::KeysArgs),
    /// Sign a component with claims (who it is, who vouches for it, what it may call), or show
    /// a component's claims.
    Claims(claims::ClaimsArgs),
    /// Write a nats-server configuration for a lattice in which every host, operator tool
    /// and provider connects with an nkey of its own and providers reach only their own
    /// subjects.
    NatsConfig(nats_config::NatsConfigArgs),
    /// Start a local lattice (NATS, host, key-value provider) serving a component.
    Up(up::UpArgs),
    /// Send an HTTP request to a component through the lattice.
    Call(call::CallArgs),
    /// Publish a component (wasm OCI layout: one `application/wasm` layer) or a provider's
    /// executables, one per platform (an image index), to an OCI registry; prints the digest
    /// reference of what was pushed.
    Push(registry::PushArgs),
    /// Compile a component read from standard input into a host's compilation cache (hosts
    /// run this; exit status 2: not a valid component).
    #[command(hide = true)]
    CompileComponent(CompileArgs),
}

#[derive(clap::Args)]
struct HostArgs {
    /// NATS server URL.
    #[arg(long, env = "FERRY_NATS_URL", default_value = "nats://127.0.0.1:4222")]
    nats_url: String,
    /// Lattice to join.
    #[arg(long, env = "FERRY_LATTICE", default_value = "default")]
    lattice: String,
    /// The cluster seed; generated when absent (single-host lattices only).
    #[command(flatten)]
    seed: secret::SeedArgs,
    /// A further cluster seed whose messages this host accepts, while the cluster key is rotated
    /// (docs/security.md): read from FILE; repeatable. The host signs with --cluster-seed only.
    #[arg(long = "accept-cluster-seed-file", value_name = "FILE")]
    accept_cluster_seed_files: Vec<std::path::PathBuf>,
    /// Further cluster seeds to accept, comma-separated (as --accept-cluster-seed-file).
    #[arg(
        long = "accept-cluster-seeds",
        env = "FERRY_ACCEPT_CLUSTER_SEEDS",
        hide = true,
        hide_env_values = true,
        value_delimiter = ','
    )]
    accept_cluster_seeds: Vec<String>,
    /// A label describing this host, key=value; repeatable.
    #[arg(long = "label", value_parser = parse_pair)]
    labels: Vec<(String, String)>,
    /// Copies JetStream keeps of the lattice's own stores (1 to 5): 3 on a NATS cluster, so a
    /// node can die with nothing lost. Stores that exist with fewer are raised.
    #[arg(long, env = "FERRY_JETSTREAM_REPLICAS", default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=5))]
    jetstream_replicas: u8,
    /// Timeout of capability calls to providers, in milliseconds.
    #[arg(long, env = "FERRY_RPC_TIMEOUT_MS", default_value_t = 10_000)]
    rpc_timeout_ms: u64,
    /// Wall-clock limit of one invocation of a component, in milliseconds.
    #[arg(long, default_value_t = 60_000)]
    execution_time_ms: u64,
    /// Memory limit per component instance, in MiB: each linear memory and all of an
    /// instance's linear memories together.
    #[arg(long, default_value_t = 256)]
    memory_mib: usize,
    /// Linear memory of all component instances on this host together, in MiB; an instance
    /// that would go past it cannot grow its memory.
    #[arg(long, default_value_t = 8192)]
    host_memory_mib: u64,
    /// Entries one instance's resource table may hold (streams, fields, buckets, …).
    #[arg(long, default_value_t = 10_000)]
    max_resources: usize,
    /// Blobstore data one component's values may hold before calling write-data, all values
    /// together, in MiB (spooled to temporary files under TMPDIR).
    #[arg(long, default_value_t = 1024)]
    blob_spool_mib: u64,
    /// Invocations of one component that may wait for a free instance (beyond its
    /// max_instances running ones); more are answered `overloaded` at once.
    #[arg(long, default_value_t = 256)]
    max_queued_invocations: u32,
    /// A directory whose files control commands may name: provider binaries for
    /// `provider.start`, `file:` component references; repeatable. Without one the host starts
    /// no provider and runs only components uploaded into the lattice.
    #[arg(long = "allow-file-dir", value_name = "DIR")]
    allow_file_dirs: Vec<std::path::PathBuf>,
    /// A directory holding each supervised provider's own NATS identity (`{id}.creds` or
    /// `{id}.nk`, written by `ferry nats-config`): providers connect as themselves, with their
    /// own permissions, instead of inheriting this host's credentials.
    #[arg(long, env = "FERRY_PROVIDER_NATS_DIR", value_name = "DIR")]
    provider_nats_dir: Option<std::path::PathBuf>,
    /// Export spans and metrics over OTLP/gRPC to this collector (`http://collector:4317`),
    /// and have supervised providers do the same; without it, to `OTEL_EXPORTER_OTLP_ENDPOINT`
    /// when set. Off otherwise.
    #[arg(long, value_name = "URL")]
    otlp_endpoint: Option<String>,
    #[command(flatten)]
    registry: registry::RegistryArgs,
    /// Serve this host's metrics (Prometheus text format) on `GET /metrics` at ADDRESS.
    #[arg(long, env = "FERRY_METRICS_LISTEN", value_name = "ADDRESS")]
    metrics_listen: Option<std::net::SocketAddr>,
    /// Time between health checks of the providers this host supervises or its components
    /// link to, in milliseconds.
    #[arg(long, env = "FERRY_HEALTH_INTERVAL_MS", default_value_t = 30_000)]
    health_interval_ms: u64,
    /// How long one health check waits for an answer, in milliseconds.
    #[arg(long, default_value_t = 5_000)]
    health_timeout_ms: u64,
    /// Failed health checks in a row after which a supervised provider is restarted; 0: never.
    #[arg(long, default_value_t = 3)]
    health_restart_after: u32,
    /// An operator public key (O…, from `ferry keys operator`) whose signed control commands
    /// this host obeys; repeatable or comma-separated. Given one, every unsigned or wrongly
    /// signed command is refused; given none, the host obeys anyone who can publish on its
    /// control subjects.
    #[arg(long = "operator-key", env = "FERRY_OPERATOR_KEYS", value_delimiter = ',', value_name = "KEY")]
    operator_keys: Vec<String>,
    /// Refuse components that carry no signed claims (`ferry claims sign`).
    #[arg(long, env = "FERRY_REQUIRE_SIGNED")]
    require_signed: bool,
    /// An account public key (A…) whose component claims this host accepts; repeatable or
    /// comma-separated. Given one, components signed by any other issuer are refused.
    #[arg(long = "allowed-issuer", env = "FERRY_ALLOWED_ISSUERS", value_delimiter = ',', value_name = "KEY")]
    allowed_issuers: Vec<String>,
    /// Time between host_heartbeat events, in milliseconds.
    #[arg(long, env = "FERRY_HEARTBEAT_INTERVAL_MS", default_value_t = 30_000)]
    heartbeat_interval_ms: u64,
    /// Threads that run invocations, each with its own NATS connection (default: one per core).
    #[arg(long, env = "FERRY_HOST_WORKERS")]
    workers: Option<std::num::NonZeroUsize>,
    /// Do not compete to run the lattice's application reconciler (one host at a time runs it).
    #[arg(long)]
    no_reconciler: bool,
    /// Directory of compiled components, private to this user (created with mode 0700): a
    /// component compiled once is loaded from it, by this host after a restart or by another
    /// host sharing it [default: $XDG_CACHE_HOME/ferry/compiled, else ~/.cache/ferry/compiled].
    #[arg(long, env = "FERRY_COMPILE_CACHE", value_name = "DIR")]
    compile_cache: Option<std::path::PathBuf>,
    /// Keep no compiled components (whatever --compile-cache says): every start of a component
    /// compiles it, in this process.
    #[arg(long, env = "FERRY_NO_COMPILE_CACHE")]
    no_compile_cache: bool,
    /// Compile components in this process rather than in a separate compiler process (which
    /// keeps the compiler's code and memory out of the long-running host).
    #[arg(long)]
    compile_in_process: bool,
}

/// `ferry compile-component`: what a host runs to compile a component outside its own process.
#[derive(clap::Args)]
struct CompileArgs {
    /// The host's compilation cache.
    #[arg(long)]
    cache_dir: std::path::PathBuf,
    /// The host's memory limit per instance, in bytes (part of its engine's configuration).
    #[arg(long)]
    memory_bytes: usize,
}

impl HostArgs {
    /// Where this host keeps compiled components and what compiles them.
    fn compilation(&self) -> ferry_host::compile::Compilation {
        use ferry_host::compile::{Compilation, Compiler};
        if self.no_compile_cache {
            return Compilation::default();
        }
        let cache_dir = self.compile_cache.clone().unwrap_or_else(Compilation::default_cache_dir);
        // The running executable itself, even if its path now names another version.
        let program = Some(std::path::PathBuf::from("/proc/self/exe"))
            .filter(|p| p.exists())
            .or_else(|| std::env::current_exe().ok());
        let compiler = program
            .filter(|_| !self.compile_in_process)
            .map(|program| Compiler { program, args: vec!["compile-component".into()] });
        Compilation { cache_dir: Some(cache_dir), compiler }
    }
}

/// Compile the component on standard input into `args.cache_dir`; exits 2 when it is not a
/// valid component, with the reason on standard error.
fn compile_component(args: &CompileArgs) -> anyhow::Result<()> {
    use std::io::Read as _;
    let mut wasm = Vec::new();
    std::io::stdin().lock().read_to_end(&mut wasm).context("cannot read the component")?;
    let limits = ferry_host::Limits { memory_bytes: args.memory_bytes, ..ferry_host::Limits::default() };
    match ferry_host::compile::compile_into_cache(&args.cache_dir, &limits, &wasm) {
        Ok(()) => Ok(()),
        Err(ferry_host::compile::CompileFailure::Invalid(message)) => {
            eprintln!("{message}");
            std::process::exit(ferry_host::compile::EXIT_INVALID);
        }
        Err(failure) => Err(anyhow::anyhow!(failure)),
    }
}

pub(crate) fn parse_pair(s: &str) -> Result<(String, String), String> {
    s.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())).ok_or_else(|| format!("expected key=value, got {s:?}"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let Cli { command, log_level, log_format } = Cli::parse();
    match command {
        Command::Host(args) => {
            let export = ferry_lattice::telemetry::Export {
                endpoint: args.otlp_endpoint.clone(),
                service: "ferry-host".to_owned(),
                attributes: vec![("ferry.lattice", args.lattice.clone())],
            };
            let telemetry = ferry_lattice::telemetry::init(log_level.as_deref(), Some(&export), log_format);
            let compilation = args.compilation();
            let mut builder = ferry_host::HostBuilder::new(args.nats_url, args.lattice);
            if let Some(endpoint) = args.otlp_endpoint {
                builder = builder.otlp_endpoint(endpoint);
            }
            builder = builder.registry(args.registry.settings()?);
            if let Some(format) = log_format {
                builder = builder.log_format(format);
            }
            builder = builder
                .rpc_timeout(Duration::from_millis(args.rpc_timeout_ms))
                .jetstream_replicas(usize::from(args.jetstream_replicas))
                .limits(ferry_host::Limits {
                    memory_bytes: args.memory_mib << 20,
                    host_memory_bytes: args.host_memory_mib << 20,
                    resource_entries: args.max_resources,
                    execution_time: Duration::from_millis(args.execution_time_ms),
                    blob_spool_bytes: args.blob_spool_mib << 20,
                    queued_invocations: args.max_queued_invocations,
                    ..ferry_host::Limits::default()
                });
            builder = builder
                .health_checks(
                    Duration::from_millis(args.health_interval_ms),
                    Duration::from_millis(args.health_timeout_ms),
                    args.health_restart_after,
                )
                .heartbeat_interval(Duration::from_millis(args.heartbeat_interval_ms))
                .workers(args.workers.map_or_else(ferry_host::default_workers, std::num::NonZeroUsize::get))
                .reconciler(!args.no_reconciler)
                .compilation(compilation);
            if let Some(seed) = args.seed.resolve()? {
                builder = builder.cluster_seed(seed);
            }
            for path in &args.accept_cluster_seed_files {
                builder = builder.accept_cluster_seed(secret::read_source(path)?.trim());
            }
            for seed in args.accept_cluster_seeds.iter().filter(|s| !s.trim().is_empty()) {
                builder = builder.accept_cluster_seed(seed.trim());
            }
            for (k, v) in args.labels {
                builder = builder.label(k, v);
            }
            if let Some(address) = args.metrics_listen {
                builder = builder.metrics_listen(address);
            }
            if let Some(dir) = args.provider_nats_dir {
                builder = builder.provider_nats_dir(dir);
            }
            for dir in args.allow_file_dirs {
                builder = builder.allow_file_dir(dir);
            }
            for key in args.operator_keys {
                builder = builder.operator_key(key);
            }
            builder =
                builder.require_signed(args.require_signed).nats_security(ferry_lattice::NatsSecurity::from_env()?);
            for key in args.allowed_issuers {
                builder = builder.allowed_issuer(key);
            }
            let host = builder.build().await.context("failed to start host")?;
            let result = host.run(ferry_lattice::shutdown_signal()).await.context("host failed");
            telemetry.shutdown();
            result
        }
        Command::Ctl(args) => ctl::run(args).await,
        Command::App(args) => ctl::run(args.into()).await,
        Command::Keys(args) => keys::run(args),
        Command::CompileComponent(args) => compile_component(&args),
        Command::NatsConfig(args) => nats_config::run(args),
        Command::Claims(args) => claims::run(args),
        Command::Up(args) => {
            ferry_lattice::telemetry::init_logging_with(log_level.as_deref(), log_format);
            up::run(args, log_format).await
        }
        Command::Call(args) => call::run(args).await,
        Command::Push(args) => registry::push(args).await,
    }
}
