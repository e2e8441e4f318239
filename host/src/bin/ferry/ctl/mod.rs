//! `ferry ctl`: the control interface from the command line. Aligned tables or a one-line
//! message for people, `--json` for scripts (the hosts' replies as they are), and exit codes
//! scripts can rely on: 0 done, 1 refused or failed, 2 usage, 3 no host answered.
//!
//! Where a host is optional, an auction decides (starts) or every host that runs the id is
//! addressed (scale, update, stop); a host may be named by a unique prefix of its id.

pub(crate) mod app;
mod commands;
mod get;
mod table;
mod watch;

use std::time::Duration;

use clap::Args;
use ferry_lattice::{CtlClient, LatticeError};
use ferry_proto::ctl::{AuctionBid, Command, CtlResponse, HostPing};
use serde::Serialize;

use self::table::Table;

/// How long lattice-wide queries and auctions collect answers.
const GATHER: Duration = Duration::from_secs(2);

/// Exit code: the command was refused or failed.
const EXIT_FAILED: i32 = 1;
/// Exit code: no host answered (none runs, none bid, NATS unreachable).
const EXIT_UNANSWERED: i32 = 3;

/// Where and how `ferry ctl` and `ferry app` reach a lattice.
#[derive(Args)]
pub(crate) struct Connection {
    /// NATS server URL.
    #[arg(long, env = "FERRY_NATS_URL", default_value = "nats://127.0.0.1:4222")]
    nats_url: String,
    /// Lattice to control.
    #[arg(long, env = "FERRY_LATTICE", default_value = "default")]
    lattice: String,
    /// Address one host (its N… id, or a unique prefix of it).
    #[arg(long = "host-id", visible_alias = "host", global = true)]
    host_id: Option<String>,
    /// How long to wait for a reply, in milliseconds.
    #[arg(long, default_value_t = 60_000, global = true)]
    timeout_ms: u64,
    /// Print the hosts' replies as JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    /// The operator key commands are signed with.
    #[command(flatten)]
    operator: crate::secret::OperatorSeedArgs,
}

#[derive(Args)]
pub(crate) struct CtlArgs {
    #[command(flatten)]
    conn: Connection,
    #[command(subcommand)]
    command: commands::Resource,
}

/// `ferry app …`: the same as `ferry ctl app …`.
#[derive(Args)]
pub(crate) struct AppArgs {
    #[command(flatten)]
    conn: Connection,
    #[command(subcommand)]
    command: app::AppCmd,
}

impl From<AppArgs> for CtlArgs {
    fn from(args: AppArgs) -> Self {
        Self { conn: args.conn, command: commands::Resource::App(args.command) }
    }
}

/// What a command came to: whether it took effect, what to tell people, what to tell scripts.
pub(crate) struct Outcome {
    code: i32,
    message: String,
    json: serde_json::Value,
    table: Option<Table>,
}

impl Outcome {
    /// One host's reply.
    fn reply<T: Serialize>(reply: CtlResponse<T>) -> Self {
        let reply = reply.into_json();
        let code = if reply.success { 0 } else { EXIT_FAILED };
        let message = reply.message.clone();
        Self { code, message, json: serde_json::to_value(&reply).unwrap_or_default(), table: None }
    }

    /// Replies gathered from several hosts: done when every one succeeded, unanswered when
    /// none came.
    fn gathered<T: Serialize>(replies: Vec<CtlResponse<T>>, what: &str) -> Self {
        let failed = replies.iter().filter(|r| !r.success).count();
        let code = match (replies.len(), failed) {
            (0, _) => EXIT_UNANSWERED,
            (_, 0) => 0,
            _ => EXIT_FAILED,
        };
        let message = match replies.len() {
            0 => format!("no host answered ({what})"),
            n => format!("{} of {n} host(s): {what}", n - failed),
        };
        let replies: Vec<CtlResponse> = replies.into_iter().map(CtlResponse::into_json).collect();
        Self { code, message, json: serde_json::to_value(&replies).unwrap_or_default(), table: None }
    }

    /// Nothing was sent: no host to send it to.
    fn unanswered(message: String) -> Self {
        Self {
            code: EXIT_UNANSWERED,
            json: serde_json::json!({ "success": false, "message": message }),
            message,
            table: None,
        }
    }

    /// Done, and nothing more to print (a watch that ended).
    fn silent() -> Self {
        Self { code: 0, message: String::new(), json: serde_json::Value::Null, table: None }
    }

    fn with_table(mut self, table: Table) -> Self {
        self.table = Some(table);
        self
    }
}

/// The connection and defaults every command uses.
pub(crate) struct Ctx {
    client: CtlClient,
    request_id: String,
    json: bool,
    /// `--timeout-ms`.
    timeout: Duration,
}

impl Ctx {
    /// Send one command to `host` (or whoever its scope picks).
    async fn one<C: Command>(&self, command: &C, host: Option<&str>) -> anyhow::Result<Outcome> {
        Ok(Outcome::reply(self.client.send(command, host).await?))
    }

    /// Send `command` to each of `hosts`.
    async fn each<C: Command>(&self, command: &C, hosts: &[String], what: &str) -> anyhow::Result<Outcome> {
        let mut replies = Vec::new();
        for host in hosts {
            replies.push(self.client.send(command, Some(host)).await?);
        }
        Ok(Outcome::gathered(replies, what))
    }

    /// Gather every host's answer to `command`.
    async fn gather<C: Command>(&self, command: &C) -> anyhow::Result<Vec<CtlResponse<C::Reply>>> {
        Ok(self.client.gather(command, GATHER).await?)
    }

    /// `host` when one was named, else the host that wins `auction` (the first to bid); `None`
    /// when nobody bids.
    async fn host_or_winner<C: Command<Reply = AuctionBid>>(
        &self,
        host: Option<&str>,
        auction: &C,
    ) -> anyhow::Result<Option<String>> {
        if let Some(host) = host {
            return Ok(Some(host.to_owned()));
        }
        let bids = self.gather(auction).await?;
        Ok(bids.into_iter().filter(|b| b.success).find_map(|b| b.data).map(|bid| bid.host_id))
    }

    /// The full id of the host named by `given` (an id or a unique prefix of one).
    async fn resolve_host(&self, given: &str) -> anyhow::Result<String> {
        if given.len() == 56 {
            return Ok(given.to_owned());
        }
        let ping = HostPing { request_id: self.request_id.clone() };
        let ids: Vec<String> =
            self.gather(&ping).await?.into_iter().filter_map(|p| p.data).map(|h| h.host_id).collect();
        let matching: Vec<&String> = ids.iter().filter(|id| id.starts_with(given)).collect();
        match matching.as_slice() {
            [one] => Ok((*one).clone()),
            [] => anyhow::bail!("no host's id starts with {given:?}"),
            _ => anyhow::bail!("{} hosts' ids start with {given:?}: give more of it", matching.len()),
        }
    }
}

pub(crate) async fn run(args: CtlArgs) -> anyhow::Result<()> {
    let json = args.conn.json;
    let code = match execute(args).await {
        Ok(outcome) => {
            print(&outcome, json);
            outcome.code
        }
        Err(err) => {
            let unreachable = err.downcast_ref::<LatticeError>().is_some_and(|e| matches!(e, LatticeError::Nats(_)));
            eprintln!("ferry ctl: {err:#}");
            if unreachable { EXIT_UNANSWERED } else { EXIT_FAILED }
        }
    };
    if code != 0 {
        std::process::exit(code);
    }
    Ok(())
}

async fn execute(args: CtlArgs) -> anyhow::Result<Outcome> {
    let CtlArgs { conn: args, command } = args;
    let security = ferry_lattice::NatsSecurity::from_env()?;
    let nats = ferry_lattice::NatsOptions::new(&args.nats_url, "ferry-ctl").secured(&security).connect().await?.client;
    let timeout = Duration::from_millis(args.timeout_ms);
    let mut client = CtlClient::new(nats.clone(), &args.lattice, timeout);
    if let Some(operator) = args.operator.resolve()? {
        client = client.with_operator(operator);
    }
    let ctx = Ctx { client, request_id: uuid::Uuid::new_v4().to_string(), json: args.json, timeout };
    let host = match &args.host_id {
        Some(given) => Some(ctx.resolve_host(given).await?),
        None => None,
    };
    let outcome = commands::run(&ctx, &nats, &args.lattice, host.as_deref(), command).await;
    let _ = ferry_lattice::nats::close(&nats).await;
    outcome
}

fn print(outcome: &Outcome, json: bool) {
    if json {
        if !outcome.json.is_null() {
            println!("{}", serde_json::to_string_pretty(&outcome.json).unwrap_or_default());
        }
        return;
    }
    match &outcome.table {
        Some(table) if !table.is_empty() => println!("{}", table.render()),
        _ if outcome.code == 0 && !outcome.message.is_empty() => println!("{}", outcome.message),
        _ => {}
    }
    if outcome.code != 0 {
        eprintln!("ferry ctl: {}", outcome.message);
    }
}
