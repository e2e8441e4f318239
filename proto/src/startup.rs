//! Provider start-up data: what a provider needs to join a lattice.
//!
//! A host that spawns a provider writes it as one JSON line on the provider's stdin; a sidecar
//! gets the same fields from flags or environment variables. The schema is versioned and
//! documented in docs/provider-startup.md, so providers can be written in any language.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{ProtoError, subject::validate_id};

/// Version of the start-up data schema written by this build.
pub const STARTUP_VERSION: u16 = 1;

/// Everything a provider needs to join a lattice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderStartup {
    /// Schema version ([`STARTUP_VERSION`]).
    pub version: u16,
    /// The lattice to join.
    pub lattice: String,
    /// The provider id (the subject it serves on).
    pub provider_id: String,
    /// NATS server URL.
    pub nats_url: String,
    /// The provider credential (`ferrycred1.…`): its per-hour MAC keys. A secret.
    pub credential: String,
    /// Default timeout for invocations the provider makes, in milliseconds.
    #[serde(default)]
    pub rpc_timeout_ms: Option<u64>,
    /// Log filter (`info`, `ferry=debug`).
    #[serde(default)]
    pub log_level: Option<String>,
    /// Log format, `text` or `json` (the provider's own default, or `FERRY_LOG_FORMAT`, when
    /// absent): a host hands on its own, so a lattice logs alike.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_format: Option<String>,
    /// Provider-wide config values.
    #[serde(default)]
    pub config: BTreeMap<String, String>,
}

impl ProviderStartup {
    /// Parse and check start-up data.
    ///
    /// # Errors
    /// [`ProtoError::Json`] for malformed JSON, [`ProtoError::UnsupportedVersion`] for another
    /// schema version, [`ProtoError::InvalidId`] for a bad lattice or provider id.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ProtoError> {
        let startup: ProviderStartup = serde_json::from_slice(bytes)?;
        if startup.version != STARTUP_VERSION {
            return Err(ProtoError::UnsupportedVersion(startup.version));
        }
        validate_id("lattice", &startup.lattice)?;
        validate_id("provider id", &startup.provider_id)?;
        Ok(startup)
    }

    /// The JSON line a host writes to a provider's stdin.
    ///
    /// # Errors
    /// Only if serialization fails (never for this type).
    pub fn to_json(&self) -> Result<String, ProtoError> {
        Ok(serde_json::to_string(self)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_checks() {
        let s = ProviderStartup {
            version: STARTUP_VERSION,
            lattice: "default".into(),
            provider_id: "kv".into(),
            nats_url: "nats://127.0.0.1:4222".into(),
            credential: "ferrycred1.x".into(),
            rpc_timeout_ms: Some(2000),
            log_level: None,
            log_format: Some("json".into()),
            config: BTreeMap::new(),
        };
        let json = s.to_json().unwrap();
        assert_eq!(ProviderStartup::from_json(json.as_bytes()).unwrap(), s);
        let bad = json.replace("\"version\":1", "\"version\":9");
        assert!(matches!(ProviderStartup::from_json(bad.as_bytes()), Err(ProtoError::UnsupportedVersion(9))));
        assert!(ProviderStartup::from_json(b"{not json").is_err());
        let bad = json.replace("\"kv\"", "\"k.v\"");
        assert!(ProviderStartup::from_json(bad.as_bytes()).is_err());
    }
}
