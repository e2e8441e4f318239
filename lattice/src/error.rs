//! The lattice runtime's error type.

/// What can go wrong talking to a lattice.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LatticeError {
    /// NATS could not be reached, refused an operation, or did not answer in time.
    #[error("NATS error: {0}")]
    Nats(String),
    /// A value could not be encoded or decoded, or an argument is invalid.
    #[error("invalid: {0}")]
    Invalid(String),
    /// A protocol-level failure (encoding, ids, credential).
    #[error(transparent)]
    Proto(#[from] ferry_proto::ProtoError),
    /// A local file could not be read or written.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

impl LatticeError {
    pub(crate) fn nats(err: impl std::fmt::Display) -> Self {
        LatticeError::Nats(err.to_string())
    }
}
