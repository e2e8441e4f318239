//! The MACs of invocations and their answers: what each covers, how it is set and checked, and
//! the full check an incoming invocation goes through (channel, freshness, MAC, replay).

use sha2::{Digest, Sha256};

use super::{AuthError, MacKey, ReplayGuard};
use crate::{
    envelope::{Invocation, InvocationResponse},
    subject::Channel,
};

/// An error as MACs cover it: empty when there is none, else the kebab-case kind, a NUL byte
/// and the message.
pub(crate) fn error_bytes(error: Option<&crate::RpcError>) -> Vec<u8> {
    match error {
        Some(err) => {
            let mut bytes = err.kind.as_wit_prefix().as_bytes().to_vec();
            bytes.push(0);
            bytes.extend_from_slice(err.message.as_bytes());
            bytes
        }
        None => Vec::new(),
    }
}

/// A payload stream as MACs cover it: empty when there is none, else the stream id, a NUL byte
/// and the whole size, big-endian.
fn stream_bytes(stream: Option<&crate::envelope::PayloadStream>) -> Vec<u8> {
    match stream {
        Some(stream) => {
            let mut bytes = stream.id.as_bytes().to_vec();
            bytes.push(0);
            bytes.extend_from_slice(&stream.size.to_be_bytes());
            bytes
        }
        None => Vec::new(),
    }
}

impl Invocation {
    fn mac_input<'a>(
        &'a self,
        payload_hash: &'a [u8; 32],
        times: &'a [u8; 16],
        version: &'a [u8; 2],
        stream: &'a [u8],
    ) -> [&'a [u8]; 11] {
        [
            b"ferry/v1/invocation",
            version,
            self.id.as_bytes(),
            self.origin.as_bytes(),
            self.target.as_bytes(),
            self.link_name.as_bytes(),
            self.operation.as_bytes(),
            payload_hash,
            times,
            self.cause.as_bytes(),
            stream,
        ]
    }

    /// Issue time and deadline, big-endian, as the MAC covers them.
    fn times(&self) -> [u8; 16] {
        let mut times = [0u8; 16];
        times[..8].copy_from_slice(&self.issued_at_ms.to_be_bytes());
        times[8..].copy_from_slice(&self.deadline_ms.to_be_bytes());
        times
    }

    /// The trace context as the MAC covers it: each entry as `key=value\n`, in key order.
    /// Empty (and then left out of the MAC, which stays what it was before traces) when the
    /// invocation carries none.
    fn trace_bytes(&self) -> Vec<u8> {
        let mut bytes = Vec::new();
        for (key, value) in &self.trace_context {
            bytes.extend_from_slice(key.as_bytes());
            bytes.push(b'=');
            bytes.extend_from_slice(value.as_bytes());
            bytes.push(b'\n');
        }
        bytes
    }

    /// Call `f` with the parts the MAC covers: the trace context is one more, only when there
    /// is one.
    fn with_mac_parts<R>(&self, f: impl FnOnce(&[&[u8]]) -> R) -> R {
        let hash: [u8; 32] = Sha256::digest(&self.payload).into();
        let times = self.times();
        let version = self.version.to_be_bytes();
        let stream = stream_bytes(self.payload_stream.as_ref());
        let parts = self.mac_input(&hash, &times, &version, &stream);
        if self.trace_context.is_empty() {
            return f(&parts);
        }
        let trace = self.trace_bytes();
        let mut traced: Vec<&[u8]> = parts.to_vec();
        traced.push(&trace);
        f(&traced)
    }

    /// Set the MAC of this invocation under `key`.
    pub fn sign(&mut self, key: &MacKey) {
        self.mac = self.with_mac_parts(|parts| key.mac(parts)).to_vec();
    }

    /// Check the MAC of this invocation under `key`.
    ///
    /// # Errors
    /// [`AuthError::Unsigned`] or [`AuthError::BadMac`].
    pub fn verify_mac(&self, key: &MacKey) -> Result<(), AuthError> {
        self.with_mac_parts(|parts| key.check(parts, &self.mac))
    }
}

impl InvocationResponse {
    fn mac_input_owned(&self) -> ([u8; 2], [u8; 32], Vec<u8>, Vec<u8>) {
        let hash: [u8; 32] = Sha256::digest(&self.payload).into();
        (self.version.to_be_bytes(), hash, error_bytes(self.error.as_ref()), stream_bytes(self.payload_stream.as_ref()))
    }

    /// What the MAC says this is: an answer, or a progress message.
    fn domain(&self) -> &'static [u8] {
        if self.progress { b"ferry/v1/progress" } else { b"ferry/v1/response" }
    }

    /// Set the MAC of this response under `key` (the key of the request it answers).
    pub fn sign(&mut self, key: &MacKey) {
        let (version, hash, error, stream) = self.mac_input_owned();
        self.mac = key.mac(&[self.domain(), &version, self.id.as_bytes(), &hash, &error, &stream]).to_vec();
    }

    /// Check that this response answers `request_id` and carries a valid MAC under `key`.
    ///
    /// # Errors
    /// [`AuthError::WrongResponseId`], [`AuthError::Unsigned`] or [`AuthError::BadMac`].
    pub fn verify(&self, key: &MacKey, request_id: &str) -> Result<(), AuthError> {
        if self.id != request_id {
            return Err(AuthError::WrongResponseId { got: self.id.clone(), expected: request_id.to_owned() });
        }
        let (version, hash, error, stream) = self.mac_input_owned();
        key.check(&[self.domain(), &version, self.id.as_bytes(), &hash, &error, &stream], &self.mac)
    }
}

/// [`verify_invocation`] under whichever of `keys` signed it (tried in order); returns that key,
/// which the answer must be signed with.
///
/// # Errors
/// The first [`AuthError`] found; [`AuthError::BadMac`] when no key verifies.
pub fn verify_invocation_under(
    inv: &Invocation,
    channel: Channel,
    keys: &[MacKey],
    guard: &ReplayGuard,
) -> Result<MacKey, AuthError> {
    let [first, rest @ ..] = keys else { return Err(AuthError::BadMac) };
    if rest.is_empty() {
        return verify_invocation(inv, channel, first, guard).map(|()| first.clone());
    }
    if !channel.admits(&inv.operation) {
        return Err(AuthError::WrongChannel { operation: inv.operation.clone(), channel: channel.name() });
    }
    guard.check_fresh(inv.issued_at_ms)?;
    let Some(key) = keys.iter().find(|key| inv.verify_mac(key).is_ok()) else {
        return Err(inv.verify_mac(first).err().unwrap_or(AuthError::BadMac));
    };
    guard.record(&inv.id, inv.issued_at_ms)?;
    Ok(key.clone())
}

/// Full check of an incoming invocation that arrived on a subject of kind `channel`: the
/// operation belongs there, freshness, MAC under `key`, then replay. The operation is under the
/// MAC, so a captured message cannot be moved to another kind of subject.
///
/// # Errors
/// The first [`AuthError`] found.
pub fn verify_invocation(
    inv: &Invocation,
    channel: Channel,
    key: &MacKey,
    guard: &ReplayGuard,
) -> Result<(), AuthError> {
    if !channel.admits(&inv.operation) {
        return Err(AuthError::WrongChannel { operation: inv.operation.clone(), channel: channel.name() });
    }
    guard.check_fresh(inv.issued_at_ms)?;
    inv.verify_mac(key)?;
    guard.record(&inv.id, inv.issued_at_ms)
}
