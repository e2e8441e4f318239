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
    /// The provider binary: a path under a directory the host allows (`--allow-file-dir`), or a
    /// provider image in an OCI registry ([`ProviderStart::image`]) whose repository the host
    /// allows (`--allow-provider-image`).
    pub binary: String,
    /// Provider-wide configuration, handed over in the start-up data.
    #[serde(default)]
    pub config: BTreeMap<String, String>,
}

impl ProviderStart {
    /// The registry image `binary` names, if it names one: `oci://…`, or
    /// `REGISTRY/REPOSITORY[:TAG][@DIGEST]` whose first segment is a registry host
    /// (`ghcr.io/org/kv:1.0`); `None` for a file (an absolute path or a bare file name).
    ///
    /// # Errors
    /// An `oci://` reference that does not parse.
    pub fn image(&self) -> Result<Option<crate::image::OciRef>, crate::ProtoError> {
        if self.binary.starts_with("oci://") {
            return crate::image::OciRef::parse(&self.binary).map(Some);
        }
        if self.binary.starts_with('/') || !self.binary.contains('/') {
            return Ok(None);
        }
        Ok(crate::image::OciRef::parse(&self.binary).ok())
    }
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
    /// [`config_digest`] of the config it was started with: whoever started it can tell
    /// whether it runs with the config it should.
    #[serde(default)]
    pub config_digest: String,
}

/// SHA-256 (hex) of a provider's start-up config, length-prefixed key by key.
pub fn config_digest(config: &BTreeMap<String, String>) -> String {
    use sha2::{Digest as _, Sha256};
    let mut hasher = Sha256::new();
    for (key, value) in config {
        for part in [key, value] {
            hasher.update((part.len() as u64).to_be_bytes());
            hasher.update(part.as_bytes());
        }
    }
    hasher.finalize().iter().map(|b| format!("{b:02x}")).collect()
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
