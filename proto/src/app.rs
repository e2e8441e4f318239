//! What the lattice bucket keeps about declarative applications: each stored manifest version,
//! the deployment in force (signed by the lattice's hosts, so a bucket writer cannot make the
//! reconciler run something no operator deployed), what the reconciler created for each
//! application, its last status report, and the reconciler's lease. Values are JSON.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::{ProtoError, subject::validate_id};

/// Key prefix of everything about applications.
pub const APP_PREFIX: &str = "app.";
/// The key of the reconciler's lease.
pub const LEASE_KEY: &str = "reconciler.lease";

/// `app.{name}.v{seq}`: one stored version (sequence numbers from 1, zero-padded so keys sort).
///
/// # Errors
/// [`ProtoError::InvalidId`] for an invalid application name.
pub fn version_key(name: &str, seq: u64) -> Result<String, ProtoError> {
    validate_id("application name", name)?;
    Ok(format!("{APP_PREFIX}{name}.v{seq:08}"))
}

/// The application and sequence number a version key names.
pub fn parse_version_key(key: &str) -> Option<(&str, u64)> {
    let (name, seq) = key.strip_prefix(APP_PREFIX)?.rsplit_once(".v")?;
    (validate_id("application name", name).is_ok() && !name.contains('.')).then_some(())?;
    Some((name, seq.parse().ok()?))
}

/// `app.{name}.deployment`: the deployment in force.
///
/// # Errors
/// [`ProtoError::InvalidId`] for an invalid application name.
pub fn deployment_key(name: &str) -> Result<String, ProtoError> {
    validate_id("application name", name)?;
    Ok(format!("{APP_PREFIX}{name}.deployment"))
}

/// `app.{name}.status`: the reconciler's last report.
///
/// # Errors
/// [`ProtoError::InvalidId`] for an invalid application name.
pub fn status_key(name: &str) -> Result<String, ProtoError> {
    validate_id("application name", name)?;
    Ok(format!("{APP_PREFIX}{name}.status"))
}

/// `app.{name}.owned`: what the reconciler created for the application.
///
/// # Errors
/// [`ProtoError::InvalidId`] for an invalid application name.
pub fn owned_key(name: &str) -> Result<String, ProtoError> {
    validate_id("application name", name)?;
    Ok(format!("{APP_PREFIX}{name}.owned"))
}

/// The application a `app.{name}.deployment` key names.
pub fn parse_deployment_key(key: &str) -> Option<&str> {
    let name = key.strip_prefix(APP_PREFIX)?.strip_suffix(".deployment")?;
    validate_id("application name", name).ok().map(|()| name)
}

/// One stored version of an application.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppVersionRecord {
    /// The application.
    pub name: String,
    /// The manifest's version.
    pub version: String,
    /// Its sequence number among the application's versions.
    pub seq: u64,
    /// The manifest as it was sent.
    pub manifest: String,
    /// What each `file://` image was uploaded as.
    pub images: BTreeMap<String, String>,
    /// When it was stored, ms since the Unix epoch.
    pub stored_at_ms: u64,
}

impl AppVersionRecord {
    /// SHA-256 (hex) of what decides what runs: the manifest and its image map.
    pub fn digest(&self) -> String {
        content_digest(&self.manifest, &self.images)
    }
}

/// SHA-256 (hex) of a manifest and its image map, length-prefixed so no two differ only in
/// where one ends.
pub fn content_digest(manifest: &str, images: &BTreeMap<String, String>) -> String {
    let mut hasher = Sha256::new();
    let mut part = |bytes: &[u8]| {
        hasher.update((bytes.len() as u64).to_be_bytes());
        hasher.update(bytes);
    };
    part(manifest.as_bytes());
    for (from, to) in images {
        part(from.as_bytes());
        part(to.as_bytes());
    }
    hex(&hasher.finalize())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The deployment in force for one application.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppDeployment {
    /// The application.
    pub name: String,
    /// The deployed version's sequence number.
    pub seq: u64,
    /// The deployed version.
    pub version: String,
    /// [`AppVersionRecord::digest`] of that version.
    pub digest: String,
    /// False once undeployed: the reconciler removes what it created, then the record.
    pub deployed: bool,
    /// The control command that made this record.
    pub request_id: String,
    /// When, ms since the Unix epoch.
    pub issued_at_ms: u64,
    /// The lattice operator key's signature over [`AppDeployment::signed_bytes`] (URL-safe
    /// base64).
    #[serde(default)]
    pub signature: String,
}

impl AppDeployment {
    /// What the signature covers: every field but the signature.
    pub fn signed_bytes(&self) -> Vec<u8> {
        let mut bytes = b"ferry-app-v1\n".to_vec();
        for part in [
            self.name.as_str(),
            &self.seq.to_string(),
            &self.version,
            &self.digest,
            if self.deployed { "deployed" } else { "undeployed" },
            &self.request_id,
            &self.issued_at_ms.to_string(),
        ] {
            bytes.extend_from_slice(&(part.len() as u64).to_be_bytes());
            bytes.extend_from_slice(part.as_bytes());
        }
        bytes
    }
}

/// What the reconciler created for an application, recorded before it creates it, so undeploy
/// removes exactly that.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppOwned {
    /// Component ids it started.
    #[serde(default)]
    pub components: BTreeSet<String>,
    /// Provider ids it started.
    #[serde(default)]
    pub providers: BTreeSet<String>,
    /// Bucket keys of the links it put.
    #[serde(default)]
    pub links: BTreeSet<String>,
    /// Configs it put.
    #[serde(default)]
    pub configs: BTreeSet<String>,
}

impl AppOwned {
    /// Whether nothing is left.
    pub fn is_empty(&self) -> bool {
        self.components.is_empty() && self.providers.is_empty() && self.links.is_empty() && self.configs.is_empty()
    }
}

/// The reconciler's lease: one host reconciles the lattice at a time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The host holding it.
    pub holder: String,
    /// Until when, ms since the Unix epoch; after that any host may take it.
    pub until_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_back() {
        let key = version_key("shop", 12).unwrap();
        assert_eq!(key, "app.shop.v00000012");
        assert_eq!(parse_version_key(&key), Some(("shop", 12)));
        assert_eq!(parse_version_key("app.shop.deployment"), None);
        assert_eq!(parse_deployment_key(&deployment_key("shop").unwrap()), Some("shop"));
        assert_eq!(parse_deployment_key("app.shop.status"), None);
        assert!(version_key("a.b", 1).is_err());
    }

    #[test]
    fn the_signature_covers_every_field() {
        let d = AppDeployment {
            name: "a".into(),
            seq: 1,
            version: "v1".into(),
            digest: content_digest("m", &BTreeMap::new()),
            deployed: true,
            request_id: "r".into(),
            issued_at_ms: 5,
            signature: String::new(),
        };
        let mut other = d.clone();
        other.deployed = false;
        assert_ne!(d.signed_bytes(), other.signed_bytes());
        let mut other = d.clone();
        other.seq = 2;
        assert_ne!(d.signed_bytes(), other.signed_bytes());
        assert_ne!(
            content_digest("ab", &BTreeMap::new()),
            content_digest("a", &BTreeMap::from([("b".into(), String::new())]))
        );
        let json = serde_json::to_vec(&d).unwrap();
        assert_eq!(serde_json::from_slice::<AppDeployment>(&json).unwrap(), d);
        assert!(serde_json::from_slice::<AppDeployment>(b"\x00").is_err());
    }
}
