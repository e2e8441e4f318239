//! `config.put|get|del`. Values never appear in events or logs. A changed or deleted config
//! reaches the providers whose links use it, as a link put with the values now in force.

use ferry_proto::ctl::{ConfigNameCommand, ConfigPutCommand, CtlResponse};

use crate::host::HostInner;

pub(super) async fn put(host: &HostInner, cmd: ConfigPutCommand) -> CtlResponse {
    if let Err(err) = ferry_proto::subject::validate_id("config name", &cmd.name) {
        return CtlResponse::fail(cmd.request_id, err.to_string());
    }
    let revision = match host.view.bucket().put_config(&cmd.name, &cmd.values).await {
        Ok(revision) => revision,
        Err(err) => return CtlResponse::fail(cmd.request_id, format!("failed to store config {}: {err}", cmd.name)),
    };
    host.view.record_config(&cmd.name, Some(cmd.values.clone()), revision);
    host.events
        .emit("config_set", serde_json::json!({ "request_id": cmd.request_id, "name": cmd.name, "revision": revision }))
        .await;
    let refreshed = refresh_links(host, &cmd.name).await;
    CtlResponse::ok(
        cmd.request_id,
        format!("config {} stored at revision {revision}; {} link(s) refreshed", cmd.name, refreshed.len()),
        serde_json::json!({ "revision": revision, "links": refreshed }),
    )
}

pub(super) async fn get(host: &HostInner, cmd: ConfigNameCommand) -> CtlResponse {
    match host.view.bucket().config(&cmd.name).await {
        Ok(Some(values)) => CtlResponse::ok(cmd.request_id, format!("config {}", cmd.name), serde_json::json!(values)),
        Ok(None) => CtlResponse::fail(cmd.request_id, format!("no config named {}", cmd.name)),
        Err(err) => CtlResponse::fail(cmd.request_id, format!("failed to read config {}: {err}", cmd.name)),
    }
}

pub(super) async fn del(host: &HostInner, cmd: ConfigNameCommand) -> CtlResponse {
    match host.view.bucket().del_config(&cmd.name).await {
        Ok(Some(revision)) => {
            host.view.record_config(&cmd.name, None, revision);
            host.events
                .emit(
                    "config_deleted",
                    serde_json::json!({ "request_id": cmd.request_id, "name": cmd.name, "revision": revision }),
                )
                .await;
            let refreshed = refresh_links(host, &cmd.name).await;
            CtlResponse::ok(
                cmd.request_id,
                format!("config {} deleted at revision {revision}; {} link(s) refreshed", cmd.name, refreshed.len()),
                serde_json::json!({ "revision": revision, "links": refreshed }),
            )
        }
        Ok(None) => CtlResponse::fail(cmd.request_id, format!("no config named {}", cmd.name)),
        Err(err) => CtlResponse::fail(cmd.request_id, format!("failed to delete config {}: {err}", cmd.name)),
    }
}

/// Offer every link that names config `name` again, resolved with the config as it is now.
async fn refresh_links(host: &HostInner, name: &str) -> Vec<serde_json::Value> {
    let mut refreshed = Vec::new();
    for link in host.view.links_using_config(name) {
        let outcome = super::link::notify_put(host, &link).await;
        refreshed.push(serde_json::json!({ "source_id": link.source_id, "target_id": link.target_id, "name": link.name, "accepted": outcome.accepted }));
    }
    refreshed
}
