//! `provider.start|stop`, over the host's provider supervisor.

use ferry_proto::ctl::{CtlResponse, ProviderStart, ProviderStarted, ProviderStop, ProviderStopped};

use super::Services;

pub(super) async fn start(services: &Services, cmd: ProviderStart) -> CtlResponse<ProviderStarted> {
    match services.providers.start(&cmd).await {
        Ok(provider) => {
            let host_id = services.identity.id.clone();
            let message = format!("provider {} started on host {host_id}", provider.provider_id);
            CtlResponse::ok(cmd.request_id, message, ProviderStarted { host_id, provider })
        }
        Err(err) => CtlResponse::fail(cmd.request_id, err.to_string()),
    }
}

pub(super) async fn stop(services: &Services, cmd: ProviderStop) -> CtlResponse<ProviderStopped> {
    match services.providers.stop(&cmd.request_id, &cmd.provider_id).await {
        Ok(()) => {
            let host_id = services.identity.id.clone();
            let message = format!("provider {} stopped on host {host_id}", cmd.provider_id);
            CtlResponse::ok(cmd.request_id, message, ProviderStopped { host_id, provider_id: cmd.provider_id })
        }
        Err(err) => CtlResponse::fail(cmd.request_id, err.to_string()),
    }
}
