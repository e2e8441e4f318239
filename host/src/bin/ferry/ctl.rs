//! `ferry ctl`: the control interface from the command line. Prints the hosts' replies as JSON
//! and exits non-zero when a command did not take effect.

use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use ferry_proto::{
    ctl::{
        Command, ComponentList, ComponentScale, ComponentStart, ComponentStop, ComponentUpdate, ConfigDelCommand,
        ConfigGetCommand, ConfigPutCommand, CtlResponse, LinkDelCommand, LinkGetCommand, LinkPutCommand, ProviderStart,
        ProviderStop,
    },
    link::{Link, LinkKey},
};

#[derive(Args)]
pub(crate) struct CtlArgs {
    /// NATS server URL.
    #[arg(long, env = "FERRY_NATS_URL", default_value = "nats://127.0.0.1:4222")]
    nats_url: String,
    /// Lattice to control.
    #[arg(long, env = "FERRY_LATTICE", default_value = "default")]
    lattice: String,
    /// Address one host (its N… id) instead of any host.
    #[arg(long)]
    host_id: Option<String>,
    /// How long to wait for a reply, in milliseconds.
    #[arg(long, default_value_t = 60_000)]
    timeout_ms: u64,
    /// The operator key commands are signed with.
    #[command(flatten)]
    operator: crate::secret::OperatorSeedArgs,
    #[command(subcommand)]
    command: Resource,
}

#[derive(Subcommand)]
enum Resource {
    /// Start, stop and list components.
    #[command(subcommand)]
    Component(ComponentCmd),
    /// Put, delete and list links.
    #[command(subcommand)]
    Link(LinkCmd),
    /// Put, get and delete named configs.
    #[command(subcommand)]
    Config(ConfigCmd),
    /// Start and stop providers a host supervises.
    #[command(subcommand)]
    Provider(ProviderCmd),
}

#[derive(Subcommand)]
enum ProviderCmd {
    /// Start the provider BINARY (under a directory the host allows) as ID, supervised by the
    /// host (--host-id, or any host).
    Start {
        id: String,
        binary: String,
        /// Provider-wide configuration, key=value; repeatable.
        #[arg(long = "config", value_parser = super::parse_pair)]
        config: Vec<(String, String)>,
    },
    /// Stop the provider ID on the host (--host-id).
    Stop { id: String },
}

#[derive(Subcommand)]
enum ComponentCmd {
    /// Start IMAGE under ID. IMAGE is a local .wasm file, uploaded into the lattice first; or a
    /// reference: `sha256:HEX` (uploaded before), `file:/PATH` (a file on the host, under a
    /// directory it allows).
    Start {
        image: String,
        id: String,
        /// Upper bound of concurrently running instances.
        #[arg(long)]
        max_instances: Option<u32>,
        /// A named config the component reads; repeatable.
        #[arg(long = "config")]
        config: Vec<String>,
    },
    /// Let up to MAX_INSTANCES instances of component ID run at once on the host (--host-id);
    /// 0 stops it there.
    Scale { id: String, max_instances: u32 },
    /// Run IMAGE (as for `start`) in place of what component ID runs, on --host-id or on every
    /// host that runs it; calls in flight finish on the old version.
    Update { id: String, image: String },
    /// Stop the component ID on the host (--host-id).
    Stop { id: String },
    /// List the components of every host, or of --host-id.
    List,
}

#[derive(Subcommand)]
enum LinkCmd {
    /// Let SOURCE call TARGET over NAMESPACE:PACKAGE.
    Put {
        source: String,
        target: String,
        /// WIT namespace and package, `wasi:keyvalue`.
        package: String,
        /// WIT interface covered; repeatable.
        #[arg(long = "interface", required = true)]
        interfaces: Vec<String>,
        /// Link name.
        #[arg(long, default_value = "default")]
        name: String,
        /// Config given to the source; repeatable.
        #[arg(long = "source-config")]
        source_config: Vec<String>,
        /// Config given to the target; repeatable.
        #[arg(long = "target-config")]
        target_config: Vec<String>,
    },
    /// Delete a link.
    Del {
        source: String,
        target: String,
        package: String,
        #[arg(long, default_value = "default")]
        name: String,
    },
    /// List links, optionally those of one id.
    Get {
        #[arg(long)]
        id: Option<String>,
    },
}

#[derive(Subcommand)]
enum ConfigCmd {
    /// Create or replace config NAME with key=value pairs. Values given as arguments are visible
    /// in the process list and shell history: pass secrets with --from-file or --from-env.
    Put {
        name: String,
        /// key=value pairs.
        #[arg(value_parser = super::parse_pair)]
        values: Vec<(String, String)>,
        /// Read key=value lines from FILE (`-` for stdin; `#` starts a comment line).
        #[arg(long, value_name = "FILE")]
        from_file: Option<std::path::PathBuf>,
        /// Take KEY's value from the environment variable VAR; repeatable.
        #[arg(long = "from-env", value_name = "KEY=VAR", value_parser = super::parse_pair)]
        from_env: Vec<(String, String)>,
    },
    /// Show config NAME.
    Get { name: String },
    /// Delete config NAME.
    Del { name: String },
}

fn split_package(package: &str) -> anyhow::Result<(String, String)> {
    package
        .split_once(':')
        .map(|(ns, pkg)| (ns.to_owned(), pkg.to_owned()))
        .with_context(|| format!("expected NAMESPACE:PACKAGE, got {package:?}"))
}

pub(crate) async fn run(args: CtlArgs) -> anyhow::Result<()> {
    let nats = ferry_lattice::NatsOptions::new(&args.nats_url, "ferry-ctl").connect().await?.client;
    let mut client = ferry_lattice::CtlClient::new(nats.clone(), &args.lattice, Duration::from_millis(args.timeout_ms));
    if let Some(operator) = args.operator.resolve()? {
        client = client.with_operator(operator);
    }
    let request_id = uuid::Uuid::new_v4().to_string();
    let host = args.host_id.as_deref();
    let response = match args.command {
        Resource::Component(ComponentCmd::Start { image, id, max_instances, config }) => {
            let image = reference(&nats, &args.lattice, &image).await?;
            let cmd = ComponentStart { request_id, component_id: id, image, max_instances, config };
            send(&client, &cmd, host).await
        }
        Resource::Component(ComponentCmd::Update { id, image }) => {
            let image = reference(&nats, &args.lattice, &image).await?;
            let cmd = ComponentUpdate { request_id, component_id: id, image };
            match host {
                Some(_) => send(&client, &cmd, host).await,
                None => update_everywhere(&client, cmd).await,
            }
        }
        Resource::Component(ComponentCmd::Scale { id, max_instances }) => {
            send(&client, &ComponentScale { request_id, component_id: id, max_instances }, host).await
        }
        Resource::Component(ComponentCmd::Stop { id }) => {
            send(&client, &ComponentStop { request_id, component_id: id }, host).await
        }
        Resource::Component(ComponentCmd::List) => {
            let cmd = ComponentList { request_id };
            match host {
                Some(_) => send(&client, &cmd, host).await,
                None => {
                    let answers = client.gather(&cmd, Duration::from_secs(2)).await?;
                    let data: Vec<_> = answers.into_iter().filter_map(|a| a.data).collect();
                    let message = format!("{} host(s) answered", data.len());
                    Ok(CtlResponse::ok(cmd.request_id, message, serde_json::to_value(data)?))
                }
            }
        }
        Resource::Provider(ProviderCmd::Start { id, binary, config }) => {
            let binary = std::fs::canonicalize(&binary).map(|p| p.display().to_string()).unwrap_or(binary);
            let cmd = ProviderStart { request_id, provider_id: id, binary, config: config.into_iter().collect() };
            send(&client, &cmd, host).await
        }
        Resource::Provider(ProviderCmd::Stop { id }) => {
            send(&client, &ProviderStop { request_id, provider_id: id }, host).await
        }
        Resource::Link(LinkCmd::Put { source, target, package, interfaces, name, source_config, target_config }) => {
            let (wit_namespace, wit_package) = split_package(&package)?;
            let link = Link {
                source_id: source,
                target_id: target,
                name,
                wit_namespace,
                wit_package,
                interfaces,
                source_config,
                target_config,
            };
            send(&client, &LinkPutCommand { request_id, link }, host).await
        }
        Resource::Link(LinkCmd::Del { source, target, package, name }) => {
            let (wit_namespace, wit_package) = split_package(&package)?;
            let key = LinkKey { source_id: source, target_id: target, wit_namespace, wit_package, name };
            send(&client, &LinkDelCommand { request_id, key }, host).await
        }
        Resource::Link(LinkCmd::Get { id }) => send(&client, &LinkGetCommand { request_id, id }, host).await,
        Resource::Config(ConfigCmd::Put { name, mut values, from_file, from_env }) => {
            if let Some(path) = &from_file {
                values.extend(crate::secret::parse_pairs(&crate::secret::read_source(path)?)?);
            }
            values.extend(crate::secret::from_env(from_env)?);
            if values.is_empty() {
                anyhow::bail!("config put needs key=value pairs, --from-file or --from-env");
            }
            send(&client, &ConfigPutCommand { request_id, name, values: values.into_iter().collect() }, host).await
        }
        Resource::Config(ConfigCmd::Get { name }) => send(&client, &ConfigGetCommand { request_id, name }, host).await,
        Resource::Config(ConfigCmd::Del { name }) => send(&client, &ConfigDelCommand { request_id, name }, host).await,
    }?;
    let _ = nats.drain().await;
    println!("{}", serde_json::to_string_pretty(&response)?);
    if !response.success {
        anyhow::bail!("{}", response.message);
    }
    Ok(())
}

/// The reference to send for IMAGE: a reference as given, or a local file uploaded into the
/// lattice's component store.
async fn reference(nats: &async_nats::Client, lattice: &str, image: &str) -> anyhow::Result<String> {
    if image.starts_with("sha256:") || image.starts_with("file:") {
        return Ok(image.to_owned());
    }
    let bytes = std::fs::read(image).with_context(|| {
        format!("cannot read {image} (name a local .wasm file, or a reference: sha256:HEX, file:/PATH on the host)")
    })?;
    let store = ferry_lattice::ComponentStore::open(nats, lattice).await?;
    let reference = store.upload(&bytes).await?.to_string();
    eprintln!("uploaded {image} ({} bytes) as {reference}", bytes.len());
    Ok(reference)
}

/// `component.update` on every host that runs the component: one reply per host, success
/// when every one of them took it.
async fn update_everywhere(client: &ferry_lattice::CtlClient, cmd: ComponentUpdate) -> anyhow::Result<CtlResponse> {
    let lists = client.gather(&ComponentList { request_id: cmd.request_id.clone() }, Duration::from_secs(2)).await?;
    let hosts: Vec<String> = lists
        .into_iter()
        .filter_map(|l| l.data)
        .filter(|l| l.components.iter().any(|c| c.component_id == cmd.component_id))
        .map(|l| l.host_id)
        .collect();
    if hosts.is_empty() {
        return Ok(CtlResponse::fail(cmd.request_id, format!("no host runs component {}", cmd.component_id)));
    }
    let mut replies = Vec::new();
    for host in &hosts {
        replies.push(client.send(&cmd, Some(host)).await?);
    }
    let failed = replies.iter().filter(|r| !r.success).count();
    let message = format!("{} of {} host(s) updated component {}", hosts.len() - failed, hosts.len(), cmd.component_id);
    let data = serde_json::to_value(&replies)?;
    Ok(if failed == 0 {
        CtlResponse::ok(cmd.request_id, message, data)
    } else {
        CtlResponse::fail_with(cmd.request_id, message, data)
    })
}

/// Send one command and take its reply as JSON, for printing.
async fn send<C: Command>(
    client: &ferry_lattice::CtlClient,
    command: &C,
    host: Option<&str>,
) -> anyhow::Result<CtlResponse> {
    Ok(client.send(command, host).await?.into_json())
}
