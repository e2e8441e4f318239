//! `host.ping|inventory|stop`, `label.put|del`, and this host's bids in
//! `component.auction|provider.auction`.

use ferry_proto::{
    ctl::{
        AuctionBid, ComponentAuction, CtlResponse, HostInfo, HostInventory, HostPing, HostStop, HostStopping,
        Inventory, LabelDel, LabelPut, Labels, ProviderAuction, satisfies,
    },
    event::{Event, LabelsChanged},
};

use super::Services;

fn info(services: &Services) -> HostInfo {
    services.identity.info(services.components.count(), services.providers.count())
}

pub(super) async fn ping(services: &Services, cmd: HostPing) -> CtlResponse<HostInfo> {
    let info = info(services);
    CtlResponse::ok(cmd.request_id, format!("host {} is up", info.host_id), info)
}

pub(super) async fn inventory(services: &Services, cmd: HostInventory) -> CtlResponse<Inventory> {
    let inventory = Inventory {
        host: info(services),
        components: services.components.list(),
        providers: services.providers.list(),
    };
    let message = format!(
        "host {}: {} component(s), {} provider(s)",
        inventory.host.host_id,
        inventory.components.len(),
        inventory.providers.len()
    );
    CtlResponse::ok(cmd.request_id, message, inventory)
}

pub(super) async fn stop(services: &Services, cmd: HostStop) -> CtlResponse<HostStopping> {
    let host_id = services.identity.id.clone();
    *services.stop_request_id.lock().unwrap_or_else(|p| p.into_inner()) = cmd.request_id.clone();
    services.stop_requested.cancel();
    CtlResponse::ok(
        cmd.request_id,
        format!("host {host_id} is stopping: in-flight calls finish first"),
        HostStopping { host_id },
    )
}

pub(super) async fn label_put(services: &Services, cmd: LabelPut) -> CtlResponse<Labels> {
    if let Err(err) = ferry_proto::subject::validate_id("label key", &cmd.key) {
        return CtlResponse::fail(cmd.request_id, err.to_string());
    }
    if cmd.value.len() > 256 || cmd.value.chars().any(char::is_control) {
        let message = format!("invalid value for label {}: at most 256 bytes, no control characters", cmd.key);
        return CtlResponse::fail(cmd.request_id, message);
    }
    let labels = services.identity.put_label(&cmd.key, &cmd.value);
    labels_changed(
        services,
        cmd.request_id,
        labels,
        format!("label {}={} set on host {}", cmd.key, cmd.value, services.identity.id),
    )
    .await
}

pub(super) async fn label_del(services: &Services, cmd: LabelDel) -> CtlResponse<Labels> {
    match services.identity.del_label(&cmd.key) {
        Some(labels) => {
            let message = format!("label {} removed from host {}", cmd.key, services.identity.id);
            labels_changed(services, cmd.request_id, labels, message).await
        }
        None => CtlResponse::fail(cmd.request_id, format!("host {} has no label {}", services.identity.id, cmd.key)),
    }
}

async fn labels_changed(
    services: &Services,
    request_id: String,
    labels: std::collections::BTreeMap<String, String>,
    message: String,
) -> CtlResponse<Labels> {
    let host_id = services.identity.id.clone();
    let event = LabelsChanged { request_id: request_id.clone(), host_id: host_id.clone(), labels: labels.clone() };
    services.events.emit(&Event::LabelsChanged(event)).await;
    CtlResponse::ok(request_id, message, Labels { host_id, labels })
}

/// A bid when this host carries the constraints and does not run the component yet.
pub(super) fn component_bid(services: &Services, cmd: ComponentAuction) -> Option<CtlResponse<AuctionBid>> {
    let labels = services.identity.labels();
    let runs = services.components.list().iter().any(|c| c.component_id == cmd.component_id);
    (!runs && satisfies(&labels, &cmd.constraints)).then(|| bid_reply(services, cmd.request_id, labels))
}

/// A bid when this host carries the constraints, may start providers, and does not supervise
/// this one yet.
pub(super) fn provider_bid(services: &Services, cmd: ProviderAuction) -> Option<CtlResponse<AuctionBid>> {
    let labels = services.identity.labels();
    let runs = services.providers.list().iter().any(|p| p.provider_id == cmd.provider_id);
    (!runs && services.providers.can_start() && satisfies(&labels, &cmd.constraints))
        .then(|| bid_reply(services, cmd.request_id, labels))
}

fn bid_reply(
    services: &Services,
    request_id: String,
    labels: std::collections::BTreeMap<String, String>,
) -> CtlResponse<AuctionBid> {
    let host_id = services.identity.id.clone();
    CtlResponse::ok(request_id, format!("host {host_id} bids"), AuctionBid { host_id, labels })
}
