//! Errors: [`ProtoError`] for this crate's own failures, and [`RpcError`], the typed error that
//! travels on the wire in an [`InvocationResponse`](crate::envelope::InvocationResponse).

use serde::{Deserialize, Serialize};

/// A failure inside this crate: encoding, decoding, validation or authentication.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProtoError {
    /// A value could not be encoded as MessagePack.
    #[error("failed to encode message: {0}")]
    Encode(#[from] rmp_serde::encode::Error),
    /// Bytes could not be decoded as the expected MessagePack message.
    #[error("failed to decode message: {0}")]
    Decode(#[from] rmp_serde::decode::Error),
    /// Bytes could not be decoded as the expected JSON message.
    #[error("failed to decode JSON message: {0}")]
    Json(#[from] serde_json::Error),
    /// The message carries a protocol version this build does not speak.
    #[error("unsupported protocol version {0} (this build speaks {v})", v = crate::PROTOCOL_VERSION)]
    UnsupportedVersion(u16),
    /// An identifier (lattice, component, provider, link or config name) is not usable.
    #[error("invalid {what} {value:?}: {reason}")]
    InvalidId {
        /// Which kind of identifier.
        what: &'static str,
        /// The offending value.
        value: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// Authentication of a message failed.
    #[error(transparent)]
    Auth(#[from] crate::auth::AuthError),
    /// A credential or key string is malformed.
    #[error("invalid credential: {0}")]
    Credential(String),
    /// A provider's NATS grant (`ferry nats-config --provider ID:GRANTS`) is not usable.
    #[error("invalid provider grant: {0}")]
    Grant(String),
}

/// What went wrong with an invocation, so callers can tell failures apart without parsing text.
///
/// On the wire it is a snake_case string (`"not_linked"`); at the WIT boundary it becomes the
/// prefix of the interface's error string (`"not-linked: …"`, see [`ErrorKind::as_wit_prefix`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorKind {
    /// No link allows this source to call this target over this interface.
    NotLinked,
    /// Authentication failed: unsigned, unknown key, tampered, expired or replayed.
    Denied,
    /// The payload could not be decoded or is invalid for the operation.
    BadRequest,
    /// The target does not implement the operation.
    UnknownOperation,
    /// What the operation names does not exist (a container, an object).
    NotFound,
    /// The envelope's protocol version is not supported.
    UnsupportedVersion,
    /// No answer arrived within the timeout.
    Timeout,
    /// Nobody is serving the target right now (no responders).
    Unavailable,
    /// The provider failed to carry out the operation (backend error).
    ProviderError,
    /// The component trapped or ran out of fuel/time.
    ComponentTrap,
    /// The component ran and answered with an error of its own (e.g. a messaging handler's
    /// `err(string)`).
    ComponentError,
    /// The target is busy (concurrency limit) and shed the request.
    Overloaded,
    /// A value or payload exceeds a limit (of Ferry or of a backend); the message names it.
    TooLarge,
    /// A bug or unexpected condition on the receiving side.
    Internal,
    /// The target took the call up and then stopped answering (it died, or lost its
    /// connection): the call may or may not have been carried out, so it is not sent again
    /// ([`crate::delivery`]).
    Interrupted,
    /// A kind sent by a newer peer that this build does not know.
    #[serde(other)]
    Unknown,
}

impl ErrorKind {
    /// The kebab-case name used as a prefix in WIT error strings (`not-linked`).
    pub fn as_wit_prefix(self) -> &'static str {
        match self {
            ErrorKind::NotLinked => "not-linked",
            ErrorKind::Denied => "denied",
            ErrorKind::BadRequest => "bad-request",
            ErrorKind::UnknownOperation => "unknown-operation",
            ErrorKind::NotFound => "not-found",
            ErrorKind::UnsupportedVersion => "unsupported-version",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::ProviderError => "provider-error",
            ErrorKind::ComponentTrap => "component-trap",
            ErrorKind::ComponentError => "component-error",
            ErrorKind::Overloaded => "overloaded",
            ErrorKind::TooLarge => "too-large",
            ErrorKind::Internal => "internal",
            ErrorKind::Interrupted => "interrupted",
            ErrorKind::Unknown => "unknown",
        }
    }
}

/// A typed invocation error: a kind callers match on and a message for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{}: {message}", kind.as_wit_prefix())]
pub struct RpcError {
    /// What went wrong.
    pub kind: ErrorKind,
    /// Details for logs and people; never contains secrets.
    pub message: String,
}

impl RpcError {
    /// An error of `kind` with `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self { kind, message: message.into() }
    }

    /// Shorthand for [`ErrorKind::NotLinked`].
    pub fn not_linked(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotLinked, message)
    }

    /// Shorthand for [`ErrorKind::BadRequest`].
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::BadRequest, message)
    }

    /// Shorthand for [`ErrorKind::ProviderError`].
    pub fn provider(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::ProviderError, message)
    }

    /// Shorthand for [`ErrorKind::Internal`].
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }
}

impl From<ProtoError> for RpcError {
    fn from(err: ProtoError) -> Self {
        let kind = match &err {
            ProtoError::Auth(_) | ProtoError::Credential(_) => ErrorKind::Denied,
            ProtoError::UnsupportedVersion(_) => ErrorKind::UnsupportedVersion,
            ProtoError::Encode(_) => ErrorKind::Internal,
            _ => ErrorKind::BadRequest,
        };
        RpcError::new(kind, err.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_is_snake_case_on_the_wire_and_unknown_kinds_decode() {
        let err = RpcError::not_linked("no link");
        let bytes = crate::codec::encode(&err).unwrap();
        let back: RpcError = crate::codec::decode(&bytes).unwrap();
        assert_eq!(back, err);
        let json = serde_json::to_string(&ErrorKind::NotLinked).unwrap();
        assert_eq!(json, "\"not_linked\"");
        let future: ErrorKind = serde_json::from_str("\"quota_exceeded\"").unwrap();
        assert_eq!(future, ErrorKind::Unknown);
    }

    #[test]
    fn display_uses_the_wit_prefix() {
        assert_eq!(RpcError::not_linked("x").to_string(), "not-linked: x");
    }
}
