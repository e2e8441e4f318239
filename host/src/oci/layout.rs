//! What registry images look like to a host: platforms as OCI names them, the manifest of an
//! image index a host takes (its own platform for a provider, the wasm one for a component),
//! and the layer of a manifest it runs.

use std::str::FromStr;

use ferry_proto::image::{MAX_COMPONENT_BYTES, OciRef};
use oci_client::manifest::OciDescriptor;

use super::{MAX_PROVIDER_BYTES, PROVIDER_LAYER, RegistryError, WASM_LAYER, WASMCLOUD_LAYER};

/// An operating system and CPU architecture, named as OCI image indexes name them (Go's
/// `GOOS` and `GOARCH`: `linux/amd64`, `linux/arm64`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub struct Platform {
    /// `linux`, `darwin`.
    pub os: String,
    /// `amd64`, `arm64`.
    pub architecture: String,
}

impl Platform {
    /// The platform this process runs on.
    pub fn host() -> Self {
        let architecture = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "x86" => "386",
            "aarch64" => "arm64",
            "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
            "loongarch64" => "loong64",
            other => other,
        };
        let os = match std::env::consts::OS {
            "macos" => "darwin",
            other => other,
        };
        Self { os: os.to_owned(), architecture: architecture.to_owned() }
    }

    /// The platform an executable is built for, read from its ELF header (Linux executables);
    /// `None` for anything else.
    pub fn of_executable(bytes: &[u8]) -> Option<Self> {
        if bytes.len() < 20 || &bytes[..4] != b"\x7fELF" {
            return None;
        }
        let (class64, little) = (bytes[4] == 2, bytes[5] == 1);
        let machine = if little {
            u16::from_le_bytes([bytes[18], bytes[19]])
        } else {
            u16::from_be_bytes([bytes[18], bytes[19]])
        };
        let architecture = match (machine, class64, little) {
            (0x3e, true, _) => "amd64",
            (0x03, false, _) => "386",
            (0xb7, true, _) => "arm64",
            (0x28, false, _) => "arm",
            (0xf3, true, _) => "riscv64",
            (0x16, true, _) => "s390x",
            (0x15, true, true) => "ppc64le",
            (0x15, true, false) => "ppc64",
            (0x102, true, _) => "loong64",
            _ => return None,
        };
        Some(Self { os: "linux".to_owned(), architecture: architecture.to_owned() })
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)
    }
}

impl FromStr for Platform {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let ok = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_alphanumeric());
        match s.split_once('/') {
            Some((os, architecture)) if ok(os) && ok(architecture) => {
                Ok(Self { os: os.to_owned(), architecture: architecture.to_owned() })
            }
            _ => Err(format!("{s:?} is not a platform (OS/ARCHITECTURE, as linux/amd64)")),
        }
    }
}

/// What a pull is for: which layer it takes, which platform of an index, how large at most.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Artifact {
    Component,
    Provider,
}

impl Artifact {
    fn layer_types(self) -> &'static [&'static str] {
        match self {
            Self::Component => &[WASM_LAYER, WASMCLOUD_LAYER],
            Self::Provider => &[PROVIDER_LAYER],
        }
    }

    fn max_bytes(self) -> u64 {
        match self {
            Self::Component => MAX_COMPONENT_BYTES,
            Self::Provider => MAX_PROVIDER_BYTES,
        }
    }

    fn what(self) -> &'static str {
        match self {
            Self::Component => "a wasm component",
            Self::Provider => "a Ferry provider",
        }
    }
}

/// The manifest of an image index (by digest) that `artifact` takes: for a provider, the one
/// for this host's platform; for a component, the `wasm` one (or the only one). `None` when
/// `manifest` is not an index.
pub(super) fn select_from_index(
    image: &OciRef,
    manifest: &[u8],
    artifact: Artifact,
) -> Result<Option<String>, RegistryError> {
    #[derive(serde::Deserialize)]
    struct Index {
        manifests: Vec<Entry>,
    }
    #[derive(serde::Deserialize)]
    struct Entry {
        digest: String,
        #[serde(default)]
        platform: Option<Platform>,
    }
    let value: serde_json::Value = serde_json::from_slice(manifest)
        .map_err(|e| RegistryError::Refused(format!("{image}: not a manifest: {e}")))?;
    if value.get("manifests").is_none() {
        return Ok(None);
    }
    let index: Index = serde_json::from_value(value)
        .map_err(|e| RegistryError::Refused(format!("{image}: not an image index: {e}")))?;
    let chosen = match artifact {
        Artifact::Provider => {
            let host = Platform::host();
            index.manifests.iter().find(|e| e.platform.as_ref() == Some(&host)).ok_or_else(|| {
                let has: Vec<String> =
                    index.manifests.iter().filter_map(|e| e.platform.as_ref().map(Platform::to_string)).collect();
                RegistryError::Refused(format!(
                    "{image} has no provider binary for {host} (it has {})",
                    if has.is_empty() { "none".to_owned() } else { has.join(", ") }
                ))
            })?
        }
        Artifact::Component => index
            .manifests
            .iter()
            .find(|e| e.platform.as_ref().is_some_and(|p| p.architecture == "wasm"))
            .or_else(|| index.manifests.first().filter(|_| index.manifests.len() == 1))
            .ok_or_else(|| RegistryError::Refused(format!("{image} is an index with no wasm manifest")))?,
    };
    Ok(Some(chosen.digest.clone()))
}

/// `artifact`'s layer of an image manifest, refused when there is none or it is too large.
pub(super) fn find_layer(image: &OciRef, manifest: &[u8], artifact: Artifact) -> Result<OciDescriptor, RegistryError> {
    let manifest: oci_client::manifest::OciImageManifest = serde_json::from_slice(manifest)
        .map_err(|e| RegistryError::Refused(format!("{image}: not an image manifest: {e}")))?;
    let types = artifact.layer_types();
    let layer = manifest.layers.into_iter().find(|l| types.contains(&l.media_type.as_str())).ok_or_else(|| {
        RegistryError::Refused(format!("{image} is not {} image (no {} layer)", artifact.what(), types[0]))
    })?;
    let max = artifact.max_bytes();
    if u64::try_from(layer.size).unwrap_or(u64::MAX) > max {
        return Err(RegistryError::Refused(format!(
            "{image}'s layer is {} bytes; a host takes at most {max}",
            layer.size
        )));
    }
    Ok(layer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::IMAGE_MANIFEST;

    #[test]
    fn platforms_are_read_from_executables_and_named_as_oci_names_them() {
        let own = std::fs::read(std::env::current_exe().expect("exe")).expect("read");
        assert_eq!(Platform::of_executable(&own), Some(Platform::host()));
        assert_eq!(Platform::of_executable(b"\0asm\x01\0\0\0"), None);
        assert_eq!("linux/arm64".parse::<Platform>().map(|p| p.to_string()).as_deref(), Ok("linux/arm64"));
        assert!("linux".parse::<Platform>().is_err() && "linux/../x".parse::<Platform>().is_err());
    }

    #[test]
    fn an_index_yields_the_manifest_for_this_platform_or_says_which_it_has() {
        let image = OciRef::parse("registry.local/p/kv:1.0").expect("ref");
        let host = Platform::host();
        let entry = |platform: &Platform, digest: &str| serde_json::json!({"mediaType": IMAGE_MANIFEST, "digest": digest, "size": 1, "platform": platform});
        let other = Platform { os: "linux".into(), architecture: "s390x".into() };
        let index = serde_json::json!({"schemaVersion": 2, "manifests": [entry(&other, "sha256:aa"), entry(&host, "sha256:bb")]});
        let bytes = serde_json::to_vec(&index).expect("json");
        assert_eq!(
            select_from_index(&image, &bytes, Artifact::Provider).expect("chosen").as_deref(),
            Some("sha256:bb")
        );
        let only_other =
            serde_json::to_vec(&serde_json::json!({"manifests": [entry(&other, "sha256:aa")]})).expect("json");
        let err = select_from_index(&image, &only_other, Artifact::Provider).expect_err("no match");
        assert!(err.to_string().contains("linux/s390x"), "{err}");
        let manifest = serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "layers": []})).expect("json");
        assert_eq!(select_from_index(&image, &manifest, Artifact::Component).expect("not an index"), None);
    }
}
