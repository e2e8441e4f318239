//! `ferry app` (also `ferry ctl app`): deploy wadm manifests and follow them. The manifest is
//! checked here first, so a mistake is reported with its line before anything is sent;
//! `file://` component images are read here (relative paths from the manifest's folder) and
//! uploaded into the lattice, so no host reads the client's files.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use clap::Subcommand;
use ferry_host::app::manifest::{self, PartKind};
use ferry_proto::ctl::{AppDeploy, AppHistory, AppList, AppState, AppStatus, AppStatusQuery, AppUndeploy, CtlResponse};

use super::{Ctx, EXIT_FAILED, Outcome, table::Table};

/// How often `--wait` asks for the application's status.
const POLL: Duration = Duration::from_millis(500);

#[derive(Subcommand)]
pub(crate) enum AppCmd {
    /// Store the manifest FILE as a version of its application and deploy it; the lattice's
    /// reconciler places it. With --wait, return once everything runs (or --timeout-ms passes).
    Deploy {
        file: PathBuf,
        #[arg(long)]
        wait: bool,
    },
    /// Remove what the reconciler created for application NAME; its versions stay. With
    /// --wait, return once everything is gone.
    Undeploy {
        name: String,
        #[arg(long)]
        wait: bool,
    },
    /// List the lattice's applications.
    List,
    /// Show where application NAME stands, part by part.
    Status { name: String },
    /// List the stored versions of application NAME.
    History { name: String },
    /// Check a manifest FILE without sending it.
    Validate { file: PathBuf },
}

pub(crate) async fn run(
    ctx: &Ctx,
    nats: &async_nats::Client,
    lattice: &str,
    cmd: AppCmd,
    timeout: Duration,
) -> anyhow::Result<Outcome> {
    let request_id = ctx.request_id.clone();
    match cmd {
        AppCmd::Validate { file } => {
            let (app, _) = read(&file)?;
            let message = format!(
                "{}: application {} version {} is valid ({} parts, {} links)",
                file.display(),
                app.name,
                app.version,
                app.parts.len(),
                app.links.len()
            );
            Ok(Outcome {
                code: 0,
                json: serde_json::json!({ "success": true, "message": message }),
                message,
                table: None,
            })
        }
        AppCmd::Deploy { file, wait } => {
            let (app, text) = read(&file)?;
            let base = file.parent().map(Path::to_path_buf).unwrap_or_default();
            let images = upload(nats, lattice, &app, &base).await?;
            let reply =
                ctx.client.send(&AppDeploy { request_id: request_id.clone(), manifest: text, images }, None).await?;
            if !wait || !reply.success {
                return Ok(Outcome::reply(reply));
            }
            follow(ctx, &app.name, timeout, |s| s.is_some_and(|s| s.state == AppState::Deployed)).await
        }
        AppCmd::Undeploy { name, wait } => {
            let reply = ctx.client.send(&AppUndeploy { request_id, name: name.clone() }, None).await?;
            if !wait || !reply.success {
                return Ok(Outcome::reply(reply));
            }
            follow(ctx, &name, timeout, |s| s.is_none()).await
        }
        AppCmd::List => {
            let reply = ctx.client.send(&AppList { request_id }, None).await?;
            let mut table = Table::new(&["NAME", "DEPLOYED", "LATEST", "STATE", "MESSAGE"]);
            for app in reply.data.iter().flatten() {
                table.row(vec![
                    app.name.clone(),
                    app.deployed_version.clone().unwrap_or_else(|| "-".into()),
                    app.latest_version.clone(),
                    state_name(app.state).into(),
                    app.message.clone(),
                ]);
            }
            Ok(Outcome::reply(reply).with_table(table))
        }
        AppCmd::Status { name } => {
            let reply = ctx.client.send(&AppStatusQuery { request_id, name }, None).await?;
            let table = reply.data.as_ref().map(status_table);
            let outcome = Outcome::reply(reply);
            Ok(match table {
                Some(table) => outcome.with_table(table),
                None => outcome,
            })
        }
        AppCmd::History { name } => {
            let reply = ctx.client.send(&AppHistory { request_id, name }, None).await?;
            let mut table = Table::new(&["VERSION", "STORED (ms since epoch)", "DEPLOYED"]);
            for v in reply.data.iter().flatten() {
                table.row(vec![
                    v.version.clone(),
                    v.stored_at_ms.to_string(),
                    if v.deployed { "yes" } else { "" }.into(),
                ]);
            }
            Ok(Outcome::reply(reply).with_table(table))
        }
    }
}

/// The manifest and its text, or the error with the file, line and field.
fn read(file: &Path) -> anyhow::Result<(manifest::Application, String)> {
    let text = std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let app = manifest::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    Ok((app, text))
}

/// Upload each `file://` component image; what each was uploaded as.
async fn upload(
    nats: &async_nats::Client,
    lattice: &str,
    app: &manifest::Application,
    base: &Path,
) -> anyhow::Result<BTreeMap<String, String>> {
    let mut images = BTreeMap::new();
    let mut store = None;
    for part in &app.parts {
        let PartKind::Component { image } = &part.kind else { continue };
        let Some(path) = image.strip_prefix("file://") else { continue };
        if images.contains_key(image) {
            continue;
        }
        let path = if Path::new(path).is_absolute() { PathBuf::from(path) } else { base.join(path) };
        let bytes =
            std::fs::read(&path).with_context(|| format!("component {}: cannot read {}", part.name, path.display()))?;
        if store.is_none() {
            store = Some(ferry_lattice::ComponentStore::open(nats, lattice).await?);
        }
        let Some(store) = &store else { continue };
        let reference = store.upload(&bytes).await?.to_string();
        eprintln!("uploaded {} ({} bytes) as {reference}", path.display(), bytes.len());
        images.insert(image.clone(), reference);
    }
    Ok(images)
}

/// Ask for the status until `done` says so or `timeout` passes; the last status either way.
async fn follow(
    ctx: &Ctx,
    name: &str,
    timeout: Duration,
    done: impl Fn(Option<&AppStatus>) -> bool,
) -> anyhow::Result<Outcome> {
    let started = Instant::now();
    loop {
        let reply = ctx
            .client
            .send(&AppStatusQuery { request_id: ctx.request_id.clone(), name: name.to_owned() }, None)
            .await?;
        // An application that is gone has no status: that is what undeploy waits for.
        let status = reply.data.clone().filter(|_| reply.success);
        if done(status.as_ref()) {
            let message = match &status {
                Some(s) => format!("application {name} version {} is deployed", s.version),
                None => format!("application {name} is undeployed"),
            };
            let table = status.as_ref().map(status_table);
            let outcome = Outcome::reply(CtlResponse { success: true, message, ..reply.into_json() });
            return Ok(match table {
                Some(table) => outcome.with_table(table),
                None => outcome,
            });
        }
        if started.elapsed() > timeout {
            let mut outcome = Outcome::reply(reply.into_json());
            outcome.code = EXIT_FAILED;
            outcome.message = format!(
                "application {name} did not get there within {timeout:?}: {}",
                status.map(|s| s.message).unwrap_or_default()
            );
            return Ok(outcome);
        }
        tokio::time::sleep(POLL).await;
    }
}

fn status_table(status: &AppStatus) -> Table {
    let mut table = Table::new(&["PART", "KIND", "ID", "WANT", "RUNNING", "READY", "MESSAGE"]);
    for part in &status.parts {
        let running: Vec<String> =
            part.running.iter().map(|(host, n)| format!("{}={n}", &host[..host.len().min(8)])).collect();
        table.row(vec![
            part.name.clone(),
            part.kind.clone(),
            part.id.clone(),
            part.desired.to_string(),
            running.join(","),
            if part.ready { "yes" } else { "no" }.into(),
            part.message.clone(),
        ]);
    }
    for link in &status.links {
        table.row(vec![
            link.name.clone(),
            "link".into(),
            format!("{} -> {} ({})", link.source_id, link.target_id, link.package),
            String::new(),
            String::new(),
            if link.ready { "yes" } else { "no" }.into(),
            link.message.clone(),
        ]);
    }
    table.row(vec![
        status.name.clone(),
        "app".into(),
        status.version.clone(),
        String::new(),
        String::new(),
        state_name(status.state).into(),
        status.message.clone(),
    ]);
    table
}

fn state_name(state: AppState) -> &'static str {
    match state {
        AppState::Undeployed => "undeployed",
        AppState::Reconciling => "reconciling",
        AppState::Deployed => "deployed",
        AppState::Failed => "failed",
        AppState::Undeploying => "undeploying",
    }
}
