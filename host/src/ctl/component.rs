//! `component.start|scale|update|stop|list`, over the host's components service.

use ferry_proto::ctl::{
    ComponentList, ComponentScale, ComponentScaled, ComponentStart, ComponentStarted, ComponentStop, ComponentStopped,
    ComponentUpdate, ComponentUpdated, CtlResponse, HostComponents,
};

use super::Services;

pub(super) async fn start(services: &Services, cmd: ComponentStart) -> CtlResponse<ComponentStarted> {
    match services.components.start(&cmd).await {
        Ok(started) => CtlResponse::ok(
            cmd.request_id,
            format!("component {} started on host {}", started.component.component_id, started.host_id),
            started,
        ),
        Err(err) => CtlResponse::fail(cmd.request_id, err.to_string()),
    }
}

pub(super) async fn scale(services: &Services, cmd: ComponentScale) -> CtlResponse<ComponentScaled> {
    match services.components.scale(&cmd).await {
        Ok(scaled) => CtlResponse::ok(
            cmd.request_id,
            format!(
                "component {} scaled from {} to {} on host {}",
                scaled.component_id, scaled.previous, scaled.max_instances, scaled.host_id
            ),
            scaled,
        ),
        Err(err) => CtlResponse::fail(cmd.request_id, err.to_string()),
    }
}

pub(super) async fn update(services: &Services, cmd: ComponentUpdate) -> CtlResponse<ComponentUpdated> {
    match services.components.update(&cmd).await {
        Ok(updated) => {
            let message = if updated.previous_digest == updated.component.digest {
                format!("component {} already runs {}", updated.component_id, updated.component.image)
            } else {
                format!(
                    "component {} updated from {} to {} on host {}",
                    updated.component_id, updated.previous_image, updated.component.image, updated.host_id
                )
            };
            CtlResponse::ok(cmd.request_id, message, updated)
        }
        Err(err) => CtlResponse::fail(cmd.request_id, err.to_string()),
    }
}

pub(super) async fn stop(services: &Services, cmd: ComponentStop) -> CtlResponse<ComponentStopped> {
    match services.components.stop(&cmd.request_id, &cmd.component_id).await {
        Ok(stopped) => CtlResponse::ok(cmd.request_id, format!("component {} stopped", stopped.component_id), stopped),
        Err(err) => CtlResponse::fail(cmd.request_id, err.to_string()),
    }
}

pub(super) async fn list(services: &Services, cmd: ComponentList) -> CtlResponse<HostComponents> {
    let host_id = services.identity.id.clone();
    let components = services.components.list();
    let message = format!("{} component(s) on host {host_id}", components.len());
    CtlResponse::ok(cmd.request_id, message, HostComponents { host_id, components })
}
