//! Events: CloudEvents 1.0 in JSON on `ferry.evt.{lattice}.{event}`.
//!
//! Every event is one variant of [`Event`], with typed data; [`CloudEvent::from_event`] wraps
//! one for the wire and [`CloudEvent::event`] reads one back. Each event that a command causes
//! carries the command's request id.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{ProtoError, ctl::SideAnswer, link::Link, time};

/// Defines [`Event`] and its names from one table.
macro_rules! events {
    ($($variant:ident($data:ty) => $name:literal;)*) => {
        /// Every state change the lattice announces.
        #[derive(Debug, Clone, PartialEq, Eq)]
        #[non_exhaustive]
        pub enum Event {
            $(
                #[doc = concat!("`", $name, "`")]
                $variant($data),
            )*
        }

        impl Event {
            /// Every event name.
            pub const NAMES: &'static [&'static str] = &[$($name),*];

            /// The event's name (`link_set`): its subject's last token, and `ferry.{name}` its
            /// CloudEvents type.
            pub fn name(&self) -> &'static str {
                match self { $(Event::$variant(_) => $name,)* }
            }

            /// The event's data as JSON.
            ///
            /// # Errors
            /// [`ProtoError::Json`] if the data cannot be encoded.
            pub fn data(&self) -> Result<serde_json::Value, ProtoError> {
                Ok(match self { $(Event::$variant(data) => serde_json::to_value(data)?,)* })
            }

            /// The event named `name` with `data`.
            ///
            /// # Errors
            /// [`ProtoError::Json`] for data that does not fit the event, or an unknown name.
            pub fn from_parts(name: &str, data: serde_json::Value) -> Result<Self, ProtoError> {
                match name {
                    $($name => Ok(Event::$variant(serde_json::from_value(data)?)),)*
                    other => Err(ProtoError::Json(serde::de::Error::custom(format!("unknown event {other:?}")))),
                }
            }
        }
    };
}

events! {
    HostStarted(HostStarted) => "host_started";
    HostStopped(HostStopped) => "host_stopped";
    HostHeartbeat(crate::ctl::HostInfo) => "host_heartbeat";
    LabelsChanged(LabelsChanged) => "labels_changed";
    ComponentScaled(ComponentScaled) => "component_scaled";
    ComponentScaleFailed(ComponentScaleFailed) => "component_scale_failed";
    ComponentUpdated(ComponentUpdated) => "component_updated";
    ProviderStarted(ProviderStarted) => "provider_started";
    ProviderStopped(ProviderStopped) => "provider_stopped";
    ProviderStartFailed(ProviderStartFailed) => "provider_start_failed";
    LinkSet(LinkChanged) => "link_set";
    LinkSetFailed(LinkChanged) => "link_set_failed";
    LinkDeleted(LinkChanged) => "link_deleted";
    ConfigSet(ConfigChanged) => "config_set";
    ConfigDeleted(ConfigChanged) => "config_deleted";
    HealthCheckPassed(ProviderHealth) => "health_check_passed";
    HealthCheckFailed(ProviderHealth) => "health_check_failed";
    HealthCheckStatus(ProviderHealth) => "health_check_status";
    AppDeployed(AppChanged) => "app_deployed";
    AppUndeployed(AppChanged) => "app_undeployed";
    AppStatusChanged(AppStatusChanged) => "app_status_changed";
    PolicyDenied(PolicyDenied) => "policy_denied";
}

impl Event {
    /// The request id of the command that caused the event; empty for events no command
    /// caused (a host started by its operator).
    pub fn request_id(&self) -> &str {
        match self {
            Event::HostStarted(_) | Event::HostHeartbeat(_) => "",
            Event::HealthCheckPassed(_) | Event::HealthCheckFailed(_) | Event::HealthCheckStatus(_) => "",
            Event::HostStopped(e) => &e.request_id,
            Event::LabelsChanged(e) => &e.request_id,
            Event::ComponentScaled(e) => &e.request_id,
            Event::ComponentScaleFailed(e) => &e.request_id,
            Event::ComponentUpdated(e) => &e.request_id,
            Event::ProviderStarted(e) => &e.request_id,
            Event::ProviderStopped(e) => &e.request_id,
            Event::ProviderStartFailed(e) => &e.request_id,
            Event::LinkSet(e) | Event::LinkSetFailed(e) | Event::LinkDeleted(e) => &e.request_id,
            Event::ConfigSet(e) | Event::ConfigDeleted(e) => &e.request_id,
            Event::AppDeployed(e) | Event::AppUndeployed(e) => &e.request_id,
            Event::AppStatusChanged(e) => &e.request_id,
            Event::PolicyDenied(e) => &e.request_id,
        }
    }
}

/// `host_started`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostStarted {
    /// The host.
    pub host_id: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its version.
    pub version: String,
}

/// `host_stopped`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostStopped {
    /// The `host.stop` that stopped it; empty when a signal did.
    #[serde(default)]
    pub request_id: String,
    /// The host.
    pub host_id: String,
}

/// `labels_changed`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabelsChanged {
    /// The command.
    #[serde(default)]
    pub request_id: String,
    /// The host.
    pub host_id: String,
    /// All its labels now.
    pub labels: BTreeMap<String, String>,
}

/// `component_scaled`: a component now runs with up to `max_instances` instances on a host
/// (0: it stopped there).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComponentScaled {
    /// The command.
    #[serde(default)]
    pub request_id: String,
    /// The host.
    pub host_id: String,
    /// The component.
    pub component_id: String,
    /// Where it was loaded from.
    pub image: String,
    /// SHA-256 of its bytes, hex.
    pub digest: String,
    /// The bound now.
    pub max_instances: u32,
}

/// `component_scale_failed`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComponentScaleFailed {
    /// The command.
    #[serde(default)]
    pub request_id: String,
    /// The host.
    pub host_id: String,
    /// The component.
    pub component_id: String,
    /// What it was to run.
    pub image: String,
    /// The bound asked for.
    pub max_instances: u32,
    /// Why it failed.
    pub error: String,
}

/// `policy_denied`: a host refused a component its claims do not admit (at start or update), or
/// a call its claims do not grant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyDenied {
    /// The command refused; empty for a refused call.
    #[serde(default)]
    pub request_id: String,
    /// The host.
    pub host_id: String,
    /// The component.
    pub component_id: String,
    /// Why, machine-readable: a [`crate::claims::ClaimsError::reason`], or `capability` for a
    /// call the claims do not grant.
    pub reason: String,
    /// For a refused call, the interface called (`wasi:blobstore/blobstore`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capability: Option<String>,
    /// Why, for people.
    pub message: String,
}

/// `component_updated`: a new version of a component runs on a host in place of the old one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComponentUpdated {
    /// The command.
    #[serde(default)]
    pub request_id: String,
    /// The host.
    pub host_id: String,
    /// The component.
    pub component_id: String,
    /// The new version's reference.
    pub image: String,
    /// SHA-256 of the new version's bytes, hex.
    pub digest: String,
    /// The digest it ran before.
    pub previous_digest: String,
}

/// `health_check_passed` / `health_check_failed` (a provider's health changed, as one host
/// sees it) and `health_check_status` (the same, periodically, changed or not).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderHealth {
    /// The host that checked.
    pub host_id: String,
    /// The provider.
    pub provider_id: String,
    /// Whether it answered healthy within the timeout.
    pub healthy: bool,
    /// What it said, or why the check failed.
    pub message: String,
    /// Checks failed in a row (0 when healthy).
    pub failures: u32,
}

/// `provider_started`: a supervised provider's process started (first start or restart).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderStarted {
    /// The `provider.start` that asked for it.
    #[serde(default)]
    pub request_id: String,
    /// The supervising host.
    pub host_id: String,
    /// The provider.
    pub provider_id: String,
    /// Its process id.
    pub pid: u32,
    /// Restarts before this start.
    pub restarts: u32,
}

/// `provider_stopped`: a supervised provider's process ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderStopped {
    /// The `provider.start` (for a crash) or `provider.stop` (for a stop) it belongs to.
    #[serde(default)]
    pub request_id: String,
    /// The supervising host.
    pub host_id: String,
    /// The provider.
    pub provider_id: String,
    /// How it ended: `stopped` (asked to), `exited: …` or `killed: …` (a crash).
    pub reason: String,
    /// Whether the host will start it again.
    pub restarting: bool,
}

/// `provider_start_failed`: a supervised provider could not be started at all.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderStartFailed {
    /// The `provider.start`.
    #[serde(default)]
    pub request_id: String,
    /// The host.
    pub host_id: String,
    /// The provider.
    pub provider_id: String,
    /// Why.
    pub error: String,
}

/// `link_set`, `link_set_failed`, `link_deleted`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkChanged {
    /// The command.
    #[serde(default)]
    pub request_id: String,
    /// The link.
    pub link: Link,
    /// The bucket revision of the put or delete.
    pub revision: u64,
    /// Each side's answer.
    pub providers: Vec<SideAnswer>,
}

/// `config_set`, `config_deleted`: never the values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigChanged {
    /// The command.
    #[serde(default)]
    pub request_id: String,
    /// Config name.
    pub name: String,
    /// The bucket revision of the put or delete.
    pub revision: u64,
}

/// `app_deployed` / `app_undeployed`: a deploy or undeploy command took effect (the reconciler
/// then does the placing or removing).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppChanged {
    /// The command.
    #[serde(default)]
    pub request_id: String,
    /// The application.
    pub name: String,
    /// Its version.
    pub version: String,
}

/// `app_status_changed`: the reconciler found an application in a new state (or with a new
/// reason), including `undeployed` once an undeploy has removed everything.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppStatusChanged {
    /// The deploy or undeploy whose work this is.
    #[serde(default)]
    pub request_id: String,
    /// The application.
    pub name: String,
    /// Its version.
    pub version: String,
    /// The state now.
    pub state: crate::ctl::AppState,
    /// Why, when not deployed.
    pub message: String,
}

/// A CloudEvents 1.0 envelope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CloudEvent {
    /// Always `1.0`.
    pub specversion: String,
    /// Unique event id.
    pub id: String,
    /// The emitting host or provider id.
    pub source: String,
    /// `ferry.<event_name>`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// RFC 3339 time of emission.
    pub time: String,
    /// Always `application/json`.
    pub datacontenttype: String,
    /// The event's data.
    pub data: serde_json::Value,
}

impl CloudEvent {
    /// `event` from `source`, ready to publish.
    ///
    /// # Errors
    /// [`ProtoError::Json`] if the data cannot be encoded.
    pub fn from_event(source: impl Into<String>, event: &Event) -> Result<Self, ProtoError> {
        Ok(Self::new(source, event.name(), event.data()?))
    }

    /// The typed event this envelope carries.
    ///
    /// # Errors
    /// [`ProtoError::Json`] for a type that is not `ferry.{name}` of a known event, or data
    /// that does not fit it.
    pub fn event(&self) -> Result<Event, ProtoError> {
        let name = self.event_type.strip_prefix("ferry.").ok_or_else(|| {
            ProtoError::Json(serde::de::Error::custom(format!("not a Ferry event type: {:?}", self.event_type)))
        })?;
        Event::from_parts(name, self.data.clone())
    }

    /// A new event named `name` (`link_set`) from `source`.
    fn new(source: impl Into<String>, name: &str, data: serde_json::Value) -> Self {
        Self {
            specversion: "1.0".into(),
            id: uuid::Uuid::new_v4().to_string(),
            source: source.into(),
            event_type: format!("ferry.{name}"),
            time: time::rfc3339(time::now_ms()),
            datacontenttype: "application/json".into(),
            data,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_carry_the_cloudevents_fields_and_read_back() {
        let event = Event::ConfigSet(ConfigChanged { request_id: "r".into(), name: "db".into(), revision: 7 });
        let ev = CloudEvent::from_event("NHOST", &event).unwrap();
        let json: serde_json::Value = serde_json::to_value(&ev).unwrap();
        assert_eq!(json["specversion"], "1.0");
        assert_eq!(json["type"], "ferry.config_set");
        assert_eq!(json["datacontenttype"], "application/json");
        assert_eq!(json["data"]["request_id"], "r");
        let back: CloudEvent = serde_json::from_value(json).unwrap();
        assert_eq!(back, ev);
        assert_eq!(back.event().unwrap(), event);
        assert_eq!(event.request_id(), "r");
        assert!(Event::from_parts("explosion", serde_json::json!({})).is_err());
    }

    #[test]
    fn each_event_name_is_a_valid_subject_token_and_unique() {
        let mut names = Event::NAMES.to_vec();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Event::NAMES.len());
        for name in Event::NAMES {
            crate::subject::event("prod", name).unwrap();
        }
    }
}
