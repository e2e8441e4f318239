//! Commands about declarative applications (wadm manifests): deploy, undeploy, list, status,
//! history. A host validates and stores what it is sent; the lattice's reconciler
//! (docs/applications.md) does the placing.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `app.deploy`: store a manifest as a new version of its application (or the version it
/// already is) and make it the deployed one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppDeploy {
    /// Echoed in the reply and in events.
    #[serde(default)]
    pub request_id: String,
    /// The manifest, as written (YAML or JSON).
    pub manifest: String,
    /// What each `file://` image of the manifest was uploaded as (`sha256:…`): the client
    /// reads the files, a host never does.
    #[serde(default)]
    pub images: BTreeMap<String, String>,
}

/// The answer to `app.deploy`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppDeployed {
    /// The application.
    pub name: String,
    /// The version now deployed.
    pub version: String,
    /// Whether this version was new (false: it was stored before, unchanged).
    pub new_version: bool,
    /// The component and provider ids it places.
    pub ids: Vec<String>,
}

/// `app.undeploy`: stop an application: the reconciler removes what it created for it. Its
/// versions stay (`app.history`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppUndeploy {
    /// Echoed in the reply and in events.
    #[serde(default)]
    pub request_id: String,
    /// The application.
    pub name: String,
}

/// The answer to `app.undeploy`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppUndeployed {
    /// The application.
    pub name: String,
    /// The version that was deployed.
    pub version: String,
}

/// `app.list`: every application stored in the lattice.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppList {
    /// Echoed in the reply.
    #[serde(default)]
    pub request_id: String,
}

/// One application, as `app.list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppSummary {
    /// The application.
    pub name: String,
    /// The newest stored version.
    pub latest_version: String,
    /// The deployed version, if any.
    pub deployed_version: Option<String>,
    /// Its state as the reconciler last saw it.
    pub state: AppState,
    /// What the reconciler last said about it.
    pub message: String,
}

/// `app.status`: where an application stands, part by part.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppStatusQuery {
    /// Echoed in the reply.
    #[serde(default)]
    pub request_id: String,
    /// The application.
    pub name: String,
}

/// `app.history`: the stored versions of an application, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppHistory {
    /// Echoed in the reply.
    #[serde(default)]
    pub request_id: String,
    /// The application.
    pub name: String,
}

/// One stored version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppVersionInfo {
    /// The version (the manifest's `version` annotation).
    pub version: String,
    /// When it was first stored, ms since the Unix epoch.
    pub stored_at_ms: u64,
    /// Whether it is the deployed one.
    pub deployed: bool,
}

/// Where an application stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AppState {
    /// Stored, never deployed (or undeployed and cleaned up).
    Undeployed,
    /// Deployed; the reconciler has not reported on this version yet, or is still placing it.
    Reconciling,
    /// Everything the manifest asks for runs.
    Deployed,
    /// Something cannot be placed or applied now (see the message); the reconciler keeps trying.
    Failed,
    /// Being removed.
    Undeploying,
}

/// What the reconciler reports about one application after each pass.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppStatus {
    /// The application.
    pub name: String,
    /// The version the report is about.
    pub version: String,
    /// Overall state.
    pub state: AppState,
    /// Why, when not deployed.
    pub message: String,
    /// The host whose reconciler wrote the report.
    pub reconciler: String,
    /// When, ms since the Unix epoch.
    pub updated_at_ms: u64,
    /// Each component and provider of the manifest.
    pub parts: Vec<PartStatus>,
    /// Each link of the manifest.
    pub links: Vec<LinkStatus>,
}

/// One component or provider of an application.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartStatus {
    /// Its name in the manifest.
    pub name: String,
    /// `component` or `provider`.
    pub kind: String,
    /// The id it runs under.
    pub id: String,
    /// Instances asked for (components: concurrent instances in all; providers: processes).
    pub desired: u32,
    /// Where it runs: host id → instances there (providers: 1).
    pub running: BTreeMap<String, u32>,
    /// Whether it runs as asked.
    pub ready: bool,
    /// Why not, when not.
    pub message: String,
}

/// One link of an application.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkStatus {
    /// Source id.
    pub source_id: String,
    /// Target id.
    pub target_id: String,
    /// `namespace:package`.
    pub package: String,
    /// Link name.
    pub name: String,
    /// Whether it is stored as the manifest says.
    pub ready: bool,
    /// Why not, when not.
    pub message: String,
}
