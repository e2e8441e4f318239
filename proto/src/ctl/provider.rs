//! Commands about providers a host starts and supervises: start, stop.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `provider.start`: start a provider binary as a child of the host, which hands it its
/// start-up data on stdin, restarts it with backoff when it crashes and stops it with the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderStart {
    /// Echoed in the reply and in the events this command causes.
    #[serde(default)]
    pub request_id: String,
    /// The id the provider serves on.
    pub provider_id: String,
    /// The provider binary: a path under a directory the host allows (`--allow-file-dir`).
    pub binary: String,
    /// Provider-wide configuration, handed over in the start-up data.
    #[serde(default)]
    pub config: BTreeMap<String, String>,
}

/// What a host supervises of one provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderDescription {
    /// The provider id.
    pub provider_id: String,
    /// Its binary.
    pub binary: String,
    /// The process id of the running child; `None` while it waits to be restarted.
    pub pid: Option<u32>,
    /// Restarts after a crash so far.
    pub restarts: u32,
}

/// The answer to `provider.start`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderStarted {
    /// The host that supervises it.
    pub host_id: String,
    /// What runs.
    pub provider: ProviderDescription,
}

/// `provider.stop`: stop a provider this host supervises (a grace period, then SIGKILL).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderStop {
    /// Echoed in the reply and in events.
    #[serde(default)]
    pub request_id: String,
    /// Which provider.
    pub provider_id: String,
}

/// The answer to `provider.stop`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderStopped {
    /// The host.
    pub host_id: String,
    /// Which provider.
    pub provider_id: String,
}
