//! Commands about components: start, scale, update, stop, list.

use serde::{Deserialize, Serialize};

/// `component.start`: load a component and serve it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComponentStart {
    /// Echoed in the reply and in the events this command causes.
    #[serde(default)]
    pub request_id: String,
    /// The id the component serves on.
    pub component_id: String,
    /// What to run: `sha256:{hex}` for a component uploaded into the lattice, or
    /// `file:{absolute path}` under a directory the host allows (see [`crate::image`]).
    pub image: String,
    /// Upper bound of concurrently running instances on the host (default 100).
    #[serde(default)]
    pub max_instances: Option<u32>,
    /// Names of configs the component reads through `wasi:config`.
    #[serde(default)]
    pub config: Vec<String>,
}

/// What a host runs of one component.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComponentDescription {
    /// The component id.
    pub component_id: String,
    /// Its reference, normalized (`sha256:…`, `file:…`).
    pub image: String,
    /// SHA-256 of its bytes, hex.
    pub digest: String,
    /// Upper bound of concurrently running instances on the host.
    pub max_instances: u32,
    /// Configs it reads.
    pub config: Vec<String>,
}

/// The answer to `component.start`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComponentStarted {
    /// The host that runs it.
    pub host_id: String,
    /// What it runs.
    pub component: ComponentDescription,
}

/// `component.scale`: change how many instances of a component may run at once on a host; 0
/// stops it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComponentScale {
    /// Echoed in the reply and in events.
    #[serde(default)]
    pub request_id: String,
    /// Which component.
    pub component_id: String,
    /// The new upper bound; 0 stops the component on the host.
    pub max_instances: u32,
}

/// The answer to `component.scale`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComponentScaled {
    /// The host.
    pub host_id: String,
    /// Which component.
    pub component_id: String,
    /// The bound before.
    pub previous: u32,
    /// The bound now (0: stopped).
    pub max_instances: u32,
}

/// `component.update`: run a new version of a component on a host in place of the old one.
/// Calls that reached the old version finish on it; every later call meets the new one, so
/// nothing in flight fails. Its id, bound and configs stay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComponentUpdate {
    /// Echoed in the reply and in events.
    #[serde(default)]
    pub request_id: String,
    /// Which component.
    pub component_id: String,
    /// The new version's reference, as in [`ComponentStart::image`].
    pub image: String,
}

/// The answer to `component.update`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComponentUpdated {
    /// The host.
    pub host_id: String,
    /// Which component.
    pub component_id: String,
    /// The reference it ran before.
    pub previous_image: String,
    /// The digest it ran before.
    pub previous_digest: String,
    /// What runs now.
    pub component: ComponentDescription,
}

/// `component.stop`: stop serving a component on a host (`component.scale` to 0).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComponentStop {
    /// Echoed in the reply and in events.
    #[serde(default)]
    pub request_id: String,
    /// Which component.
    pub component_id: String,
}

/// The answer to `component.stop`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComponentStopped {
    /// The host.
    pub host_id: String,
    /// Which component.
    pub component_id: String,
}

/// `component.list`: every host (or the one named) lists its components.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComponentList {
    /// Echoed in the reply.
    #[serde(default)]
    pub request_id: String,
}

/// One host's components.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostComponents {
    /// The host.
    pub host_id: String,
    /// Its components.
    pub components: Vec<ComponentDescription>,
}
