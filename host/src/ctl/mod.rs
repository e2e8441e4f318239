//! The control interface: JSON commands on `ferry.ctl.v1.{lattice}.{resource}.{verb}[.{host}]`,
//! translated into calls on the host's services. Commands of lattice state go to one host of
//! a queue group, queries and auctions to every host, and a host id in the subject addresses
//! one host (a host refuses a command addressed to another). A router here and a file per
//! resource; no lifecycle lives in this module.

mod app;
mod auth;
mod component;
mod host;
mod link;
mod provider;

use std::sync::Arc;

use ferry_proto::{
    ctl::{Command, CommandKind, CtlResponse, Scope, decode_command},
    subject,
};
use futures::StreamExt as _;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

pub(crate) use self::auth::CommandAuth;
use crate::{
    HostError, components::Components, events::Events, identity::Identity, links::Links, supervisor::Supervisor,
};

/// Queue group shared by every host for commands one host of the lattice answers.
const CTL_QUEUE: &str = "ferry-ctl";

/// What the control interface drives.
pub(crate) struct Services {
    pub(crate) identity: Arc<Identity>,
    pub(crate) components: Arc<Components>,
    pub(crate) providers: Arc<Supervisor>,
    pub(crate) links: Links,
    /// The lattice's applications.
    pub(crate) apps: crate::app::AppStore,
    pub(crate) events: Events,
    /// The operators this host obeys.
    pub(crate) auth: CommandAuth,
    /// Cancelled by `host.stop`: the host then stops as on a signal.
    pub(crate) stop_requested: CancellationToken,
    /// The request id of the `host.stop` that stopped the host.
    pub(crate) stop_request_id: std::sync::Mutex<String>,
}

/// Subscribe to the control subjects and handle commands until `stop`.
pub(crate) async fn serve(
    nats: async_nats::Client,
    services: Arc<Services>,
    stop: CancellationToken,
) -> Result<tokio::task::JoinHandle<()>, HostError> {
    let lattice = services.identity.lattice.clone();
    let mut subscriptions =
        vec![nats.subscribe(subject::ctl_for_host(&lattice, &services.identity.id)?).await.map_err(HostError::nats)?];
    for kind in CommandKind::ALL {
        let subject = subject::ctl(&lattice, kind.resource(), kind.verb(), None)?;
        let sub = match kind.scope() {
            Scope::AnyHost => nats.queue_subscribe(subject, CTL_QUEUE.to_owned()).await,
            Scope::EveryHost => nats.subscribe(subject).await,
            Scope::OneHost => continue,
        };
        subscriptions.push(sub.map_err(HostError::nats)?);
    }
    ferry_lattice::nats::sync_subscriptions(&nats).await.map_err(HostError::nats)?;
    let mut messages = futures::stream::select_all(subscriptions);
    Ok(tokio::spawn(async move {
        loop {
            let msg = tokio::select! {
                () = stop.cancelled() => break,
                msg = messages.next() => match msg { Some(msg) => msg, None => break },
            };
            let (services, nats) = (services.clone(), nats.clone());
            // Each command runs on its own task: a slow component compile never blocks a link
            // or config command.
            tokio::spawn(async move {
                let response = match authorize(&services, &msg).await {
                    Ok(()) => route(&services, msg.subject.as_str(), &msg.payload).await,
                    Err(reason) => {
                        warn!(subject = %msg.subject, %reason, "refused a control command");
                        Some(CtlResponse::fail(request_id_of(&msg.payload), reason))
                    }
                };
                // A host that does not bid in an auction stays silent.
                let Some(response) = response else { return };
                if response.success {
                    debug!(subject = %msg.subject, request_id = %response.request_id, "control command done");
                } else {
                    warn!(subject = %msg.subject, request_id = %response.request_id, message = %response.message, "control command failed");
                }
                if let Some(reply) = msg.reply {
                    match serde_json::to_vec(&response) {
                        Ok(bytes) => {
                            if let Err(err) = nats.publish(reply, bytes.into()).await {
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

/// Check the command's operator signature (when this host requires one).
async fn authorize(services: &Services, msg: &async_nats::Message) -> Result<(), String> {
    let identity = &services.identity;
    // What is not a known command is refused by the router and changes nothing either way.
    let Some(kind) = subject::parse_ctl(&identity.lattice, msg.subject.as_str())
        .and_then(|(resource, verb, _)| CommandKind::parse(resource, verb))
    else {
        return Ok(());
    };
    services.auth.check(kind, msg.subject.as_str(), msg.headers.as_ref(), &msg.payload).await
}

/// The request id a command body carries, for replies to commands refused before decoding.
fn request_id_of(payload: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct RequestId {
        #[serde(default)]
        request_id: String,
    }
    serde_json::from_slice::<RequestId>(payload).map(|r| r.request_id).unwrap_or_default()
}

/// Run the command on `subject`; `None` when this host has nothing to say (no bid).
async fn route(services: &Services, subject: &str, payload: &[u8]) -> Option<CtlResponse> {
    let identity = &services.identity;
    let Some((resource, verb, target_host)) = subject::parse_ctl(&identity.lattice, subject) else {
        return Some(CtlResponse::fail("", format!("not a control subject: {subject}")));
    };
    if let Some(target) = target_host
        && target != identity.id
    {
        return Some(CtlResponse::fail("", format!("command for host {target} reached host {}", identity.id)));
    }
    let Some(kind) = CommandKind::parse(resource, verb) else {
        return Some(CtlResponse::fail("", format!("unknown command {resource}.{verb}")));
    };
    if let CommandKind::ComponentAuction | CommandKind::ProviderAuction = kind {
        return match kind {
            CommandKind::ComponentAuction => bid(payload, |cmd| host::component_bid(services, cmd)),
            _ => bid(payload, |cmd| host::provider_bid(services, cmd)),
        };
    }
    let response = match kind {
        CommandKind::HostPing => handle(payload, |cmd| host::ping(services, cmd)).await,
        CommandKind::HostInventory => handle(payload, |cmd| host::inventory(services, cmd)).await,
        CommandKind::HostStop => handle(payload, |cmd| host::stop(services, cmd)).await,
        CommandKind::LabelPut => handle(payload, |cmd| host::label_put(services, cmd)).await,
        CommandKind::LabelDel => handle(payload, |cmd| host::label_del(services, cmd)).await,
        CommandKind::ComponentStart => handle(payload, |cmd| component::start(services, cmd)).await,
        CommandKind::ComponentScale => handle(payload, |cmd| component::scale(services, cmd)).await,
        CommandKind::ComponentUpdate => handle(payload, |cmd| component::update(services, cmd)).await,
        CommandKind::ComponentStop => handle(payload, |cmd| component::stop(services, cmd)).await,
        CommandKind::ComponentList => handle(payload, |cmd| component::list(services, cmd)).await,
        CommandKind::ProviderStart => handle(payload, |cmd| provider::start(services, cmd)).await,
        CommandKind::ProviderStop => handle(payload, |cmd| provider::stop(services, cmd)).await,
        CommandKind::LinkPut => handle(payload, |cmd| link::put(services, cmd)).await,
        CommandKind::LinkDel => handle(payload, |cmd| link::del(services, cmd)).await,
        CommandKind::LinkGet => handle(payload, |cmd| link::get(services, cmd)).await,
        CommandKind::ConfigPut => handle(payload, |cmd| link::config_put(services, cmd)).await,
        CommandKind::ConfigGet => handle(payload, |cmd| link::config_get(services, cmd)).await,
        CommandKind::ConfigDel => handle(payload, |cmd| link::config_del(services, cmd)).await,
        CommandKind::AppDeploy => handle(payload, |cmd| app::deploy(services, cmd)).await,
        CommandKind::AppUndeploy => handle(payload, |cmd| app::undeploy(services, cmd)).await,
        CommandKind::AppList => handle(payload, |cmd| app::list(services, cmd)).await,
        CommandKind::AppStatus => handle(payload, |cmd| app::status(services, cmd)).await,
        CommandKind::AppHistory => handle(payload, |cmd| app::history(services, cmd)).await,
        CommandKind::ComponentAuction | CommandKind::ProviderAuction => return None,
    };
    Some(response)
}

/// Decode an auction and answer with this host's bid, or stay silent; malformed input still
/// gets its error.
fn bid<C: Command>(payload: &[u8], bid: impl FnOnce(C) -> Option<CtlResponse<C::Reply>>) -> Option<CtlResponse> {
    match decode_command::<C>(payload) {
        Ok(cmd) => bid(cmd).map(CtlResponse::into_json),
        Err(message) => Some(CtlResponse::fail("", message)),
    }
}

/// Decode the command (or answer with what is wrong with it), run its handler, and reply with
/// the handler's typed result as JSON.
async fn handle<C: Command, F: Future<Output = CtlResponse<C::Reply>>>(
    payload: &[u8],
    handler: impl FnOnce(C) -> F,
) -> CtlResponse {
    match decode_command::<C>(payload) {
        Ok(cmd) => handler(cmd).await.into_json(),
        Err(message) => CtlResponse::fail("", message),
    }
}
