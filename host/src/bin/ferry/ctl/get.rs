//! `ferry ctl get …`: what the lattice runs, as tables.

use clap::Subcommand;
use ferry_proto::ctl::{ComponentList, CtlResponse, HostInventory, HostPing, Inventory, LinkGetCommand};

use super::{
    Ctx, Outcome,
    table::{Table, pairs, short},
};

#[derive(Subcommand)]
pub(crate) enum GetCmd {
    /// Every host: id, labels, version, uptime, what it runs.
    Hosts,
    /// What HOST (or every host) runs: components and supervised providers.
    Inventory { host: Option<String> },
    /// Every host's components (or --host-id's).
    Components,
    /// Every host's supervised providers (or --host-id's).
    Providers,
    /// Every link, or those from or to ID.
    Links {
        #[arg(long)]
        id: Option<String>,
    },
    /// The values of config NAME.
    Config { name: String },
}

pub(crate) async fn run(ctx: &Ctx, host: Option<&str>, cmd: GetCmd) -> anyhow::Result<Outcome> {
    let request_id = ctx.request_id.clone();
    match cmd {
        GetCmd::Hosts => {
            let replies = ctx.gather(&HostPing { request_id }).await?;
            let mut table = Table::new(&["HOST", "LABELS", "VERSION", "UPTIME", "COMPONENTS", "PROVIDERS"]);
            let mut hosts: Vec<_> = replies.iter().filter_map(|r| r.data.as_ref()).collect();
            hosts.sort_by(|a, b| a.host_id.cmp(&b.host_id));
            for h in hosts {
                table.row(vec![
                    h.host_id.clone(),
                    pairs(&h.labels),
                    h.version.clone(),
                    uptime(h.uptime_seconds),
                    h.components.to_string(),
                    h.providers.to_string(),
                ]);
            }
            Ok(Outcome::gathered(replies, "answered").with_table(table))
        }
        GetCmd::Inventory { host: named } => {
            let named = match named {
                Some(given) => Some(ctx.resolve_host(&given).await?),
                None => host.map(str::to_owned),
            };
            let replies = inventories(ctx, named.as_deref()).await?;
            let mut table = Table::new(&["HOST", "KIND", "ID", "STATE", "SOURCE"]);
            for inv in replies.iter().filter_map(|r| r.data.as_ref()) {
                for c in &inv.components {
                    let state = format!("max {}", c.max_instances);
                    table.row(vec![
                        short(&inv.host.host_id, 12),
                        "component".into(),
                        c.component_id.clone(),
                        state,
                        c.image.clone(),
                    ]);
                }
                for p in &inv.providers {
                    let state = match p.pid {
                        Some(pid) => format!("pid {pid}, {} restart(s)", p.restarts),
                        None => format!("restarting, {} restart(s)", p.restarts),
                    };
                    table.row(vec![
                        short(&inv.host.host_id, 12),
                        "provider".into(),
                        p.provider_id.clone(),
                        state,
                        p.binary.clone(),
                    ]);
                }
            }
            Ok(Outcome::gathered(replies, "answered").with_table(table))
        }
        GetCmd::Components => {
            let cmd = ComponentList { request_id };
            let replies = match host {
                Some(host) => vec![ctx.client.send(&cmd, Some(host)).await?],
                None => ctx.gather(&cmd).await?,
            };
            let mut table = Table::new(&["HOST", "COMPONENT", "MAX", "DIGEST", "IMAGE"]);
            for list in replies.iter().filter_map(|r| r.data.as_ref()) {
                for c in &list.components {
                    table.row(vec![
                        short(&list.host_id, 12),
                        c.component_id.clone(),
                        c.max_instances.to_string(),
                        short(&c.digest, 12),
                        c.image.clone(),
                    ]);
                }
            }
            Ok(Outcome::gathered(replies, "answered").with_table(table))
        }
        GetCmd::Providers => {
            let replies = inventories(ctx, host).await?;
            let mut table = Table::new(&["HOST", "PROVIDER", "PID", "RESTARTS", "BINARY"]);
            for inv in replies.iter().filter_map(|r| r.data.as_ref()) {
                for p in &inv.providers {
                    let pid = p.pid.map_or_else(|| "-".to_owned(), |pid| pid.to_string());
                    table.row(vec![
                        short(&inv.host.host_id, 12),
                        p.provider_id.clone(),
                        pid,
                        p.restarts.to_string(),
                        p.binary.clone(),
                    ]);
                }
            }
            Ok(Outcome::gathered(replies, "answered").with_table(table))
        }
        GetCmd::Links { id } => {
            let reply = ctx.client.send(&LinkGetCommand { request_id, id }, host).await?;
            let mut table = Table::new(&["SOURCE", "TARGET", "PACKAGE", "NAME", "INTERFACES", "CONFIG"]);
            for l in reply.data.iter().flatten() {
                let config = format!("source={} target={}", list(&l.source_config), list(&l.target_config));
                table.row(vec![
                    l.source_id.clone(),
                    l.target_id.clone(),
                    format!("{}:{}", l.wit_namespace, l.wit_package),
                    l.name.clone(),
                    l.interfaces.join(","),
                    config,
                ]);
            }
            Ok(Outcome::reply(reply).with_table(table))
        }
        GetCmd::Config { name } => {
            let reply = ctx.client.config_get(&request_id, &name, host).await?;
            let mut table = Table::new(&["KEY", "VALUE"]);
            for (key, value) in reply.data.iter().flatten() {
                table.row(vec![key.clone(), value.clone()]);
            }
            Ok(Outcome::reply(reply).with_table(table))
        }
    }
}

/// The inventory of `host`, or of every host.
async fn inventories(ctx: &Ctx, host: Option<&str>) -> anyhow::Result<Vec<CtlResponse<Inventory>>> {
    let cmd = HostInventory { request_id: ctx.request_id.clone() };
    Ok(match host {
        Some(host) => vec![ctx.client.send(&cmd, Some(host)).await?],
        None => ctx.gather(&cmd).await?,
    })
}

fn list(names: &[String]) -> String {
    if names.is_empty() { "-".into() } else { names.join(",") }
}

fn uptime(seconds: u64) -> String {
    match seconds {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}
