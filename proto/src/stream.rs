//! Bodies larger than one NATS message: a pulled, chunked stream.
//!
//! A payload that carries a body (an HTTP request or response, later a blob) holds the first
//! part inline and, when more follows, the id of a stream. The side that has the bytes (the
//! *offerer*) subscribes to [`crate::subject::stream`] before it sends the payload that names
//! the stream; the other side pulls chunk `0`, `1`, … with [`StreamPull`] requests and gets one
//! [`StreamChunk`] per pull. Nothing is sent that was not asked for, so each side holds at most
//! a chunk or two whatever the body's size, and a slow reader slows the writer down instead of
//! filling memory. Both messages carry a MAC under the key of the invocation the stream belongs
//! to, so a NATS client without that key can neither inject data nor steal chunks.

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::{
    ProtoError, RpcError,
    auth::{self, AuthError, MacKey},
    codec,
};

/// Largest chunk a Ferry process sends: well under NATS's default 1 MiB max payload, with room
/// for the envelope around it.
pub const DEFAULT_CHUNK_SIZE: usize = 256 * 1024;

/// Largest payload a Ferry process sends inline in an envelope; the rest of a larger one
/// travels as a stream named by the envelope's `payload_stream`.
pub const INLINE_PAYLOAD_LIMIT: usize = DEFAULT_CHUNK_SIZE;

/// Largest whole payload (inline part and stream) a Ferry process accepts: it holds the whole
/// payload in memory to decode it, so this bounds what one invocation can make it allocate.
/// Bodies and blobs do not count: they stream past their payload.
pub const MAX_PAYLOAD_SIZE: u64 = 64 << 20;

/// A request for chunk `seq` of a stream, or (with `cancel`) the news that the reader is done.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamPull {
    /// Which stream.
    pub stream: String,
    /// The chunk wanted: the first pull asks for 0, each next one for one more. Asking again
    /// for the last chunk served gets it again (a lost reply).
    pub seq: u64,
    /// The reader will pull no more: the offerer drops the body now.
    #[serde(default)]
    pub cancel: bool,
    /// HMAC-SHA256 under the invocation's key.
    #[serde(with = "serde_bytes", default)]
    pub mac: Vec<u8>,
}

/// One chunk of a stream: data, the end, or a typed error that ends it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamChunk {
    /// Which stream.
    pub stream: String,
    /// The chunk's number, as pulled.
    pub seq: u64,
    /// Bytes of the body (may be empty, e.g. with `end`).
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
    /// This is the last chunk.
    pub end: bool,
    /// The body failed; no more chunks follow.
    #[serde(default)]
    pub error: Option<RpcError>,
    /// HMAC-SHA256 under the invocation's key.
    #[serde(with = "serde_bytes", default)]
    pub mac: Vec<u8>,
}

impl StreamPull {
    /// A signed pull for chunk `seq`.
    pub fn new(stream: &str, seq: u64, cancel: bool, key: &MacKey) -> Self {
        let mut pull = Self { stream: stream.to_owned(), seq, cancel, mac: Vec::new() };
        let seq = pull.seq.to_be_bytes();
        pull.mac = key.mac(&pull.mac_input(&seq)).to_vec();
        pull
    }

    fn mac_input<'a>(&'a self, seq: &'a [u8; 8]) -> [&'a [u8]; 4] {
        [b"ferry/v1/pull", self.stream.as_bytes(), bool_bytes(self.cancel), seq]
    }

    /// Check the MAC and that the pull is for `stream`.
    ///
    /// # Errors
    /// [`AuthError::Unsigned`], [`AuthError::BadMac`], [`AuthError::WrongTarget`].
    pub fn verify(&self, key: &MacKey, stream: &str) -> Result<(), AuthError> {
        if self.stream != stream {
            return Err(AuthError::WrongTarget { target: self.stream.clone(), expected: stream.to_owned() });
        }
        key.check(&self.mac_input(&self.seq.to_be_bytes()), &self.mac)
    }

    /// MessagePack bytes.
    ///
    /// # Errors
    /// Only if encoding fails (never for this type).
    pub fn encode(&self) -> Result<Vec<u8>, ProtoError> {
        codec::encode(self)
    }

    /// Decode a pull.
    ///
    /// # Errors
    /// [`ProtoError::Decode`] for malformed bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, ProtoError> {
        codec::decode(bytes)
    }
}

impl StreamChunk {
    /// A signed chunk carrying `data` (`end` when it is the last).
    pub fn data(stream: &str, seq: u64, data: Vec<u8>, end: bool, key: &MacKey) -> Self {
        Self::signed(Self { stream: stream.to_owned(), seq, data, end, error: None, mac: Vec::new() }, key)
    }

    /// A signed chunk that ends the stream with `error`.
    pub fn failed(stream: &str, seq: u64, error: RpcError, key: &MacKey) -> Self {
        Self::signed(
            Self { stream: stream.to_owned(), seq, data: Vec::new(), end: true, error: Some(error), mac: Vec::new() },
            key,
        )
    }

    fn signed(mut self, key: &MacKey) -> Self {
        let (hash, error) = self.hashed();
        let seq = self.seq.to_be_bytes();
        self.mac = key.mac(&self.mac_input(&seq, &hash, &error)).to_vec();
        self
    }

    fn hashed(&self) -> ([u8; 32], Vec<u8>) {
        let hash: [u8; 32] = Sha256::digest(&self.data).into();
        (hash, auth::error_bytes(self.error.as_ref()))
    }

    fn mac_input<'a>(&'a self, seq: &'a [u8; 8], hash: &'a [u8; 32], error: &'a [u8]) -> [&'a [u8]; 6] {
        [b"ferry/v1/chunk", self.stream.as_bytes(), seq, hash, bool_bytes(self.end), error]
    }

    /// Check the MAC and that this chunk is number `seq` of `stream`.
    ///
    /// # Errors
    /// [`AuthError::Unsigned`], [`AuthError::BadMac`], [`AuthError::WrongResponseId`] for a
    /// chunk of another stream or position.
    pub fn verify(&self, key: &MacKey, stream: &str, seq: u64) -> Result<(), AuthError> {
        if self.stream != stream || self.seq != seq {
            return Err(AuthError::WrongResponseId {
                got: format!("{}#{}", self.stream, self.seq),
                expected: format!("{stream}#{seq}"),
            });
        }
        let (hash, error) = self.hashed();
        key.check(&self.mac_input(&self.seq.to_be_bytes(), &hash, &error), &self.mac)
    }

    /// MessagePack bytes.
    ///
    /// # Errors
    /// Only if encoding fails (never for this type).
    pub fn encode(&self) -> Result<Vec<u8>, ProtoError> {
        codec::encode(self)
    }

    /// Decode a chunk.
    ///
    /// # Errors
    /// [`ProtoError::Decode`] for malformed bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, ProtoError> {
        codec::decode(bytes)
    }
}

fn bool_bytes(value: bool) -> &'static [u8] {
    if value { b"\x01" } else { b"\x00" }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    fn key(byte: u8) -> MacKey {
        MacKey::from_bytes([byte; 32])
    }

    #[test]
    fn pulls_round_trip_and_verify() {
        let pull = StreamPull::new("s1", 3, false, &key(1));
        let back = StreamPull::decode(&pull.encode().unwrap()).unwrap();
        assert_eq!(back, pull);
        back.verify(&key(1), "s1").unwrap();
        assert!(back.verify(&key(2), "s1").is_err(), "wrong key accepted");
        assert!(back.verify(&key(1), "s2").is_err(), "wrong stream accepted");
        let mut tampered = back.clone();
        tampered.seq = 4;
        assert_eq!(tampered.verify(&key(1), "s1"), Err(AuthError::BadMac));
        tampered = back;
        tampered.cancel = true;
        assert_eq!(tampered.verify(&key(1), "s1"), Err(AuthError::BadMac));
    }

    #[test]
    fn chunks_round_trip_and_verify() {
        let chunk = StreamChunk::data("s1", 0, vec![0, 1, 255], false, &key(1));
        let back = StreamChunk::decode(&chunk.encode().unwrap()).unwrap();
        assert_eq!(back, chunk);
        back.verify(&key(1), "s1", 0).unwrap();
        assert!(back.verify(&key(1), "s1", 1).is_err(), "wrong position accepted");
        let mut tampered = back.clone();
        tampered.data[0] = 9;
        assert_eq!(tampered.verify(&key(1), "s1", 0), Err(AuthError::BadMac));
        tampered = back;
        tampered.end = true;
        assert_eq!(tampered.verify(&key(1), "s1", 0), Err(AuthError::BadMac));

        let failed = StreamChunk::failed("s1", 2, RpcError::new(ErrorKind::Timeout, "slow"), &key(1));
        let back = StreamChunk::decode(&failed.encode().unwrap()).unwrap();
        back.verify(&key(1), "s1", 2).unwrap();
        assert!(back.end);
        assert_eq!(back.error.unwrap().kind, ErrorKind::Timeout);
    }

    #[test]
    fn garbage_never_panics() {
        for bytes in [&b""[..], b"\x80", b"\xff\xff", b"garbage", &[0x92, 0xa1, 0x73]] {
            assert!(StreamPull::decode(bytes).is_err());
            assert!(StreamChunk::decode(bytes).is_err());
        }
    }
}
