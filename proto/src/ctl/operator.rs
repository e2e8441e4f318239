//! Operator signatures on control commands.
//!
//! An operator holds an nkeys operator key pair (`ferry keys operator`: seed `SO…`, public key
//! `O…`); hosts are given the public keys they obey. A command carries four NATS headers — the
//! operator's public key, the time it was signed, a fresh nonce and an Ed25519 signature over
//! the subject, those two values and the body — so it cannot be altered, sent to another host
//! or another command, or replayed once its nonce has been seen or its window has passed.

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};

use crate::{ProtoError, auth::AuthError};

/// Header naming the signing operator's public key (`O…`).
pub const HEADER_OPERATOR: &str = "Ferry-Operator";
/// Header with the signing time, milliseconds since the Unix epoch.
pub const HEADER_ISSUED_AT: &str = "Ferry-Issued-At";
/// Header with a value used once.
pub const HEADER_NONCE: &str = "Ferry-Nonce";
/// Header with the Ed25519 signature, URL-safe base64 without padding.
pub const HEADER_SIGNATURE: &str = "Ferry-Signature";

/// How far a command's signing time may be from a host's clock.
pub const COMMAND_WINDOW_MS: u64 = 60_000;

/// An operator's key pair, to sign commands with.
pub struct OperatorKey {
    pair: nkeys::KeyPair,
}

impl std::fmt::Debug for OperatorKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OperatorKey").field("public_key", &self.pair.public_key()).finish_non_exhaustive()
    }
}

impl OperatorKey {
    /// A new key pair and its seed (secret).
    ///
    /// # Errors
    /// [`ProtoError::Credential`] when the seed cannot be encoded.
    pub fn generate() -> Result<(Self, String), ProtoError> {
        let pair = nkeys::KeyPair::new_operator();
        let seed = pair.seed().map_err(|e| ProtoError::Credential(e.to_string()))?;
        Ok((Self { pair }, seed))
    }

    /// The key pair of an operator seed (`SO…`).
    ///
    /// # Errors
    /// [`ProtoError::Credential`] for anything that is not an operator seed.
    pub fn from_seed(seed: &str) -> Result<Self, ProtoError> {
        let pair = nkeys::KeyPair::from_seed(seed.trim()).map_err(|e| ProtoError::Credential(e.to_string()))?;
        if !pair.public_key().starts_with('O') {
            return Err(ProtoError::Credential("not an operator seed (SO…)".into()));
        }
        Ok(Self { pair })
    }

    /// The public key (`O…`) hosts are given.
    pub fn public_key(&self) -> String {
        self.pair.public_key()
    }

    /// The operator key whose secret is `raw`: for keys derived from another secret
    /// ([`crate::auth::ClusterKey::lattice_operator`]).
    pub(crate) fn from_raw(raw: [u8; 32]) -> Result<Self, ProtoError> {
        let pair = nkeys::KeyPair::new_from_raw(nkeys::KeyPairType::Operator, raw)
            .map_err(|e| ProtoError::Credential(e.to_string()))?;
        Ok(Self { pair })
    }

    /// Sign a record (not a command) that others verify with [`verify_record`]: URL-safe
    /// base64 of the Ed25519 signature.
    ///
    /// # Errors
    /// [`ProtoError::Credential`] if signing fails (never for a valid key).
    pub fn sign_record(&self, bytes: &[u8]) -> Result<String, ProtoError> {
        let signature = self.pair.sign(bytes).map_err(|e| ProtoError::Credential(e.to_string()))?;
        Ok(URL_SAFE_NO_PAD.encode(signature))
    }

    /// The signature headers for `body` sent on `subject` now, as (name, value) pairs.
    ///
    /// # Errors
    /// [`ProtoError::Credential`] when signing fails.
    pub fn sign(&self, subject: &str, body: &[u8]) -> Result<Vec<(&'static str, String)>, ProtoError> {
        let issued_at = crate::time::now_ms().to_string();
        let nonce = uuid::Uuid::new_v4().simple().to_string();
        let signature = self
            .pair
            .sign(&signed_bytes(subject, &issued_at, &nonce, body))
            .map_err(|e| ProtoError::Credential(e.to_string()))?;
        Ok(vec![
            (HEADER_OPERATOR, self.pair.public_key()),
            (HEADER_ISSUED_AT, issued_at),
            (HEADER_NONCE, nonce),
            (HEADER_SIGNATURE, URL_SAFE_NO_PAD.encode(signature)),
        ])
    }
}

/// A command's signature, as read from its headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandSignature {
    /// The operator's public key.
    pub operator: String,
    /// When it was signed.
    pub issued_at_ms: u64,
    /// Its nonce.
    pub nonce: String,
    /// The signature bytes.
    pub signature: Vec<u8>,
}

impl CommandSignature {
    /// Read the signature from header values looked up by `header`.
    ///
    /// # Errors
    /// [`AuthError::Unsigned`] when a header is missing or malformed.
    pub fn from_headers<'a>(header: impl Fn(&str) -> Option<&'a str>) -> Result<Self, AuthError> {
        let operator = header(HEADER_OPERATOR).ok_or(AuthError::Unsigned)?.to_owned();
        let issued_at_ms = header(HEADER_ISSUED_AT).and_then(|v| v.parse().ok()).ok_or(AuthError::Unsigned)?;
        let nonce = header(HEADER_NONCE).filter(|n| !n.is_empty() && n.len() <= 64).ok_or(AuthError::Unsigned)?;
        let signature =
            header(HEADER_SIGNATURE).and_then(|s| URL_SAFE_NO_PAD.decode(s).ok()).ok_or(AuthError::Unsigned)?;
        Ok(Self { operator, issued_at_ms, nonce: nonce.to_owned(), signature })
    }

    /// Check that one of `trusted` signed `body` for `subject`, within [`COMMAND_WINDOW_MS`] of
    /// `now_ms`. Whether the nonce is new is the caller's to check.
    ///
    /// # Errors
    /// [`AuthError::BadMac`] for an operator not trusted or a signature that does not match;
    /// [`AuthError::OutsideWindow`] for a stale or future command.
    pub fn verify(&self, trusted: &[String], subject: &str, body: &[u8], now_ms: u64) -> Result<(), AuthError> {
        let skew_ms = now_ms.abs_diff(self.issued_at_ms);
        if skew_ms > COMMAND_WINDOW_MS {
            return Err(AuthError::OutsideWindow { skew_ms, window_ms: COMMAND_WINDOW_MS });
        }
        if !trusted.contains(&self.operator) {
            return Err(AuthError::BadMac);
        }
        let key = nkeys::KeyPair::from_public_key(&self.operator).map_err(|_| AuthError::BadMac)?;
        let bytes = signed_bytes(subject, &self.issued_at_ms.to_string(), &self.nonce, body);
        key.verify(&bytes, &self.signature).map_err(|_| AuthError::BadMac)
    }
}

/// What an operator signs: the subject (so a command cannot be moved to another command or
/// host), the time, the nonce and the body.
/// Whether `signature` (from [`OperatorKey::sign_record`]) is `public_key`'s over `bytes`.
pub fn verify_record(public_key: &str, bytes: &[u8], signature: &str) -> bool {
    let Ok(signature) = URL_SAFE_NO_PAD.decode(signature) else { return false };
    nkeys::KeyPair::from_public_key(public_key).is_ok_and(|key| key.verify(bytes, &signature).is_ok())
}

fn signed_bytes(subject: &str, issued_at: &str, nonce: &str, body: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(subject.len() + issued_at.len() + nonce.len() + body.len() + 16);
    for part in [b"ferry-ctl-v1".as_slice(), subject.as_bytes(), issued_at.as_bytes(), nonce.as_bytes()] {
        bytes.extend_from_slice(part);
        bytes.push(b'\n');
    }
    bytes.extend_from_slice(body);
    bytes
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn read(headers: &[(&'static str, String)]) -> CommandSignature {
        let map: HashMap<&str, &str> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        CommandSignature::from_headers(|name| map.get(name).copied()).unwrap()
    }

    #[test]
    fn a_signed_command_verifies_only_unchanged_on_its_subject_for_a_trusted_key() {
        let (key, seed) = OperatorKey::generate().unwrap();
        assert!(seed.starts_with("SO"));
        let trusted = vec![key.public_key()];
        let sig = read(&key.sign("ferry.ctl.v1.l.link.put", b"{}").unwrap());
        let now = crate::time::now_ms();
        assert!(sig.verify(&trusted, "ferry.ctl.v1.l.link.put", b"{}", now).is_ok());
        assert_eq!(sig.verify(&trusted, "ferry.ctl.v1.l.link.del", b"{}", now), Err(AuthError::BadMac));
        assert_eq!(sig.verify(&trusted, "ferry.ctl.v1.l.link.put", b"{ }", now), Err(AuthError::BadMac));
        let (other, _) = OperatorKey::generate().unwrap();
        assert_eq!(sig.verify(&[other.public_key()], "ferry.ctl.v1.l.link.put", b"{}", now), Err(AuthError::BadMac));
        let late = now + COMMAND_WINDOW_MS + 1_000;
        assert!(matches!(
            sig.verify(&trusted, "ferry.ctl.v1.l.link.put", b"{}", late),
            Err(AuthError::OutsideWindow { .. })
        ));
        assert_eq!(OperatorKey::from_seed(&seed).unwrap().public_key(), key.public_key());
        assert!(OperatorKey::from_seed(&nkeys::KeyPair::new_user().seed().unwrap()).is_err());
        assert_eq!(CommandSignature::from_headers(|_| None), Err(AuthError::Unsigned));
    }
}
