//! Commands about hosts: ping, inventory, stop, labels.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `host.ping`: every host answers with who it is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostPing {
    /// Echoed in the reply.
    #[serde(default)]
    pub request_id: String,
}

/// Who a host is and how busy: the answer to `host.ping`, small enough for every host to send.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostInfo {
    /// The host id (`N…`).
    pub host_id: String,
    /// The lattice.
    pub lattice: String,
    /// The host's labels.
    pub labels: BTreeMap<String, String>,
    /// The host's version (`ferry-host` crate version).
    pub version: String,
    /// Seconds since the host started.
    pub uptime_seconds: u64,
    /// Components it runs.
    pub components: u32,
    /// Providers it manages.
    pub providers: u32,
    /// Whether it starts providers (it allows a directory of binaries): where the reconciler
    /// may place them.
    #[serde(default)]
    pub starts_providers: bool,
}

/// `host.inventory`: what a host runs, in full.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostInventory {
    /// Echoed in the reply.
    #[serde(default)]
    pub request_id: String,
}

/// A host's inventory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inventory {
    /// The host.
    pub host: HostInfo,
    /// Its components.
    pub components: Vec<super::ComponentDescription>,
    /// The providers it supervises.
    #[serde(default)]
    pub providers: Vec<super::ProviderDescription>,
}

/// `host.stop`: stop serving, letting in-flight calls finish first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostStop {
    /// Echoed in the reply and in `host_stopped`.
    #[serde(default)]
    pub request_id: String,
}

/// The answer to `host.stop`: the host is draining and will stop.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostStopping {
    /// The host.
    pub host_id: String,
}

/// `label.put`: set one label on a host.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabelPut {
    /// Echoed in the reply and in `labels_changed`.
    #[serde(default)]
    pub request_id: String,
    /// The label's key.
    pub key: String,
    /// Its value.
    pub value: String,
}

/// `label.del`: remove one label from a host.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabelDel {
    /// Echoed in the reply and in `labels_changed`.
    #[serde(default)]
    pub request_id: String,
    /// The label's key.
    pub key: String,
}

/// A host's labels after a change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Labels {
    /// The host.
    pub host_id: String,
    /// All its labels now.
    pub labels: BTreeMap<String, String>,
}
