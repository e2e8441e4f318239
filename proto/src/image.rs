//! Component references: what `component.start` and `component.update` name to run.
//!
//! A control command never makes a host read a path it was told to read. A component is
//! either content uploaded into the lattice — `sha256:{hex}`, stored under that digest in the
//! lattice's object store ([`crate::subject::component_store`]) and verified against it when a
//! host fetches it — or a file on the host, `file:{absolute path}`, which the host runs only
//! from a directory it was started to allow (`--allow-file-dir`).

use std::{fmt, path::PathBuf};

use sha2::{Digest as _, Sha256};

use crate::ProtoError;

/// The largest component a host fetches from the lattice, in bytes.
pub const MAX_COMPONENT_BYTES: u64 = 256 * 1024 * 1024;

/// Where a component comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ImageRef {
    /// Uploaded into the lattice: the SHA-256 of its bytes, lower-case hex.
    Lattice {
        /// 64 lower-case hex digits.
        digest: String,
    },
    /// A file on the host, by absolute path.
    File(PathBuf),
}

impl ImageRef {
    /// The reference of `bytes` uploaded into the lattice.
    pub fn of_bytes(bytes: &[u8]) -> Self {
        ImageRef::Lattice { digest: sha256_hex(bytes) }
    }

    /// Read a reference: `sha256:{64 hex digits}`, `file:{absolute path}` or an absolute path.
    ///
    /// # Errors
    /// [`ProtoError::InvalidId`] for anything else: a relative path (relative to what, on a
    /// host?), a malformed digest, or a scheme this build does not fetch.
    pub fn parse(reference: &str) -> Result<Self, ProtoError> {
        let invalid = |reason| ProtoError::InvalidId { what: "component reference", value: reference.into(), reason };
        if let Some(digest) = reference.strip_prefix("sha256:") {
            if digest.len() != 64 || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(invalid("a lattice reference is sha256: and 64 hex digits"));
            }
            return Ok(ImageRef::Lattice { digest: digest.to_ascii_lowercase() });
        }
        let path = reference.strip_prefix("file://").or_else(|| reference.strip_prefix("file:")).unwrap_or(reference);
        if path.starts_with('/') {
            return Ok(ImageRef::File(PathBuf::from(path)));
        }
        if reference.contains("://") {
            return Err(invalid("unsupported scheme: upload the file into the lattice (sha256:…) or name a host file"));
        }
        Err(invalid("a host file must be named by its absolute path; upload a local file into the lattice instead"))
    }

    /// Whether `bytes` are what this reference names (always true for a host file).
    pub fn matches(&self, bytes: &[u8]) -> bool {
        match self {
            ImageRef::Lattice { digest } => sha256_hex(bytes) == *digest,
            ImageRef::File(_) => true,
        }
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImageRef::Lattice { digest } => write!(f, "sha256:{digest}"),
            ImageRef::File(path) => write!(f, "file:{}", path.display()),
        }
    }
}

/// Lower-case hex SHA-256 of `bytes`: a component's digest.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_parse_and_print_back() {
        let digest = sha256_hex(b"wasm");
        let lattice = ImageRef::parse(&format!("sha256:{}", digest.to_uppercase())).unwrap();
        assert_eq!(lattice, ImageRef::Lattice { digest: digest.clone() });
        assert_eq!(lattice.to_string(), format!("sha256:{digest}"));
        assert!(lattice.matches(b"wasm") && !lattice.matches(b"other"));
        for file in ["/srv/c.wasm", "file:/srv/c.wasm", "file:///srv/c.wasm"] {
            assert_eq!(ImageRef::parse(file).unwrap(), ImageRef::File("/srv/c.wasm".into()), "{file}");
        }
    }

    #[test]
    fn relative_paths_bad_digests_and_other_schemes_are_refused() {
        for bad in ["c.wasm", "./c.wasm", "sha256:abc", &format!("sha256:{}", "z".repeat(64)), "https://x/c.wasm", ""] {
            assert!(ImageRef::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
