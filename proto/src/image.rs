//! Component references: what `component.start` and `component.update` name to run.
//!
//! A control command never makes a host read a path it was told to read. A component is
//! either content uploaded into the lattice — `sha256:{hex}`, stored under that digest in the
//! lattice's object store ([`crate::subject::component_store`]) and verified against it when a
//! host fetches it — or a file on the host, `file:{absolute path}`, which the host runs only
//! from a directory it was started to allow (`--allow-file-dir`) — or an image in an OCI
//! registry, `oci://REGISTRY/REPOSITORY:TAG`, `…@sha256:{hex}` or the same without `oci://`
//! (`ghcr.io/org/app:1.0`), which the host pulls into its cache (docs/registries.md).

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
    /// An image in an OCI registry.
    Oci(OciRef),
}

/// An image in an OCI registry: the registry's host (and port), the repository, and a tag or a
/// manifest digest (or both: the digest is what is pulled, the tag says where it came from).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OciRef {
    /// `ghcr.io`, `registry.local:5000`.
    pub registry: String,
    /// `org/app`.
    pub repository: String,
    /// `1.0`; `None` when only a digest is given.
    pub tag: Option<String>,
    /// The manifest's digest, `sha256:` and 64 lower-case hex digits.
    pub digest: Option<String>,
}

impl OciRef {
    /// Read `REGISTRY/REPOSITORY[:TAG][@sha256:HEX]`, with or without `oci://`. The first path
    /// segment is the registry: it must look like a host (a dot, a port, or `localhost`), so
    /// `org/app:1.0` is not mistaken for an image on a registry named `org`. A reference with
    /// neither tag nor digest means the tag `latest`.
    ///
    /// # Errors
    /// [`ProtoError::InvalidId`] for anything that is not such a reference.
    pub fn parse(reference: &str) -> Result<Self, ProtoError> {
        let invalid = |reason| ProtoError::InvalidId { what: "OCI reference", value: reference.into(), reason };
        let text = reference.strip_prefix("oci://").unwrap_or(reference);
        let (registry, rest) = text.split_once('/').ok_or_else(|| invalid("expected REGISTRY/REPOSITORY:TAG"))?;
        if !registry_like(registry) {
            return Err(invalid("the first segment must be a registry host (with a dot or a port, or localhost)"));
        }
        let (name, digest) = match rest.split_once('@') {
            Some((name, digest)) => {
                let hex =
                    digest.strip_prefix("sha256:").ok_or_else(|| invalid("a digest is sha256: and 64 hex digits"))?;
                if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(invalid("a digest is sha256: and 64 hex digits"));
                }
                (name, Some(format!("sha256:{}", hex.to_ascii_lowercase())))
            }
            None => (rest, None),
        };
        // A tag follows the last colon of the last segment (a port belongs to the registry).
        let (repository, tag) = match name.rsplit_once(':') {
            Some((repository, tag)) if !tag.contains('/') => (repository, Some(tag.to_owned())),
            _ => (name, None),
        };
        let segment_ok = |s: &str| {
            !s.is_empty()
                && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
                && s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        };
        if !repository.split('/').all(segment_ok) {
            return Err(invalid("a repository is lower-case path segments of letters, digits, '.', '_' and '-'"));
        }
        if let Some(tag) = &tag {
            let ok = (1..=128).contains(&tag.len())
                && tag.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
                && !tag.starts_with(['.', '-']);
            if !ok {
                return Err(invalid("a tag is up to 128 letters, digits, '.', '_' and '-'"));
            }
        }
        let tag = if tag.is_none() && digest.is_none() { Some("latest".to_owned()) } else { tag };
        Ok(Self { registry: registry.to_owned(), repository: repository.to_owned(), tag, digest })
    }

    /// Whether this reference floats on the `latest` tag (no digest pins it).
    pub fn is_latest(&self) -> bool {
        self.digest.is_none() && self.tag.as_deref() == Some("latest")
    }

    /// The same image pinned to `digest`.
    #[must_use]
    pub fn pinned(&self, digest: &str) -> Self {
        Self { digest: Some(digest.to_owned()), ..self.clone() }
    }

    /// `REGISTRY/REPOSITORY[:TAG][@DIGEST]`, as registries and their tools write it.
    pub fn to_plain(&self) -> String {
        let mut text = format!("{}/{}", self.registry, self.repository);
        if let Some(tag) = &self.tag {
            text.push(':');
            text.push_str(tag);
        }
        if let Some(digest) = &self.digest {
            text.push('@');
            text.push_str(digest);
        }
        text
    }
}

/// Whether `text` is a registry: a host name with a dot, `localhost`, or either with a port.
fn registry_like(text: &str) -> bool {
    let (host, port) = match text.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (text, None),
    };
    if port.is_some_and(|p| p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit())) {
        return false;
    }
    let labels_ok = host.split('.').all(|label| {
        !label.is_empty()
            && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    });
    labels_ok && (host == "localhost" || host.contains('.') || port.is_some())
}

impl fmt::Display for OciRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "oci://{}", self.to_plain())
    }
}

impl ImageRef {
    /// The reference of `bytes` uploaded into the lattice.
    pub fn of_bytes(bytes: &[u8]) -> Self {
        ImageRef::Lattice { digest: sha256_hex(bytes) }
    }

    /// Read a reference: `sha256:{64 hex digits}`, `file:{absolute path}`, an absolute path, or
    /// an OCI image ([`OciRef::parse`]).
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
        if reference.starts_with("oci://") {
            return OciRef::parse(reference).map(ImageRef::Oci);
        }
        if reference.contains("://") {
            return Err(invalid(
                "unsupported scheme: name an OCI image (oci://…), upload the file into the lattice (sha256:…) or name a host file",
            ));
        }
        if let Ok(oci) = OciRef::parse(reference) {
            return Ok(ImageRef::Oci(oci));
        }
        Err(invalid("a host file must be named by its absolute path; upload a local file into the lattice instead"))
    }

    /// Whether `bytes` are what this reference names (always true for a host file).
    pub fn matches(&self, bytes: &[u8]) -> bool {
        match self {
            ImageRef::Lattice { digest } => sha256_hex(bytes) == *digest,
            ImageRef::File(_) | ImageRef::Oci(_) => true,
        }
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImageRef::Lattice { digest } => write!(f, "sha256:{digest}"),
            ImageRef::File(path) => write!(f, "file:{}", path.display()),
            ImageRef::Oci(oci) => oci.fmt(f),
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
    fn oci_references_parse_with_tags_digests_and_ports() {
        let digest = format!("sha256:{}", sha256_hex(b"m"));
        let tagged = ImageRef::parse("oci://ghcr.io/org/app:1.0").unwrap();
        let ImageRef::Oci(oci) = &tagged else { panic!("{tagged:?}") };
        assert_eq!(
            (oci.registry.as_str(), oci.repository.as_str(), oci.tag.as_deref()),
            ("ghcr.io", "org/app", Some("1.0"))
        );
        assert_eq!(tagged.to_string(), "oci://ghcr.io/org/app:1.0");
        let plain = OciRef::parse(&format!("localhost:5000/a/b/c@{digest}")).unwrap();
        assert_eq!(plain.registry, "localhost:5000");
        assert_eq!(plain.repository, "a/b/c");
        assert_eq!(plain.tag, None);
        assert_eq!(plain.digest.as_deref(), Some(digest.as_str()));
        assert_eq!(ImageRef::parse(&plain.to_plain()).unwrap(), ImageRef::Oci(plain.clone()));
        let both = OciRef::parse(&format!("127.0.0.1:5000/app:2@{digest}")).unwrap();
        assert_eq!((both.tag.as_deref(), both.digest.is_some()), (Some("2"), true));
        assert!(OciRef::parse("registry.local/app").unwrap().is_latest());
        assert!(OciRef::parse("registry.local/app:latest").unwrap().is_latest());
        assert!(!OciRef::parse(&format!("registry.local/app:latest@{digest}")).unwrap().is_latest());
        for bad in ["org/app:1.0", "ghcr.io/App:1", "ghcr.io/app:bad tag", "ghcr.io/app@sha256:abc", "ghcr.io/"] {
            assert!(OciRef::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn relative_paths_bad_digests_and_other_schemes_are_refused() {
        for bad in ["c.wasm", "./c.wasm", "sha256:abc", &format!("sha256:{}", "z".repeat(64)), "https://x/c.wasm", ""] {
            assert!(ImageRef::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
