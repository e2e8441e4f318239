//! The invocation envelope: every request and reply on `ferry.rpc…`, and every host → provider
//! control message (link put/del, health, shutdown), is one of these two types.

use std::{collections::BTreeMap, time::Duration};

use serde::{Deserialize, Serialize};

use crate::{PROTOCOL_VERSION, ProtoError, RpcError, codec, time};

/// The part of a payload that did not fit in its envelope: offered as a pulled stream
/// ([`crate::stream`]) under the envelope's key by whoever sent the envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayloadStream {
    /// The stream the rest of the payload is pulled from.
    pub id: String,
    /// The size of the whole payload, inline part included: a receiver refuses one over its
    /// limit before pulling a byte, and one whose stream delivers another size.
    pub size: u64,
}

/// A call from `origin` to `target`: run `operation` with `payload`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invocation {
    /// Protocol version ([`PROTOCOL_VERSION`]).
    pub version: u16,
    /// Unique id (a UUID); the response carries it back and replay protection keys on it.
    pub id: String,
    /// Who calls: a component id or a provider id.
    pub origin: String,
    /// Who is called: a component id or a provider id.
    pub target: String,
    /// The link name the caller used (`default` unless the component chose another).
    pub link_name: String,
    /// The WIT function, `wasi:keyvalue/store.get`.
    pub operation: String,
    /// MessagePack-encoded arguments of the operation: all of them, or the first part when
    /// `payload_stream` names a stream with the rest.
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
    /// A payload larger than one message: where the rest is pulled from and the whole size.
    /// Authenticated.
    #[serde(default)]
    pub payload_stream: Option<PayloadStream>,
    /// W3C trace context (`traceparent`, `tracestate`).
    #[serde(default)]
    pub trace_context: BTreeMap<String, String>,
    /// When the caller issued it, in milliseconds since the Unix epoch.
    pub issued_at_ms: u64,
    /// When the caller stops waiting for the answer, in milliseconds since the Unix epoch; 0
    /// when it sets no deadline. Authenticated: receivers stop work whose deadline passed.
    #[serde(default)]
    pub deadline_ms: u64,
    /// What the lattice-wide replay record keys a state-changing invocation on:
    /// `{parent id}.{n}` for the n-th state-changing call a component made while serving the
    /// invocation `parent` (whose own replay key stands for it); the first attempt's id for a
    /// call sent again ([`Invocation::reissue`]); empty for a first attempt with no parent (its
    /// own id counts). A replayed parent, run again anywhere, makes calls with the same causes,
    /// and the providers refuse them. Authenticated.
    #[serde(default)]
    pub cause: String,
    /// HMAC-SHA256 over the canonical form (see [`crate::auth`]); empty when unsigned.
    #[serde(with = "serde_bytes", default)]
    pub mac: Vec<u8>,
}

impl Invocation {
    /// The key of this invocation in the lattice-wide replay record: its cause, or its id.
    pub fn replay_key(&self) -> &str {
        if self.cause.is_empty() { &self.id } else { &self.cause }
    }

    /// A fresh, unsigned invocation issued now with a new id.
    pub fn new(
        origin: impl Into<String>,
        target: impl Into<String>,
        link_name: impl Into<String>,
        operation: impl Into<String>,
        payload: Vec<u8>,
    ) -> Self {
        Self {
            version: PROTOCOL_VERSION,
            id: uuid::Uuid::new_v4().simple().to_string(),
            origin: origin.into(),
            target: target.into(),
            link_name: link_name.into(),
            operation: operation.into(),
            payload,
            payload_stream: None,
            trace_context: BTreeMap::new(),
            issued_at_ms: time::now_ms(),
            deadline_ms: 0,
            cause: String::new(),
            mac: Vec::new(),
        }
    }

    /// Make this the next attempt of the same call: a new id, issued now, with the same deadline
    /// and the same replay key (sign afterwards). For an attempt that was never taken up, or a
    /// read-only one whose receiver stopped ([`crate::delivery`]): should the earlier attempt
    /// have run after all, the lattice refuses this one's state changes as replays.
    pub fn reissue(&mut self) {
        if self.cause.is_empty() {
            self.cause = std::mem::take(&mut self.id);
        }
        self.id = uuid::Uuid::new_v4().simple().to_string();
        self.issued_at_ms = time::now_ms();
    }

    /// Set the deadline to `timeout` after the issue time (sign afterwards: the MAC covers it).
    pub fn set_timeout(&mut self, timeout: Duration) {
        let ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        self.deadline_ms = self.issued_at_ms.saturating_add(ms.max(1));
    }

    /// How long the caller still waits, from the receiver's clock; `None` without a deadline,
    /// zero once it has passed.
    pub fn remaining(&self) -> Option<Duration> {
        (self.deadline_ms != 0).then(|| Duration::from_millis(self.deadline_ms.saturating_sub(time::now_ms())))
    }

    /// MessagePack bytes of this invocation.
    ///
    /// # Errors
    /// Only if encoding fails (never for this type).
    pub fn encode(&self) -> Result<Vec<u8>, ProtoError> {
        codec::encode(self)
    }

    /// Decode an invocation and check its protocol version.
    ///
    /// # Errors
    /// [`ProtoError::Decode`] for malformed bytes, [`ProtoError::UnsupportedVersion`] for a
    /// version this build does not speak.
    pub fn decode(bytes: &[u8]) -> Result<Self, ProtoError> {
        let inv: Invocation = codec::decode(bytes)?;
        if inv.version != PROTOCOL_VERSION {
            return Err(ProtoError::UnsupportedVersion(inv.version));
        }
        Ok(inv)
    }
}

/// The answer to an [`Invocation`]: a payload or a typed error, bound to the request id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvocationResponse {
    /// Protocol version ([`PROTOCOL_VERSION`]).
    pub version: u16,
    /// The id of the invocation this answers.
    pub id: String,
    /// MessagePack-encoded result when `error` is `None`: all of it, or the first part when
    /// `payload_stream` names a stream with the rest.
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
    /// A result larger than one message: where the rest is pulled from and the whole size.
    /// Authenticated.
    #[serde(default)]
    pub payload_stream: Option<PayloadStream>,
    /// What went wrong, if anything.
    pub error: Option<RpcError>,
    /// HMAC-SHA256 over the canonical form; empty when unsigned (possible only for errors a
    /// receiver sends before it knows a key, such as a malformed envelope).
    #[serde(with = "serde_bytes", default)]
    pub mac: Vec<u8>,
    /// `true` for a progress message: not the answer, but the receiver's word that it took the
    /// invocation up and is still at work on it ([`crate::delivery`]). Authenticated (a MAC of
    /// its own kind, so a progress message never passes for an answer). Left out when `false`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub progress: bool,
}

impl InvocationResponse {
    /// An unsigned progress message for request `id`.
    pub fn progress(id: impl Into<String>) -> Self {
        Self { progress: true, ..Self::ok(id, Vec::new()) }
    }

    /// A successful, unsigned response to request `id`.
    pub fn ok(id: impl Into<String>, payload: Vec<u8>) -> Self {
        Self {
            version: PROTOCOL_VERSION,
            id: id.into(),
            payload,
            payload_stream: None,
            error: None,
            mac: Vec::new(),
            progress: false,
        }
    }

    /// A failed, unsigned response to request `id`.
    pub fn err(id: impl Into<String>, error: RpcError) -> Self {
        Self {
            version: PROTOCOL_VERSION,
            id: id.into(),
            payload: Vec::new(),
            payload_stream: None,
            error: Some(error),
            mac: Vec::new(),
            progress: false,
        }
    }

    /// MessagePack bytes of this response.
    ///
    /// # Errors
    /// Only if encoding fails (never for this type).
    pub fn encode(&self) -> Result<Vec<u8>, ProtoError> {
        codec::encode(self)
    }

    /// Decode a response and check its protocol version.
    ///
    /// # Errors
    /// [`ProtoError::Decode`] for malformed bytes, [`ProtoError::UnsupportedVersion`] for a
    /// version this build does not speak.
    pub fn decode(bytes: &[u8]) -> Result<Self, ProtoError> {
        let resp: InvocationResponse = codec::decode(bytes)?;
        if resp.version != PROTOCOL_VERSION {
            return Err(ProtoError::UnsupportedVersion(resp.version));
        }
        Ok(resp)
    }

    /// The payload on success, the typed error otherwise.
    ///
    /// # Errors
    /// The response's [`RpcError`].
    pub fn into_result(self) -> Result<Vec<u8>, RpcError> {
        match self.error {
            Some(err) => Err(err),
            None => Ok(self.payload),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn invocation_round_trips() {
        let mut inv = Invocation::new("c", "p", "default", "wasi:keyvalue/store.get", vec![1, 2, 3]);
        inv.trace_context.insert("traceparent".into(), "00-abc-def-01".into());
        inv.mac = vec![9; 32];
        assert_eq!(Invocation::decode(&inv.encode().unwrap()).unwrap(), inv);
    }

    #[test]
    fn response_round_trips_both_ways() {
        let ok = InvocationResponse::ok("id1", vec![0x80]);
        assert_eq!(InvocationResponse::decode(&ok.encode().unwrap()).unwrap(), ok);
        let err = InvocationResponse::err("id2", RpcError::not_linked("nope"));
        let back = InvocationResponse::decode(&err.encode().unwrap()).unwrap();
        assert_eq!(back.into_result().unwrap_err().kind, ErrorKind::NotLinked);
    }

    #[test]
    fn other_versions_are_rejected() {
        let mut inv = Invocation::new("c", "p", "default", "op", vec![]);
        inv.version = 99;
        let bytes = codec::encode(&inv).unwrap();
        assert!(matches!(Invocation::decode(&bytes), Err(ProtoError::UnsupportedVersion(99))));
    }

    #[test]
    fn garbage_never_panics() {
        let mut state = 0x1234_5678_u32;
        for len in 0..200 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 17;
                    state ^= state << 5;
                    state as u8
                })
                .collect();
            let _ = Invocation::decode(&bytes);
            let _ = InvocationResponse::decode(&bytes);
        }
        assert!(Invocation::decode(b"").is_err());
    }
}
