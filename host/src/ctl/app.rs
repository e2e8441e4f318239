//! `app.deploy|undeploy|list|status|history`, over the lattice's application store. The
//! reconciler, not the handling host, places what a deploy asks for.

use ferry_proto::ctl::{
    AppDeploy, AppDeployed, AppHistory, AppList, AppStatus, AppStatusQuery, AppSummary, AppUndeploy, AppUndeployed,
    AppVersionInfo, CtlResponse,
};

use ferry_proto::event::{AppChanged, Event};

use super::Services;

pub(super) async fn deploy(services: &Services, cmd: AppDeploy) -> CtlResponse<AppDeployed> {
    match services.apps.deploy(&cmd).await {
        Ok(done) => {
            let changed = AppChanged {
                request_id: cmd.request_id.clone(),
                name: done.name.clone(),
                version: done.version.clone(),
            };
            services.events.emit(&Event::AppDeployed(changed)).await;
            let what = if done.new_version { "stored and deployed" } else { "deployed (already stored)" };
            let message = format!("application {} version {} {what}", done.name, done.version);
            CtlResponse::ok(cmd.request_id, message, done)
        }
        Err(err) => CtlResponse::fail(cmd.request_id, err),
    }
}

pub(super) async fn undeploy(services: &Services, cmd: AppUndeploy) -> CtlResponse<AppUndeployed> {
    match services.apps.undeploy(&cmd.name, &cmd.request_id).await {
        Ok(done) => {
            let changed = AppChanged {
                request_id: cmd.request_id.clone(),
                name: done.name.clone(),
                version: done.version.clone(),
            };
            services.events.emit(&Event::AppUndeployed(changed)).await;
            let message = format!("application {} is being undeployed", done.name);
            CtlResponse::ok(cmd.request_id, message, done)
        }
        Err(err) => CtlResponse::fail(cmd.request_id, err),
    }
}

pub(super) async fn list(services: &Services, cmd: AppList) -> CtlResponse<Vec<AppSummary>> {
    match services.apps.list().await {
        Ok(apps) => CtlResponse::ok(cmd.request_id, format!("{} applications", apps.len()), apps),
        Err(err) => CtlResponse::fail(cmd.request_id, err),
    }
}

pub(super) async fn status(services: &Services, cmd: AppStatusQuery) -> CtlResponse<AppStatus> {
    let deployment = match services.apps.deployment(&cmd.name).await {
        Ok(deployment) => deployment,
        Err(err) => return CtlResponse::fail(cmd.request_id, err),
    };
    let report = match services.apps.status(&cmd.name).await {
        Ok(report) => report,
        Err(err) => return CtlResponse::fail(cmd.request_id, err),
    };
    let Some(deployment) = deployment else {
        return match services.apps.versions(&cmd.name).await {
            Ok(versions) if !versions.is_empty() => {
                CtlResponse::fail(cmd.request_id, format!("application {} is not deployed", cmd.name))
            }
            Ok(_) => CtlResponse::fail(cmd.request_id, format!("no application named {}", cmd.name)),
            Err(err) => CtlResponse::fail(cmd.request_id, err),
        };
    };
    let (state, message) = crate::app::summary_state(Some(&deployment), report.as_ref());
    let mut status = report.filter(|r| r.version == deployment.version).unwrap_or_else(|| AppStatus {
        name: cmd.name.clone(),
        version: deployment.version.clone(),
        state,
        message: message.clone(),
        reconciler: String::new(),
        updated_at_ms: 0,
        parts: Vec::new(),
        links: Vec::new(),
    });
    status.state = state;
    status.message = message;
    CtlResponse::ok(cmd.request_id, format!("application {} is {:?}", cmd.name, state).to_lowercase(), status)
}

pub(super) async fn history(services: &Services, cmd: AppHistory) -> CtlResponse<Vec<AppVersionInfo>> {
    match services.apps.history(&cmd.name).await {
        Ok(versions) => CtlResponse::ok(cmd.request_id, format!("{} versions", versions.len()), versions),
        Err(err) => CtlResponse::fail(cmd.request_id, err),
    }
}
