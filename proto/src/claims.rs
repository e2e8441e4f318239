//! Component claims: who a component is, who vouches for it and what it may call, as a JWT
//! signed with an nkey and embedded in the component.
//!
//! The token is the one wasmCloud's `wash claims sign` writes (wascap revision 3): header
//! `{"typ":"jwt","alg":"Ed25519"}`, claims `iss` (the issuer's account key, `A…`), `sub` (the
//! component's own key, `M…`), `iat`, `jti`, optional `exp`/`nbf` in seconds since the epoch, and
//! under `wascap` the component's name, capabilities, tags and the SHA-256 (upper-case hex) of the
//! component without its token. So a component signed for wasmCloud runs on Ferry with its claims
//! checked, and one Ferry signed is readable by wasmCloud's tools. Where the token sits inside the
//! component, and how that hash is taken, is the host's business (`ferry_host::claims`).

use std::collections::BTreeSet;

use base64::Engine as _;
use nkeys::KeyPair;
use serde::{Deserialize, Serialize};

/// The wascap revision written, from which on the module hash is part of the claims.
pub const WASCAP_REVISION: u32 = 3;
/// The largest token read: a component's claims are a few hundred bytes.
pub const MAX_TOKEN_BYTES: usize = 64 * 1024;

const HEADER_TYPE: &str = "jwt";
const HEADER_ALGORITHM: &str = "Ed25519";

/// The claims of one component, field for field as wascap names them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComponentClaims {
    /// Expiry, seconds since the epoch.
    #[serde(rename = "exp", default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<u64>,
    /// Token id.
    #[serde(rename = "jti")]
    pub id: String,
    /// Issue time, seconds since the epoch.
    #[serde(rename = "iat")]
    pub issued_at: u64,
    /// The public key that signed the token (an account key, `A…`).
    #[serde(rename = "iss")]
    pub issuer: String,
    /// The component's own public key (`M…`).
    #[serde(rename = "sub")]
    pub subject: String,
    /// Not valid before, seconds since the epoch.
    #[serde(rename = "nbf", default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<u64>,
    /// What the claims say of the component.
    #[serde(rename = "wascap", default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<ComponentMetadata>,
    /// wascap's revision of the format.
    #[serde(rename = "wascap_revision", default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<u32>,
}

/// The `wascap` part of a component's claims.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComponentMetadata {
    /// A descriptive name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// SHA-256 of the component without its token, upper-case hex.
    #[serde(rename = "hash")]
    pub module_hash: String,
    /// Free-form tags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
    /// Capabilities it may call ([`ComponentClaims::allows`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caps: Option<Vec<String>>,
    /// A revision number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rev: Option<i32>,
    /// A version string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ver: Option<String>,
    /// A short alias.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_alias: Option<String>,
    /// Whether the subject is a capability provider (always false for a component).
    #[serde(rename = "prov", default)]
    pub provider: bool,
}

#[derive(Debug, Serialize, Deserialize)]
struct Header {
    #[serde(rename = "typ")]
    kind: String,
    #[serde(rename = "alg")]
    algorithm: String,
}

/// Why a component's claims do not admit it. Each kind has a stable [`reason`](Self::reason),
/// carried by the `policy_denied` event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClaimsError {
    /// The token cannot be read: not three segments, bad base64 or JSON, a wrong header.
    #[error("the component's claims cannot be read: {0}")]
    Malformed(String),
    /// The signature does not verify under the issuer's key.
    #[error("the component's claims are not signed by their issuer {issuer}")]
    BadSignature {
        /// The claimed issuer.
        issuer: String,
    },
    /// The component's bytes are not those the claims were signed over.
    #[error("the component was changed after it was signed: its hash is {actual}, its claims say {signed}")]
    Tampered {
        /// The hash in the claims.
        signed: String,
        /// The hash of the bytes at hand.
        actual: String,
    },
    /// Past its expiry.
    #[error("the component's claims expired at {expires} (seconds since the epoch; now {now})")]
    Expired {
        /// `exp`.
        expires: u64,
        /// The host's clock.
        now: u64,
    },
    /// Before its `nbf`.
    #[error("the component's claims are not valid before {not_before} (seconds since the epoch; now {now})")]
    NotYetValid {
        /// `nbf`.
        not_before: u64,
        /// The host's clock.
        now: u64,
    },
    /// Signed by a key the host does not trust.
    #[error("the component's claims are issued by {issuer}, which is not an allowed issuer here")]
    IssuerNotAllowed {
        /// The issuer.
        issuer: String,
    },
    /// No claims, where the host requires them.
    #[error("the component carries no signed claims, and this host runs only signed components")]
    Unsigned,
}

impl ClaimsError {
    /// A stable, machine-readable name of the kind: `malformed`, `bad_signature`, `tampered`,
    /// `expired`, `not_yet_valid`, `issuer_not_allowed`, `unsigned`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Malformed(_) => "malformed",
            Self::BadSignature { .. } => "bad_signature",
            Self::Tampered { .. } => "tampered",
            Self::Expired { .. } => "expired",
            Self::NotYetValid { .. } => "not_yet_valid",
            Self::IssuerNotAllowed { .. } => "issuer_not_allowed",
            Self::Unsigned => "unsigned",
        }
    }
}

impl ComponentClaims {
    /// Claims for a component keyed `subject`, issued now by `issuer`, with `metadata` (whose
    /// hash [`encode`](Self::encode)'s caller fills in).
    pub fn new(issuer: &str, subject: &str, metadata: ComponentMetadata) -> Self {
        Self {
            expires: None,
            id: uuid::Uuid::new_v4().simple().to_string(),
            issued_at: crate::time::now_ms() / 1000,
            issuer: issuer.to_owned(),
            subject: subject.to_owned(),
            not_before: None,
            metadata: Some(metadata),
            revision: Some(WASCAP_REVISION),
        }
    }

    /// The signed token: `header.claims.signature`, each base64url without padding, signed by
    /// `issuer` (whose public key must be [`ComponentClaims::issuer`]).
    ///
    /// # Errors
    /// [`ClaimsError::Malformed`] when the key is not the issuer's or cannot sign.
    pub fn encode(&self, issuer: &KeyPair) -> Result<String, ClaimsError> {
        if issuer.public_key() != self.issuer {
            return Err(ClaimsError::Malformed(format!(
                "the signing key is {}, not the issuer {}",
                issuer.public_key(),
                self.issuer
            )));
        }
        let header = Header { kind: HEADER_TYPE.into(), algorithm: HEADER_ALGORITHM.into() };
        let signed = format!("{}.{}", segment(&header)?, segment(self)?);
        let signature = issuer.sign(signed.as_bytes()).map_err(|e| ClaimsError::Malformed(e.to_string()))?;
        Ok(format!("{signed}.{}", b64().encode(signature)))
    }

    /// The claims of `token` if its signature verifies under the issuer it names.
    ///
    /// # Errors
    /// [`ClaimsError::Malformed`] or [`ClaimsError::BadSignature`].
    pub fn decode_verified(token: &str) -> Result<Self, ClaimsError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(ClaimsError::Malformed(format!(
                "a token of {} bytes (at most {MAX_TOKEN_BYTES})",
                token.len()
            )));
        }
        let segments: Vec<&str> = token.trim().split('.').collect();
        let [header, claims, signature] = segments[..] else {
            return Err(ClaimsError::Malformed(format!("{} segments, not 3", segments.len())));
        };
        let decode = |what: &str, segment: &str| {
            b64().decode(segment).map_err(|e| ClaimsError::Malformed(format!("the {what} is not base64url: {e}")))
        };
        let head: Header = serde_json::from_slice(&decode("header", header)?)
            .map_err(|e| ClaimsError::Malformed(format!("the header: {e}")))?;
        if head.algorithm != HEADER_ALGORITHM || head.kind != HEADER_TYPE {
            return Err(ClaimsError::Malformed(format!(
                "header typ {:?} alg {:?}, not {HEADER_TYPE:?} {HEADER_ALGORITHM:?}",
                head.kind, head.algorithm
            )));
        }
        let parsed: Self = serde_json::from_slice(&decode("claims", claims)?)
            .map_err(|e| ClaimsError::Malformed(format!("the claims: {e}")))?;
        if parsed.subject.is_empty() {
            return Err(ClaimsError::Malformed("no subject".into()));
        }
        let bad = || ClaimsError::BadSignature { issuer: parsed.issuer.clone() };
        let key = KeyPair::from_public_key(&parsed.issuer).map_err(|_| bad())?;
        let signature = decode("signature", signature)?;
        key.verify(format!("{header}.{claims}").as_bytes(), &signature).map_err(|_| bad())?;
        Ok(parsed)
    }

    /// Whether the claims admit a component whose bytes hash to `module_hash` at `now` (seconds
    /// since the epoch), from an issuer in `allowed` (any issuer when empty).
    ///
    /// # Errors
    /// The first reason they do not, in the order: tampered, expired, not yet valid, issuer.
    pub fn admit(&self, module_hash: &str, now: u64, allowed: &[String]) -> Result<(), ClaimsError> {
        let signed = self.metadata.as_ref().map(|m| m.module_hash.as_str()).unwrap_or_default();
        if !signed.eq_ignore_ascii_case(module_hash) {
            return Err(ClaimsError::Tampered { signed: signed.to_owned(), actual: module_hash.to_owned() });
        }
        if let Some(expires) = self.expires
            && expires < now
        {
            return Err(ClaimsError::Expired { expires, now });
        }
        if let Some(not_before) = self.not_before
            && now < not_before
        {
            return Err(ClaimsError::NotYetValid { not_before, now });
        }
        if !allowed.is_empty() && !allowed.contains(&self.issuer) {
            return Err(ClaimsError::IssuerNotAllowed { issuer: self.issuer.clone() });
        }
        Ok(())
    }

    /// The capabilities the claims grant, or `None` when they list none: wasmCloud 1.x does not
    /// enforce capability claims, and `wash` signs with none, so an empty list restricts nothing
    /// (docs/security.md).
    pub fn capabilities(&self) -> Option<Capabilities> {
        let caps = self.metadata.as_ref()?.caps.as_ref().filter(|c| !c.is_empty())?;
        Some(Capabilities(caps.iter().map(|c| c.trim().to_owned()).collect()))
    }
}

/// The capabilities a component's claims grant: each a WIT package (`wasi:keyvalue`), one of its
/// interfaces (`wasi:keyvalue/atomics`), or wascap's name for it (`wasmcloud:keyvalue`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capabilities(BTreeSet<String>);

impl Capabilities {
    /// Whether a call to interface `namespace:package/interface` is granted.
    pub fn allows(&self, namespace: &str, package: &str, interface: &str) -> bool {
        let package_name = format!("{namespace}:{package}");
        self.0.contains(&package_name)
            || self.0.contains(&format!("{package_name}/{interface}"))
            || wascap_name(namespace, package, interface).is_some_and(|name| self.0.contains(name))
    }

    /// The capability a call to `namespace:package/interface` needs, as the error names it.
    pub fn needed(namespace: &str, package: &str, interface: &str) -> String {
        match wascap_name(namespace, package, interface) {
            Some(name) => format!("{namespace}:{package} (or {name})"),
            None => format!("{namespace}:{package}"),
        }
    }
}

/// wascap's standard capability name for an interface, where it has one.
fn wascap_name(namespace: &str, package: &str, interface: &str) -> Option<&'static str> {
    Some(match (namespace, package, interface) {
        ("wasi", "keyvalue", _) => "wasmcloud:keyvalue",
        ("wasi", "blobstore", _) => "wasmcloud:blobstore",
        ("wasi", "http", "outgoing-handler") => "wasmcloud:httpclient",
        ("wasi", "http", "incoming-handler") => "wasmcloud:httpserver",
        ("wasmcloud", "messaging", _) => "wasmcloud:messaging",
        _ => return None,
    })
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
}

/// One token segment: `value` as JSON, base64url.
fn segment<T: Serialize>(value: &T) -> Result<String, ClaimsError> {
    serde_json::to_vec(value).map(|json| b64().encode(json)).map_err(|e| ClaimsError::Malformed(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signed(caps: Option<Vec<String>>) -> (KeyPair, String) {
        let account = KeyPair::new_account();
        let module = KeyPair::new_module();
        let metadata =
            ComponentMetadata { name: Some("t".into()), module_hash: "AB".into(), caps, ..Default::default() };
        let claims = ComponentClaims::new(&account.public_key(), &module.public_key(), metadata);
        let token = claims.encode(&account).unwrap();
        (account, token)
    }

    #[test]
    fn a_token_round_trips_and_a_changed_byte_breaks_its_signature() {
        let (account, token) = signed(None);
        let claims = ComponentClaims::decode_verified(&token).unwrap();
        assert_eq!(claims.issuer, account.public_key());
        assert_eq!(claims.admit("ab", claims.issued_at, &[]), Ok(()));
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        let mut json: serde_json::Value = serde_json::from_slice(&b64().decode(&parts[1]).unwrap()).unwrap();
        json["wascap"]["caps"] = serde_json::json!(["wasi:blobstore"]);
        parts[1] = b64().encode(serde_json::to_vec(&json).unwrap());
        let err = ComponentClaims::decode_verified(&parts.join(".")).unwrap_err();
        assert_eq!(err.reason(), "bad_signature");
    }

    #[test]
    fn time_window_hash_and_issuer_are_checked() {
        let (_, token) = signed(None);
        let mut claims = ComponentClaims::decode_verified(&token).unwrap();
        let now = claims.issued_at;
        assert_eq!(claims.admit("CD", now, &[]).unwrap_err().reason(), "tampered");
        assert_eq!(claims.admit("AB", now, &["AOTHER".into()]).unwrap_err().reason(), "issuer_not_allowed");
        claims.expires = Some(now - 1);
        assert_eq!(claims.admit("AB", now, &[]).unwrap_err().reason(), "expired");
        claims.expires = None;
        claims.not_before = Some(now + 60);
        assert_eq!(claims.admit("AB", now, &[]).unwrap_err().reason(), "not_yet_valid");
    }

    #[test]
    fn capabilities_name_packages_interfaces_or_wascap_names() {
        let caps = |list: &[&str]| {
            let (_, token) = signed(Some(list.iter().map(|c| (*c).to_owned()).collect()));
            ComponentClaims::decode_verified(&token).unwrap().capabilities()
        };
        assert_eq!(caps(&[]), None);
        let kv = caps(&["wasmcloud:keyvalue"]).unwrap();
        assert!(kv.allows("wasi", "keyvalue", "store"));
        assert!(!kv.allows("wasi", "blobstore", "blobstore"));
        let atomics = caps(&["wasi:keyvalue/atomics", "ferry:test"]).unwrap();
        assert!(atomics.allows("wasi", "keyvalue", "atomics"));
        assert!(!atomics.allows("wasi", "keyvalue", "store"));
        assert!(atomics.allows("ferry", "test", "anything"));
    }

    #[test]
    fn garbage_is_malformed_not_a_panic() {
        for token in ["", "a.b", "a.b.c", "....", "eyJ0eXAiOiJqd3QifQ.e30.AA"] {
            assert_eq!(ComponentClaims::decode_verified(token).unwrap_err().reason(), "malformed", "{token}");
        }
    }
}
