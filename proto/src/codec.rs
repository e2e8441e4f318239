//! MessagePack encoding with named fields, so peers in other languages decode maps, not tuples.

use serde::{Serialize, de::DeserializeOwned};

use crate::ProtoError;

/// Encode `value` as MessagePack with field names.
///
/// # Errors
/// Fails only if the value cannot be represented (a serializer bug, in practice).
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, ProtoError> {
    Ok(rmp_serde::to_vec_named(value)?)
}

/// Decode MessagePack bytes into `T`.
///
/// # Errors
/// [`ProtoError::Decode`] when the bytes are not a valid `T`; never panics on garbage.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ProtoError> {
    Ok(rmp_serde::from_slice(bytes)?)
}

/// Hex dump of bytes, 16 per line, as printed in docs/protocol.md.
pub fn hex_dump(bytes: &[u8]) -> String {
    bytes
        .chunks(16)
        .map(|line| line.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join("\n")
}
