//! The commands of `ferry ctl` that change something, and where each is sent.

use anyhow::Context as _;
use clap::Subcommand;
use ferry_proto::{
    ctl::{
        ComponentAuction, ComponentList, ComponentScale, ComponentStart, ComponentStop, ComponentUpdate,
        ConfigDelCommand, ConfigPutCommand, HostInventory, HostStop, LabelDel, LabelPut, LinkDelCommand,
        LinkPutCommand, ProviderAuction, ProviderStart, ProviderStop,
    },
    link::{Link, LinkKey},
};

use super::{Ctx, Outcome, get};

#[derive(Subcommand)]
pub(crate) enum Resource {
    /// Show hosts, inventories, components, providers, links or a config.
    #[command(subcommand)]
    Get(get::GetCmd),
    /// Start, scale, update, stop and list components.
    #[command(subcommand)]
    Component(ComponentCmd),
    /// Start and stop providers a host supervises.
    #[command(subcommand)]
    Provider(ProviderCmd),
    /// Put, delete and list links.
    #[command(subcommand)]
    Link(LinkCmd),
    /// Put, get and delete named configs.
    #[command(subcommand)]
    Config(ConfigCmd),
    /// Set and remove a host's labels.
    #[command(subcommand)]
    Label(LabelCmd),
    /// Stop a host.
    #[command(subcommand)]
    Host(HostCmd),
    /// Deploy wadm manifests and follow them (also `ferry app`).
    #[command(subcommand)]
    App(super::app::AppCmd),
    /// Print the lattice's events as they happen, one a line, until Ctrl-C.
    Watch {
        /// Only events of this name (`component_scaled`); repeatable.
        #[arg(long = "event")]
        events: Vec<String>,
    },
}

#[derive(Subcommand)]
pub(crate) enum ComponentCmd {
    /// Start IMAGE under ID, on --host-id or on the host that wins an auction. IMAGE is a local
    /// .wasm file, uploaded into the lattice first; or a reference: `sha256:HEX` (uploaded
    /// before), `file:/PATH` (a file on the host, under a directory it allows).
    Start {
        image: String,
        id: String,
        /// Upper bound of concurrently running instances.
        #[arg(long)]
        max_instances: Option<u32>,
        /// A named config the component reads; repeatable.
        #[arg(long = "config")]
        config: Vec<String>,
        /// Only a host with this label may take it, key=value; repeatable.
        #[arg(long = "constraint", value_parser = crate::parse_pair)]
        constraints: Vec<(String, String)>,
    },
    /// Let up to MAX_INSTANCES instances of component ID run at once, on --host-id or on every
    /// host that runs it; 0 stops it there.
    Scale { id: String, max_instances: u32 },
    /// Run IMAGE (as for `start`) in place of what component ID runs, on --host-id or on every
    /// host that runs it; calls in flight finish on the old version.
    Update { id: String, image: String },
    /// Stop component ID on --host-id or on every host that runs it.
    Stop { id: String },
    /// List the components of every host, or of --host-id (as `get components`).
    List,
}

#[derive(Subcommand)]
pub(crate) enum ProviderCmd {
    /// Start the provider BINARY (a file under a directory the host allows, or a provider image
    /// `oci://REGISTRY/REPO:TAG` from a repository it allows) as ID, supervised by --host-id
    /// or by the host that wins an auction.
    Start {
        id: String,
        binary: String,
        /// Provider-wide configuration, key=value; repeatable.
        #[arg(long = "config", value_parser = crate::parse_pair)]
        config: Vec<(String, String)>,
        /// Only a host with this label may take it, key=value; repeatable.
        #[arg(long = "constraint", value_parser = crate::parse_pair)]
        constraints: Vec<(String, String)>,
    },
    /// Stop provider ID on --host-id or on every host that supervises it.
    Stop { id: String },
}

#[derive(Subcommand)]
pub(crate) enum LinkCmd {
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
    /// List links, optionally those of one id (as `get links`).
    Get {
        #[arg(long)]
        id: Option<String>,
    },
}

#[derive(Subcommand)]
pub(crate) enum ConfigCmd {
    /// Create or replace config NAME with key=value pairs. Values given as arguments are visible
    /// in the process list and shell history: pass secrets with --from-file or --from-env.
    Put {
        name: String,
        /// key=value pairs.
        #[arg(value_parser = crate::parse_pair)]
        values: Vec<(String, String)>,
        /// Read key=value lines from FILE (`-` for stdin; `#` starts a comment line).
        #[arg(long, value_name = "FILE")]
        from_file: Option<std::path::PathBuf>,
        /// Take KEY's value from the environment variable VAR; repeatable.
        #[arg(long = "from-env", value_name = "KEY=VAR", value_parser = crate::parse_pair)]
        from_env: Vec<(String, String)>,
    },
    /// Show config NAME (as `get config`).
    Get { name: String },
    /// Delete config NAME.
    Del { name: String },
}

#[derive(Subcommand)]
pub(crate) enum LabelCmd {
    /// Set label KEY to VALUE on HOST.
    Put { host: String, key: String, value: String },
    /// Remove label KEY from HOST.
    Del { host: String, key: String },
}

#[derive(Subcommand)]
pub(crate) enum HostCmd {
    /// Stop HOST: it stops taking calls, lets those in flight finish, and exits.
    Stop { host: String },
}

fn split_package(package: &str) -> anyhow::Result<(String, String)> {
    package
        .split_once(':')
        .map(|(ns, pkg)| (ns.to_owned(), pkg.to_owned()))
        .with_context(|| format!("expected NAMESPACE:PACKAGE, got {package:?}"))
}

pub(crate) async fn run(
    ctx: &Ctx,
    nats: &async_nats::Client,
    lattice: &str,
    host: Option<&str>,
    command: Resource,
) -> anyhow::Result<Outcome> {
    let request_id = ctx.request_id.clone();
    match command {
        Resource::Get(cmd) => get::run(ctx, host, cmd).await,
        Resource::App(cmd) => super::app::run(ctx, nats, lattice, cmd, ctx.timeout).await,
        Resource::Watch { events } => super::watch::run(nats, lattice, &events, ctx.json).await,
        Resource::Component(cmd) => component(ctx, nats, lattice, host, cmd).await,
        Resource::Provider(ProviderCmd::Start { id, binary, config, constraints }) => {
            let constraints = constraints.into_iter().collect();
            let auction = ProviderAuction { request_id: request_id.clone(), provider_id: id.clone(), constraints };
            let Some(host) = ctx.host_or_winner(host, &auction).await? else {
                return Ok(Outcome::unanswered(format!("no host bid to supervise provider {id}")));
            };
            let mut cmd = ProviderStart { request_id, provider_id: id, binary, config: config.into_iter().collect() };
            // A file on this machine is named by its absolute path; a registry image as given.
            if matches!(cmd.image(), Ok(None))
                && let Ok(path) = std::fs::canonicalize(&cmd.binary)
            {
                cmd.binary = path.display().to_string();
            }
            ctx.one(&cmd, Some(&host)).await
        }
        Resource::Provider(ProviderCmd::Stop { id }) => {
            let cmd = ProviderStop { request_id, provider_id: id.clone() };
            let hosts = match host {
                Some(host) => vec![host.to_owned()],
                None => supervising(ctx, &id).await?,
            };
            if hosts.is_empty() {
                return Ok(Outcome::unanswered(format!("no host supervises provider {id}")));
            }
            ctx.each(&cmd, &hosts, &format!("stopped provider {id}")).await
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
            ctx.one(&LinkPutCommand { request_id, link }, host).await
        }
        Resource::Link(LinkCmd::Del { source, target, package, name }) => {
            let (wit_namespace, wit_package) = split_package(&package)?;
            let key = LinkKey { source_id: source, target_id: target, wit_namespace, wit_package, name };
            ctx.one(&LinkDelCommand { request_id, key }, host).await
        }
        Resource::Link(LinkCmd::Get { id }) => get::run(ctx, host, get::GetCmd::Links { id }).await,
        Resource::Config(ConfigCmd::Put { name, mut values, from_file, from_env }) => {
            if let Some(path) = &from_file {
                values.extend(crate::secret::parse_pairs(&crate::secret::read_source(path)?)?);
            }
            values.extend(crate::secret::from_env(from_env)?);
            if values.is_empty() {
                anyhow::bail!("config put needs key=value pairs, --from-file or --from-env");
            }
            ctx.one(&ConfigPutCommand { request_id, name, values: values.into_iter().collect() }, host).await
        }
        Resource::Config(ConfigCmd::Get { name }) => get::run(ctx, host, get::GetCmd::Config { name }).await,
        Resource::Config(ConfigCmd::Del { name }) => ctx.one(&ConfigDelCommand { request_id, name }, host).await,
        Resource::Label(LabelCmd::Put { host, key, value }) => {
            let host = ctx.resolve_host(&host).await?;
            ctx.one(&LabelPut { request_id, key, value }, Some(&host)).await
        }
        Resource::Label(LabelCmd::Del { host, key }) => {
            let host = ctx.resolve_host(&host).await?;
            ctx.one(&LabelDel { request_id, key }, Some(&host)).await
        }
        Resource::Host(HostCmd::Stop { host }) => {
            let host = ctx.resolve_host(&host).await?;
            ctx.one(&HostStop { request_id }, Some(&host)).await
        }
    }
}

async fn component(
    ctx: &Ctx,
    nats: &async_nats::Client,
    lattice: &str,
    host: Option<&str>,
    command: ComponentCmd,
) -> anyhow::Result<Outcome> {
    let request_id = ctx.request_id.clone();
    match command {
        ComponentCmd::Start { image, id, max_instances, config, constraints } => {
            let constraints = constraints.into_iter().collect();
            let auction = ComponentAuction { request_id: request_id.clone(), component_id: id.clone(), constraints };
            let Some(host) = ctx.host_or_winner(host, &auction).await? else {
                return Ok(Outcome::unanswered(format!("no host bid to run component {id}")));
            };
            let image = reference(nats, lattice, &image).await?;
            let cmd = ComponentStart { request_id, component_id: id, image, max_instances, config };
            ctx.one(&cmd, Some(&host)).await
        }
        ComponentCmd::Scale { id, max_instances } => {
            let cmd = ComponentScale { request_id, component_id: id.clone(), max_instances };
            on_running(ctx, host, &id, &cmd, &format!("scaled component {id} to {max_instances}")).await
        }
        ComponentCmd::Update { id, image } => {
            let image = reference(nats, lattice, &image).await?;
            let cmd = ComponentUpdate { request_id, component_id: id.clone(), image };
            on_running(ctx, host, &id, &cmd, &format!("updated component {id}")).await
        }
        ComponentCmd::Stop { id } => {
            let cmd = ComponentStop { request_id, component_id: id.clone() };
            on_running(ctx, host, &id, &cmd, &format!("stopped component {id}")).await
        }
        ComponentCmd::List => get::run(ctx, host, get::GetCmd::Components).await,
    }
}

/// Send `cmd` to `host`, or to every host that runs component `id`.
async fn on_running<C: ferry_proto::ctl::Command>(
    ctx: &Ctx,
    host: Option<&str>,
    id: &str,
    cmd: &C,
    what: &str,
) -> anyhow::Result<Outcome> {
    if let Some(host) = host {
        return ctx.one(cmd, Some(host)).await;
    }
    let lists = ctx.gather(&ComponentList { request_id: ctx.request_id.clone() }).await?;
    let hosts: Vec<String> = lists
        .into_iter()
        .filter_map(|l| l.data)
        .filter(|l| l.components.iter().any(|c| c.component_id == id))
        .map(|l| l.host_id)
        .collect();
    if hosts.is_empty() {
        return Ok(Outcome::unanswered(format!("no host runs component {id}")));
    }
    ctx.each(cmd, &hosts, what).await
}

/// The hosts that supervise provider `id`.
async fn supervising(ctx: &Ctx, id: &str) -> anyhow::Result<Vec<String>> {
    let inventories = ctx.gather(&HostInventory { request_id: ctx.request_id.clone() }).await?;
    Ok(inventories
        .into_iter()
        .filter_map(|i| i.data)
        .filter(|i| i.providers.iter().any(|p| p.provider_id == id))
        .map(|i| i.host.host_id)
        .collect())
}

/// The reference to send for IMAGE: a reference as given (an OCI image the hosts pull), or a
/// local file uploaded into the lattice's component store.
async fn reference(nats: &async_nats::Client, lattice: &str, image: &str) -> anyhow::Result<String> {
    if image.starts_with("sha256:") || image.starts_with("file:") || image.starts_with("oci://") {
        return Ok(image.to_owned());
    }
    if !std::path::Path::new(image).exists()
        && let Ok(oci) = ferry_proto::image::OciRef::parse(image)
    {
        return Ok(oci.to_string());
    }
    let bytes = std::fs::read(image).with_context(|| {
        format!(
            "cannot read {image} (name a local .wasm file, or a reference: oci://REGISTRY/REPO:TAG, sha256:HEX, file:/PATH on the host)"
        )
    })?;
    let store = ferry_lattice::ComponentStore::open(nats, lattice).await?;
    let reference = store.upload(&bytes).await?.to_string();
    eprintln!("uploaded {image} ({} bytes) as {reference}", bytes.len());
    Ok(reference)
}
