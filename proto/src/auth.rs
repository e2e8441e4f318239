//! Authentication of invocations: a keyed MAC per message, keys derived from the cluster seed.
//!
//! * Hosts hold the lattice's cluster seed (`SC…`). From it they derive, for every provider id
//!   and every hour, a 32-byte MAC key: `HMAC-SHA256(secret, "ferry/v1/provider-key" ‖ lattice ‖
//!   provider ‖ hour)`.
//! * A provider never sees the seed. Its **credential** ([`ProviderCredential`]) holds its own
//!   keys for the hours it is valid, so it can talk to hosts until it expires and no longer.
//! * Every message between a host and a provider carries `HMAC-SHA256(key, canonical form)`,
//!   where the key is the provider's key for the hour of the message's `issued_at_ms`.
//!   The canonical form is length-prefixed (id, origin, target, link name, operation,
//!   SHA-256 of the payload, issue time), so no field can bleed into another.
//! * Receivers reject messages outside the replay window and ids they have already seen
//!   ([`ReplayGuard`]); responses are bound to the request id.
//!
//! Cost per message is one SHA-256 of the payload and one HMAC over ~150 bytes: about a
//! microsecond, where an ed25519 signature and verification cost ~90 µs. The threat model is in
//! docs/security.md.

use std::fmt;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

mod invocation;
mod replay;

pub(crate) use invocation::error_bytes;
pub use invocation::{verify_invocation, verify_invocation_under};
pub use replay::ReplayGuard;

use crate::ProtoError;

type HmacSha256 = Hmac<Sha256>;

/// Length of one key period: keys change every hour.
pub const KEY_PERIOD_MS: u64 = 3_600_000;
/// Default replay window: a message issued further than this from the receiver's clock is
/// rejected, and ids are remembered this long.
pub const DEFAULT_REPLAY_WINDOW_MS: u64 = 30_000;
/// Prefix of an encoded [`ProviderCredential`].
pub const CREDENTIAL_PREFIX: &str = "ferrycred1.";

/// Why a message failed authentication.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// The message carries no MAC.
    #[error("message is not signed")]
    Unsigned,
    /// The MAC does not match: wrong key or tampered content.
    #[error("signature does not match (wrong key or tampered message)")]
    BadMac,
    /// The message was issued too far from now.
    #[error("message issued {skew_ms} ms away from now, outside the replay window of {window_ms} ms")]
    OutsideWindow {
        /// Distance between issue time and the receiver's clock.
        skew_ms: u64,
        /// The window in force.
        window_ms: u64,
    },
    /// The id was seen before within the replay window.
    #[error("replayed invocation id {0}")]
    Replayed(String),
    /// The credential has no key for the time of the message.
    #[error("credential for {provider_id} is not valid at {at_ms} (valid {from_ms}..{until_ms})")]
    CredentialExpired {
        /// Whose credential.
        provider_id: String,
        /// The time asked for.
        at_ms: u64,
        /// Start of validity.
        from_ms: u64,
        /// End of validity.
        until_ms: u64,
    },
    /// The message was issued before the receiver started: whatever it carries was meant for
    /// an earlier process, so it can only be a replay.
    #[error("message issued {early_ms} ms before this receiver started")]
    IssuedBeforeStart {
        /// How long before the start.
        early_ms: u64,
    },
    /// The operation does not belong on the subject the message arrived on (a data-plane
    /// invocation republished on a control subject, or the reverse).
    #[error("operation {operation:?} is not accepted on the {channel} subject")]
    WrongChannel {
        /// The operation the message carries.
        operation: String,
        /// The kind of subject it arrived on.
        channel: &'static str,
    },
    /// A sealed payload could not be opened (another key or invocation, or tampered), or the
    /// system's random source failed while sealing.
    #[error("sealed payload could not be opened or sealed")]
    Sealing,
    /// The message is addressed to someone else.
    #[error("message addressed to {target}, not {expected}")]
    WrongTarget {
        /// Where the message was addressed.
        target: String,
        /// Who received it.
        expected: String,
    },
    /// The response answers another request.
    #[error("response id {got} does not match request id {expected}")]
    WrongResponseId {
        /// The id in the response.
        got: String,
        /// The id of the request.
        expected: String,
    },
}

/// A 32-byte MAC key. Its `Debug` output is redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct MacKey([u8; 32]);

impl fmt::Debug for MacKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MacKey(..)")
    }
}

impl MacKey {
    /// A key from raw bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    pub(crate) fn mac(&self, parts: &[&[u8]]) -> [u8; 32] {
        #[expect(clippy::expect_used, reason = "HMAC accepts keys of any length")]
        let mut mac = HmacSha256::new_from_slice(&self.0).expect("hmac key");
        for part in parts {
            mac.update(&(part.len() as u32).to_be_bytes());
            mac.update(part);
        }
        mac.finalize().into_bytes().into()
    }

    pub(crate) fn check(&self, parts: &[&[u8]], tag: &[u8]) -> Result<(), AuthError> {
        if tag.is_empty() {
            return Err(AuthError::Unsigned);
        }
        #[expect(clippy::expect_used, reason = "HMAC accepts keys of any length")]
        let mut mac = HmacSha256::new_from_slice(&self.0).expect("hmac key");
        for part in parts {
            mac.update(&(part.len() as u32).to_be_bytes());
            mac.update(part);
        }
        // verify_slice compares in constant time.
        mac.verify_slice(tag).map_err(|_| AuthError::BadMac)
    }
}

/// The hour number of a millisecond timestamp: which key signs a message issued then.
pub fn period_of(ms: u64) -> u64 {
    ms / KEY_PERIOD_MS
}

/// The lattice's root secret, held by hosts only.
#[derive(Clone)]
pub struct ClusterKey {
    public_key: String,
    secret: [u8; 32],
}

impl fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterKey").field("public_key", &self.public_key).finish_non_exhaustive()
    }
}

impl ClusterKey {
    /// Load a cluster key from its nkeys seed (`SC…`).
    ///
    /// # Errors
    /// [`ProtoError::Credential`] if the seed is malformed or not a cluster seed.
    pub fn from_seed(seed: &str) -> Result<Self, ProtoError> {
        let pair = nkeys::KeyPair::from_seed(seed.trim())
            .map_err(|e| ProtoError::Credential(format!("bad cluster seed: {e}")))?;
        let public_key = pair.public_key();
        if !public_key.starts_with('C') {
            return Err(ProtoError::Credential("seed is not a cluster seed (expected SC…)".into()));
        }
        let mut hasher = Sha256::new();
        hasher.update(b"ferry/v1/cluster-secret");
        hasher.update(seed.trim().as_bytes());
        Ok(Self { public_key, secret: hasher.finalize().into() })
    }

    /// A new random cluster key and its seed.
    ///
    /// # Errors
    /// Only if the fresh seed cannot be read back (never in practice).
    pub fn generate() -> Result<(Self, String), ProtoError> {
        let pair = nkeys::KeyPair::new_cluster();
        let seed = pair.seed().map_err(|e| ProtoError::Credential(e.to_string()))?;
        Ok((Self::from_seed(&seed)?, seed))
    }

    /// The public key (`C…`), safe to show.
    pub fn public_key(&self) -> &str {
        &self.public_key
    }

    /// The operator key every host of `lattice` derives from the cluster secret: hosts obey it
    /// as they obey the operators they were given, so the lattice's reconciler can command
    /// them, and they sign the application records they store with it.
    ///
    /// # Errors
    /// Only if the derived bytes are not a key (never in practice).
    pub fn lattice_operator(&self, lattice: &str) -> Result<crate::ctl::operator::OperatorKey, ProtoError> {
        crate::ctl::operator::OperatorKey::from_raw(
            MacKey(self.secret).mac(&[b"ferry/v1/lattice-operator", lattice.as_bytes()]),
        )
    }

    /// The MAC key of `provider_id` in `lattice` for key period `period`.
    pub fn provider_key(&self, lattice: &str, provider_id: &str, period: u64) -> MacKey {
        MacKey(MacKey(self.secret).mac(&[
            b"ferry/v1/provider-key",
            lattice.as_bytes(),
            provider_id.as_bytes(),
            &period.to_be_bytes(),
        ]))
    }

    /// Issue a credential for `provider_id` valid from the hour containing `from_ms` for
    /// `hours` hours (at least one).
    pub fn issue_credential(&self, lattice: &str, provider_id: &str, from_ms: u64, hours: u32) -> ProviderCredential {
        let first_period = period_of(from_ms);
        let keys = (0..u64::from(hours.max(1)))
            .map(|i| KeyBytes(self.provider_key(lattice, provider_id, first_period + i).0))
            .collect();
        ProviderCredential {
            version: 1,
            lattice: lattice.to_owned(),
            provider_id: provider_id.to_owned(),
            issuer: self.public_key.clone(),
            first_period,
            keys,
        }
    }
}

/// 32 key bytes, encoded as MessagePack bin.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
struct KeyBytes(#[serde(with = "serde_bytes")] [u8; 32]);

/// What a provider holds instead of the cluster seed: its own MAC keys, one per hour of
/// validity. A secret; encoded as `ferrycred1.` + base64url(MessagePack).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderCredential {
    version: u16,
    lattice: String,
    provider_id: String,
    issuer: String,
    first_period: u64,
    keys: Vec<KeyBytes>,
}

impl fmt::Debug for ProviderCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProviderCredential")
            .field("lattice", &self.lattice)
            .field("provider_id", &self.provider_id)
            .field("issuer", &self.issuer)
            .field("valid_from_ms", &self.valid_from_ms())
            .field("valid_until_ms", &self.valid_until_ms())
            .finish_non_exhaustive()
    }
}

impl ProviderCredential {
    /// The credential as a string for start-up data or an environment variable.
    pub fn encode(&self) -> String {
        #[expect(clippy::expect_used, reason = "encoding a plain struct cannot fail")]
        let bytes = crate::codec::encode(self).expect("credential encodes");
        format!("{CREDENTIAL_PREFIX}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
    }

    /// Parse a credential string.
    ///
    /// # Errors
    /// [`ProtoError::Credential`] when it is not a credential.
    pub fn parse(text: &str) -> Result<Self, ProtoError> {
        let body = text
            .trim()
            .strip_prefix(CREDENTIAL_PREFIX)
            .ok_or_else(|| ProtoError::Credential(format!("expected a string starting with {CREDENTIAL_PREFIX}")))?;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|e| ProtoError::Credential(format!("not base64url: {e}")))?;
        let cred: ProviderCredential =
            crate::codec::decode(&bytes).map_err(|e| ProtoError::Credential(e.to_string()))?;
        if cred.version != 1 {
            return Err(ProtoError::Credential(format!("unsupported credential version {}", cred.version)));
        }
        if cred.keys.is_empty() {
            return Err(ProtoError::Credential("credential holds no keys".into()));
        }
        Ok(cred)
    }

    /// The provider id this credential belongs to.
    pub fn provider_id(&self) -> &str {
        &self.provider_id
    }

    /// The lattice this credential is for.
    pub fn lattice(&self) -> &str {
        &self.lattice
    }

    /// The public key of the cluster key that issued it.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// Start of validity, ms since the epoch.
    pub fn valid_from_ms(&self) -> u64 {
        self.first_period * KEY_PERIOD_MS
    }

    /// End of validity (exclusive), ms since the epoch.
    pub fn valid_until_ms(&self) -> u64 {
        (self.first_period + self.keys.len() as u64) * KEY_PERIOD_MS
    }

    /// The key for a message issued at `at_ms`.
    ///
    /// # Errors
    /// [`AuthError::CredentialExpired`] outside the validity.
    pub fn key_at(&self, at_ms: u64) -> Result<MacKey, AuthError> {
        let period = period_of(at_ms);
        period
            .checked_sub(self.first_period)
            .and_then(|i| self.keys.get(usize::try_from(i).ok()?))
            .map(|k| MacKey(k.0))
            .ok_or_else(|| AuthError::CredentialExpired {
                provider_id: self.provider_id.clone(),
                at_ms,
                from_ms: self.valid_from_ms(),
                until_ms: self.valid_until_ms(),
            })
    }
}

/// The credentials a provider (or client) holds: one per cluster key its lattice's hosts may
/// use, the first the one it signs with. More than one only while the cluster key is rotated
/// (docs/security.md): a receiver verifies under each, so calls signed under the old key or the
/// new one are taken up alike. Written as the credentials' encodings joined by commas.
#[derive(Clone, PartialEq, Eq)]
pub struct CredentialSet {
    credentials: Vec<ProviderCredential>,
}

impl fmt::Debug for CredentialSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(&self.credentials).finish()
    }
}

impl From<ProviderCredential> for CredentialSet {
    fn from(credential: ProviderCredential) -> Self {
        Self { credentials: vec![credential] }
    }
}

impl CredentialSet {
    /// The set of `credentials`, the first signing.
    ///
    /// # Errors
    /// [`ProtoError::Credential`] when there are none, or they name different providers or
    /// lattices.
    pub fn new(credentials: Vec<ProviderCredential>) -> Result<Self, ProtoError> {
        let Some(first) = credentials.first() else {
            return Err(ProtoError::Credential("no credential given".into()));
        };
        if let Some(other) =
            credentials.iter().find(|c| c.provider_id != first.provider_id || c.lattice != first.lattice)
        {
            return Err(ProtoError::Credential(format!(
                "credentials for {}/{} and {}/{} cannot be held together",
                first.lattice, first.provider_id, other.lattice, other.provider_id
            )));
        }
        Ok(Self { credentials })
    }

    /// Parse one credential or several joined by commas (or white space).
    ///
    /// # Errors
    /// [`ProtoError::Credential`] when one is not a credential, or as [`CredentialSet::new`].
    pub fn parse(text: &str) -> Result<Self, ProtoError> {
        let parts = text.split(|c: char| c == ',' || c.is_whitespace()).filter(|p| !p.is_empty());
        Self::new(parts.map(ProviderCredential::parse).collect::<Result<_, _>>()?)
    }

    /// The credentials joined by commas, for start-up data or an environment variable.
    pub fn encode(&self) -> String {
        self.credentials.iter().map(ProviderCredential::encode).collect::<Vec<_>>().join(",")
    }

    /// The provider id the credentials belong to.
    pub fn provider_id(&self) -> &str {
        &self.credentials[0].provider_id
    }

    /// The lattice they are for.
    pub fn lattice(&self) -> &str {
        &self.credentials[0].lattice
    }

    /// The public keys of the cluster keys that issued them, the signing one first.
    pub fn issuers(&self) -> Vec<&str> {
        self.credentials.iter().map(ProviderCredential::issuer).collect()
    }

    /// The key to sign a message issued at `at_ms` with: the first credential's that is valid
    /// then.
    ///
    /// # Errors
    /// [`AuthError::CredentialExpired`] (of the first credential) when none is valid then.
    pub fn key_at(&self, at_ms: u64) -> Result<MacKey, AuthError> {
        let first = self.credentials[0].key_at(at_ms);
        first.or_else(|err| self.credentials[1..].iter().find_map(|c| c.key_at(at_ms).ok()).ok_or(err))
    }

    /// Every key a message issued at `at_ms` may be signed with, the signing one first.
    pub fn keys_at(&self, at_ms: u64) -> Vec<MacKey> {
        self.credentials.iter().filter_map(|c| c.key_at(at_ms).ok()).collect()
    }
}

#[cfg(test)]
mod tests;
