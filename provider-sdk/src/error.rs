//! The SDK's error type.

/// What can stop a provider from starting or running.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SdkError {
    /// Start-up data is missing or invalid.
    #[error("invalid start-up data: {0}")]
    Startup(String),
    /// NATS could not be reached or refused an operation.
    #[error("NATS error: {0}")]
    Nats(String),
    /// A protocol-level failure (encoding, ids, credential).
    #[error(transparent)]
    Proto(#[from] ferry_proto::ProtoError),
    /// The lattice (NATS, the bucket, a stream) failed.
    #[error(transparent)]
    Lattice(#[from] ferry_lattice::LatticeError),
    /// Reading start-up data failed.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

impl SdkError {
    pub(crate) fn nats(err: impl std::fmt::Display) -> Self {
        SdkError::Nats(err.to_string())
    }
}
