//! The control interface: JSON commands on `ferry.ctl.v1.{lattice}.{resource}.{verb}[.{host}]`.
//! Commands without a host id go to one host of the queue group; a host id addresses one host.
//! Each resource has its own file.

mod component;
mod config;
mod link;

use std::sync::Arc;

use ferry_proto::{ctl::CtlResponse, subject};
use futures::StreamExt as _;
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::{HostError, host::HostInner};

/// Queue group shared by every host for commands that name no host.
const CTL_QUEUE: &str = "ferry-ctl";

/// Subscribe to the control subjects and handle commands until `stop`.
pub(crate) async fn serve(
    host: Arc<HostInner>,
    stop: CancellationToken,
) -> Result<tokio::task::JoinHandle<()>, HostError> {
    let lattice = host.identity.lattice.clone();
    let shared = host
        .nats
        .queue_subscribe(subject::ctl_shared(&lattice)?, CTL_QUEUE.to_owned())
        .await
        .map_err(HostError::nats)?;
    let mine =
        host.nats.subscribe(subject::ctl_for_host(&lattice, &host.identity.id)?).await.map_err(HostError::nats)?;
    ferry_lattice::nats::sync_subscriptions(&host.nats).await.map_err(HostError::nats)?;
    let mut messages = futures::stream::select(shared, mine);
    Ok(tokio::spawn(async move {
        loop {
            let msg = tokio::select! {
                () = stop.cancelled() => break,
                msg = messages.next() => match msg { Some(msg) => msg, None => break },
            };
            let host = host.clone();
            // Each command runs on its own task: a slow component compile never blocks a link
            // or config command.
            tokio::spawn(async move {
                let response = route(&host, msg.subject.as_str(), &msg.payload).await;
                if !response.success {
                    warn!(subject = %msg.subject, request_id = %response.request_id, message = %response.message, "control command failed");
                } else {
                    debug!(subject = %msg.subject, request_id = %response.request_id, "control command done");
                }
                if let Some(reply) = msg.reply {
                    match serde_json::to_vec(&response) {
                        Ok(bytes) => {
                            if let Err(err) = host.nats.publish(reply, bytes.into()).await {
                                warn!(cause = %err, "failed to send control reply");
                            }
                        }
                        Err(err) => warn!(cause = %err, "failed to encode control reply"),
                    }
                }
            });
        }
    }))
}

async fn route(host: &HostInner, subject: &str, payload: &[u8]) -> CtlResponse {
    let Some((resource, verb, target_host)) = subject::parse_ctl(&host.identity.lattice, subject) else {
        return CtlResponse::fail("", format!("not a control subject: {subject}"));
    };
    if let Some(target) = target_host
        && target != host.identity.id
    {
        return CtlResponse::fail("", format!("command for host {target} reached host {}", host.identity.id));
    }
    match (resource, verb) {
        ("component", "start") => with(payload, |cmd| component::start(host, cmd)).await,
        ("component", "stop") => with(payload, |cmd| component::stop(host, cmd)).await,
        ("component", "list") => component::list(host),
        ("link", "put") => with(payload, |cmd| link::put(host, cmd)).await,
        ("link", "del") => with(payload, |cmd| link::del(host, cmd)).await,
        ("link", "get") => with(payload, |cmd| link::get(host, cmd)).await,
        ("config", "put") => with(payload, |cmd| config::put(host, cmd)).await,
        ("config", "get") => with(payload, |cmd| config::get(host, cmd)).await,
        ("config", "del") => with(payload, |cmd| config::del(host, cmd)).await,
        _ => CtlResponse::fail("", format!("unknown command {resource}.{verb}")),
    }
}

/// Decode the command, or answer with what is wrong with it.
async fn with<T: DeserializeOwned, F: Future<Output = CtlResponse>>(
    payload: &[u8],
    handler: impl FnOnce(T) -> F,
) -> CtlResponse {
    match serde_json::from_slice::<T>(payload) {
        Ok(cmd) => handler(cmd).await,
        Err(err) => CtlResponse::fail("", format!("malformed command: {err}")),
    }
}
