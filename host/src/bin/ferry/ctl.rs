//! `ferry ctl`: the control interface from the command line. Prints the hosts' replies as JSON
//! and exits non-zero when a command did not take effect.

use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use ferry_proto::{
    ctl::{
        ComponentStart, ComponentStop, ConfigNameCommand, ConfigPutCommand, LinkDelCommand, LinkGetCommand,
        LinkPutCommand,
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
}

#[derive(Subcommand)]
enum ComponentCmd {
    /// Start the component at PATH (a file on the host) under ID.
    Start {
        path: String,
        id: String,
        /// Upper bound of concurrently running instances.
        #[arg(long)]
        max_instances: Option<u32>,
        /// A named config the component reads; repeatable.
        #[arg(long = "config")]
        config: Vec<String>,
    },
    /// Stop the component ID.
    Stop { id: String },
    /// List the components of a host.
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
    let client = ferry_lattice::CtlClient::new(nats.clone(), &args.lattice, Duration::from_millis(args.timeout_ms));
    let request_id = uuid::Uuid::new_v4().to_string();
    let host = args.host_id.as_deref();
    let response = match args.command {
        Resource::Component(ComponentCmd::Start { path, id, max_instances, config }) => {
            let image = std::fs::canonicalize(&path).map(|p| p.display().to_string()).unwrap_or(path);
            let cmd = ComponentStart { request_id, component_id: id, image, max_instances, config };
            client.request("component", "start", host, &cmd).await
        }
        Resource::Component(ComponentCmd::Stop { id }) => {
            client.request("component", "stop", host, &ComponentStop { request_id, component_id: id }).await
        }
        Resource::Component(ComponentCmd::List) => {
            client.request("component", "list", host, &serde_json::json!({ "request_id": request_id })).await
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
            client.request("link", "put", host, &LinkPutCommand { request_id, link }).await
        }
        Resource::Link(LinkCmd::Del { source, target, package, name }) => {
            let (wit_namespace, wit_package) = split_package(&package)?;
            let key = LinkKey { source_id: source, target_id: target, wit_namespace, wit_package, name };
            client.request("link", "del", host, &LinkDelCommand { request_id, key }).await
        }
        Resource::Link(LinkCmd::Get { id }) => {
            client.request("link", "get", host, &LinkGetCommand { request_id, id }).await
        }
        Resource::Config(ConfigCmd::Put { name, mut values, from_file, from_env }) => {
            if let Some(path) = &from_file {
                values.extend(crate::secret::parse_pairs(&crate::secret::read_source(path)?)?);
            }
            values.extend(crate::secret::from_env(from_env)?);
            if values.is_empty() {
                anyhow::bail!("config put needs key=value pairs, --from-file or --from-env");
            }
            client
                .request(
                    "config",
                    "put",
                    host,
                    &ConfigPutCommand { request_id, name, values: values.into_iter().collect() },
                )
                .await
        }
        Resource::Config(ConfigCmd::Get { name }) => {
            client.request("config", "get", host, &ConfigNameCommand { request_id, name }).await
        }
        Resource::Config(ConfigCmd::Del { name }) => {
            client.request("config", "del", host, &ConfigNameCommand { request_id, name }).await
        }
    }?;
    let _ = nats.drain().await;
    println!("{}", serde_json::to_string_pretty(&response)?);
    if !response.success {
        anyhow::bail!("{}", response.message);
    }
    Ok(())
}
