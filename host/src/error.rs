//! The host library's error type.

/// What can go wrong building or running a host.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HostError {
    /// NATS could not be reached or refused an operation.
    #[error("NATS error: {0}")]
    Nats(String),
    /// The lattice runtime (bucket, view, streams) failed.
    #[error(transparent)]
    Lattice(#[from] ferry_lattice::LatticeError),
    /// A protocol-level failure (ids, keys, encoding).
    #[error(transparent)]
    Proto(#[from] ferry_proto::ProtoError),
    /// wasmtime refused the configuration or a component.
    #[error("wasmtime: {0:#}")]
    Wasmtime(#[from] wasmtime::Error),
    /// Reading a component failed.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// A request was invalid.
    #[error("{0}")]
    Invalid(String),
}

impl HostError {
    pub(crate) fn nats(err: impl std::fmt::Display) -> Self {
        HostError::Nats(err.to_string())
    }
}
