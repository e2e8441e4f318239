//! Components and provider binaries from OCI registries: pulled by reference
//! (`oci://REGISTRY/REPO:TAG`, `…@sha256:…`), kept in a content-addressed cache on disk
//! ([`cache`]), and pushed by `ferry push`. Components use the media types of the CNCF wasm OCI
//! artifact layout (a config of type `application/vnd.wasm.config.v0+json` and one
//! `application/wasm` layer), which wasmCloud's and wasmtime's tools pull as well; a provider is
//! an image index with one manifest per platform, each holding the executable as its one layer.
//! docs/registries.md has the rules.
//!
//! A digest-pinned reference is served from the cache once pulled and never asks the registry
//! again; a tag is resolved as the [`PullPolicy`] says. Registry credentials come from a
//! docker-style config file or from a user name and a password file or variable, never from a
//! command line, and are never logged.

mod cache;
mod credentials;
mod layout;

use std::{
    path::PathBuf,
    pin::Pin,
    str::FromStr,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use ferry_proto::image::{MAX_COMPONENT_BYTES, OciRef, sha256_hex};
use oci_client::{
    Client, Reference,
    client::{ClientConfig, ClientProtocol, Config, ImageLayer},
    errors::OciDistributionError,
    manifest::OciDescriptor,
};
use tracing::{debug, info};

use self::layout::{Artifact, find_layer, select_from_index};
pub use self::{credentials::Credentials, layout::Platform};

/// Media type of a wasm component layer (CNCF wasm OCI artifact layout).
pub const WASM_LAYER: &str = "application/wasm";
/// Media type of a wasm artifact's config.
pub const WASM_CONFIG: &str = "application/vnd.wasm.config.v0+json";
/// The layer type of components published by older wasmCloud tools (`wash push` before the
/// CNCF layout); pulled as well.
const WASMCLOUD_LAYER: &str = "application/vnd.module.wasm.content.layer.v1+wasm";
/// Media type of a provider image's config (`{"architecture": …, "os": …}`).
pub const PROVIDER_CONFIG: &str = "application/vnd.ferry.provider.config.v1+json";
/// Media type of a provider image's one layer: the executable for the manifest's platform.
pub const PROVIDER_LAYER: &str = "application/vnd.ferry.provider.binary.v1";
/// The largest provider executable a host pulls, in bytes.
pub const MAX_PROVIDER_BYTES: u64 = 512 * 1024 * 1024;
/// An image manifest.
const IMAGE_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// An image index: one manifest per platform.
const IMAGE_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Manifest types a pull accepts.
const MANIFEST_TYPES: &[&str] = &[IMAGE_MANIFEST, IMAGE_INDEX];

/// When a tag is looked up in the registry again.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PullPolicy {
    /// Use the digest the tag resolved to last time, when its content is in the cache; ask the
    /// registry only for a tag never pulled (the default).
    #[default]
    IfNotPresent,
    /// Resolve the tag in the registry on every start (the content itself is still taken from
    /// the cache when its digest is there).
    Always,
}

impl FromStr for PullPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "if-not-present" | "IfNotPresent" => Ok(Self::IfNotPresent),
            "always" | "Always" => Ok(Self::Always),
            other => Err(format!("unknown pull policy {other:?} (if-not-present or always)")),
        }
    }
}

/// Why an image could not be had.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The reference is refused by this host's rules (`:latest`, too large, not a component).
    #[error("{0}")]
    Refused(String),
    /// The registry wants credentials this host does not have, or refused the ones it has.
    #[error(
        "registry {registry} refused access to {image}: {cause} (give credentials: a docker config file, or --registry-user with FERRY_REGISTRY_PASSWORD / --registry-password-file)"
    )]
    Unauthorized {
        /// The registry.
        registry: String,
        /// The image.
        image: String,
        /// What the registry said.
        cause: String,
    },
    /// The registry could not be reached or answered with an error.
    #[error("cannot pull {image}: {cause}")]
    Pull {
        /// The image.
        image: String,
        /// Why.
        cause: String,
    },
    /// The cache could not be written.
    #[error("cannot write the image cache: {0}")]
    Cache(#[from] std::io::Error),
}

/// How a host (or `ferry push`) reaches registries.
#[derive(Debug, Clone, Default)]
pub struct RegistrySettings {
    /// Where pulled content is kept; `None`: [`RegistrySettings::default_cache_dir`].
    pub cache_dir: Option<PathBuf>,
    /// When a tag is resolved again.
    pub pull_policy: PullPolicy,
    /// Registries (`host:port`) reached over plain HTTP, for local registries.
    pub insecure: Vec<String>,
    /// Whether references that float on `:latest` are taken.
    pub allow_latest: bool,
    /// Credentials.
    pub credentials: Credentials,
    /// Repositories (`REGISTRY/REPOSITORY`, or a prefix of whole path segments such as
    /// `REGISTRY/org`) whose provider binaries this host runs. A provider is native code with
    /// the host's own rights, so none is run from a registry unless its repository is listed.
    pub provider_images: Vec<String>,
}

impl RegistrySettings {
    /// `$XDG_CACHE_HOME/ferry/oci`, else `~/.cache/ferry/oci`, else a folder in the temporary
    /// directory.
    pub fn default_cache_dir() -> PathBuf {
        std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))
            .unwrap_or_else(std::env::temp_dir)
            .join("ferry")
            .join("oci")
    }
}

/// A provider executable from a registry, kept in the image cache.
#[derive(Debug, Clone)]
pub struct ProviderBinary {
    /// The executable file in the cache.
    pub path: PathBuf,
    /// The image, pinned to the manifest (or index) digest its tag resolved to.
    pub image: OciRef,
    /// The executable's own digest, which the file is checked against before each start.
    pub layer_digest: String,
}

/// A registry client with its cache.
pub struct Registry {
    /// Made when first needed: building it sets up TLS (a root store, twice over inside
    /// oci-client), which a host that never pulls should not carry in memory.
    client: std::sync::OnceLock<Client>,
    cache: cache::Cache,
    settings: RegistrySettings,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").field("settings", &self.settings).finish_non_exhaustive()
    }
}

impl Registry {
    /// A client for `settings`; it connects to nothing until asked for an image.
    pub fn new(settings: RegistrySettings) -> Self {
        let cache = cache::Cache::new(settings.cache_dir.clone().unwrap_or_else(RegistrySettings::default_cache_dir));
        Self { client: std::sync::OnceLock::new(), cache, settings }
    }

    /// The HTTP client, made on first use.
    fn client(&self) -> &Client {
        self.client.get_or_init(|| {
            // reqwest's rustls needs a process-wide crypto provider: ring, as the rest of the tree.
            let _ = rustls::crypto::ring::default_provider().install_default();
            let protocol = if self.settings.insecure.is_empty() {
                ClientProtocol::Https
            } else {
                ClientProtocol::HttpsExcept(self.settings.insecure.clone())
            };
            Client::new(ClientConfig {
                protocol,
                connect_timeout: Some(Duration::from_secs(10)),
                read_timeout: Some(Duration::from_secs(60)),
                ..ClientConfig::default()
            })
        })
    }

    fn reference(image: &OciRef) -> Result<Reference, RegistryError> {
        image.to_plain().parse::<Reference>().map_err(|e| RegistryError::Refused(format!("{image}: {e}")))
    }

    fn failed(&self, image: &OciRef, err: &OciDistributionError) -> RegistryError {
        let cause = err.to_string();
        let unauthorized = matches!(err, OciDistributionError::AuthenticationFailure(_))
            || matches!(err, OciDistributionError::UnauthorizedError { .. })
            || cause.contains("401")
            || cause.to_ascii_lowercase().contains("unauthorized");
        if unauthorized {
            RegistryError::Unauthorized { registry: image.registry.clone(), image: image.to_string(), cause }
        } else {
            RegistryError::Pull { image: image.to_string(), cause }
        }
    }

    /// The component `image` names: from the cache when it holds the content, else pulled
    /// (and kept). Returns the bytes and the manifest digest they came from.
    ///
    /// # Errors
    /// [`RegistryError`].
    pub async fn fetch(&self, image: &OciRef) -> Result<(Vec<u8>, String), RegistryError> {
        let (manifest_digest, layer) = self.layer_of(image, Artifact::Component).await?;
        if let Some(bytes) = self.cache.blob(&layer.digest).await {
            debug!(%image, digest = %layer.digest, "component from the image cache");
            return Ok((bytes, manifest_digest));
        }
        let bytes = self.pull_layer(image, &layer, MAX_COMPONENT_BYTES).await?;
        self.cache.put_blob(&layer.digest, &bytes).await?;
        Ok((bytes, manifest_digest))
    }

    /// Whether this host runs provider binaries from `image`'s repository
    /// ([`RegistrySettings::provider_images`]).
    pub fn runs_provider(&self, image: &OciRef) -> bool {
        let name = format!("{}/{}", image.registry, image.repository);
        self.settings.provider_images.iter().any(|prefix| {
            let prefix = prefix.strip_prefix("oci://").unwrap_or(prefix).trim_end_matches('/');
            name == prefix || name.strip_prefix(prefix).is_some_and(|rest| rest.starts_with('/'))
        })
    }

    /// Whether this host runs provider binaries from registries at all.
    pub fn runs_providers(&self) -> bool {
        !self.settings.provider_images.is_empty()
    }

    /// The provider executable `image` names for this host's platform, as a file in the cache
    /// (checked against its digest), pulled when it is not there.
    ///
    /// # Errors
    /// [`RegistryError::Refused`] when this host does not run providers from the image's
    /// repository, the image has no executable for this platform or it is too large; else
    /// [`RegistryError`].
    pub async fn fetch_provider(&self, image: &OciRef) -> Result<ProviderBinary, RegistryError> {
        if !self.runs_provider(image) {
            return Err(RegistryError::Refused(format!(
                "this host runs no provider binaries from {}/{} (start it with --allow-provider-image REGISTRY/REPOSITORY)",
                image.registry, image.repository
            )));
        }
        let (manifest_digest, layer) = self.layer_of(image, Artifact::Provider).await?;
        let path = match self.cache.executable(&layer.digest).await {
            Some(path) => {
                debug!(%image, digest = %layer.digest, "provider from the image cache");
                path
            }
            None => {
                let bytes = self.pull_layer(image, &layer, MAX_PROVIDER_BYTES).await?;
                self.cache.put_executable(&layer.digest, &bytes).await?
            }
        };
        Ok(ProviderBinary { path, image: image.pinned(&manifest_digest), layer_digest: layer.digest })
    }

    /// `binary`'s file, checked against its digest again (before each start of the process);
    /// `None` when it is gone or no longer matches (then it has been removed: fetch it again).
    pub async fn verify_provider(&self, binary: &ProviderBinary) -> Option<PathBuf> {
        self.cache.executable(&binary.layer_digest).await
    }

    /// The manifest digest `image` resolves to and the layer of `artifact`'s type in it (from
    /// the manifest for this host's platform when the image is an index).
    async fn layer_of(&self, image: &OciRef, artifact: Artifact) -> Result<(String, OciDescriptor), RegistryError> {
        if image.is_latest() && !self.settings.allow_latest {
            return Err(RegistryError::Refused(format!(
                "{image} floats on :latest; pin a tag or a digest (or start the host with --allow-latest)"
            )));
        }
        let manifest_digest = match &image.digest {
            Some(digest) => digest.clone(),
            None => self.resolve_tag(image).await?,
        };
        let mut manifest = self.manifest(&image.pinned(&manifest_digest)).await?;
        if let Some(child) = select_from_index(image, &manifest, artifact)? {
            manifest = self.manifest(&image.pinned(&child)).await?;
        }
        let layer = find_layer(image, &manifest, artifact)?;
        Ok((manifest_digest, layer))
    }

    /// The manifest `pinned`'s digest names: from the cache, else pulled (and kept).
    async fn manifest(&self, pinned: &OciRef) -> Result<Vec<u8>, RegistryError> {
        let digest = pinned.digest.as_deref().unwrap_or_default();
        match self.cache.blob(digest).await {
            Some(bytes) => Ok(bytes),
            None => Ok(self.pull_manifest(pinned).await?.0),
        }
    }

    /// The manifest digest `image`'s tag stands for, per the pull policy.
    async fn resolve_tag(&self, image: &OciRef) -> Result<String, RegistryError> {
        if self.settings.pull_policy == PullPolicy::IfNotPresent
            && let Some(digest) = self.cache.tag(image).await
            && self.cache.blob(&digest).await.is_some()
        {
            debug!(%image, %digest, "tag resolved from the image cache");
            return Ok(digest);
        }
        let (_, digest) = self.pull_manifest(image).await?;
        self.cache.put_tag(image, &digest).await?;
        info!(%image, %digest, "tag resolved");
        Ok(digest)
    }

    /// Pull `image`'s manifest (by its digest when it pins one, else by its tag), check its
    /// content against that digest (else the one the registry named), and keep it; the manifest
    /// and its digest.
    async fn pull_manifest(&self, image: &OciRef) -> Result<(Vec<u8>, String), RegistryError> {
        let reference = Self::reference(image)?;
        let auth = self.settings.credentials.for_registry(&image.registry);
        let (raw, said) = self
            .client()
            .pull_manifest_raw(&reference, &auth, MANIFEST_TYPES)
            .await
            .map_err(|e| self.failed(image, &e))?;
        let expected = image.digest.clone().unwrap_or(said);
        let actual = format!("sha256:{}", sha256_hex(&raw));
        if actual != expected {
            return Err(RegistryError::Pull {
                image: image.to_string(),
                cause: format!("the manifest's content is {actual}, not {expected}"),
            });
        }
        self.cache.put_blob(&actual, &raw).await?;
        Ok((raw.to_vec(), actual))
    }

    /// Pull one layer, logging progress every second for a pull that takes longer.
    async fn pull_layer(&self, image: &OciRef, layer: &OciDescriptor, limit: u64) -> Result<Vec<u8>, RegistryError> {
        let reference = Self::reference(image)?;
        let auth = self.settings.credentials.for_registry(&image.registry);
        // Authenticates for the blob pull that follows (a no-op when it already has a token).
        self.client().store_auth_if_needed(reference.resolve_registry(), &auth).await;
        let mut sink = Progress::new(image.to_string(), u64::try_from(layer.size).unwrap_or(0), limit);
        self.client().pull_blob(&reference, layer, &mut sink).await.map_err(|e| self.failed(image, &e))?;
        if sink.started.elapsed() >= PROGRESS_EVERY {
            info!(%image, bytes = sink.bytes.len(), took_ms = sink.started.elapsed().as_millis() as u64, "pulled");
        }
        Ok(sink.bytes)
    }

    /// Publish the component `bytes` as `image` (a tag); returns the manifest's digest.
    ///
    /// # Errors
    /// [`RegistryError`].
    pub async fn push_component(&self, image: &OciRef, bytes: Vec<u8>) -> Result<String, RegistryError> {
        let reference = Self::reference(image)?;
        let auth = self.settings.credentials.for_registry(&image.registry);
        let layer_digest = format!("sha256:{}", sha256_hex(&bytes));
        let config = serde_json::json!({
            "architecture": "wasm",
            "os": "wasip2",
            "layerDigests": [layer_digest],
        });
        let config = Config::new(serde_json::to_vec(&config).unwrap_or_default(), WASM_CONFIG.to_owned(), None);
        let layers = [ImageLayer::new(bytes, WASM_LAYER.to_owned(), None)];
        self.client().push(&reference, &layers, config, &auth, None).await.map_err(|e| self.failed(image, &e))?;
        self.client().fetch_manifest_digest(&reference, &auth).await.map_err(|e| self.failed(image, &e))
    }

    /// Publish provider executables as `image` (a tag): one manifest per platform, each with the
    /// executable as its one layer, under an image index; returns the index's digest.
    ///
    /// # Errors
    /// [`RegistryError`].
    pub async fn push_provider(
        &self,
        image: &OciRef,
        binaries: Vec<(Platform, Vec<u8>)>,
    ) -> Result<String, RegistryError> {
        let reference = Self::reference(image)?;
        let auth = self.settings.credentials.for_registry(&image.registry);
        self.client().store_auth_if_needed(reference.resolve_registry(), &auth).await;
        let descriptor = |media_type: &str, bytes: &[u8]| {
            serde_json::json!({
                "mediaType": media_type,
                "digest": format!("sha256:{}", sha256_hex(bytes)),
                "size": bytes.len(),
            })
        };
        let mut manifests = Vec::new();
        for (platform, bytes) in binaries {
            let config = serde_json::to_vec(&platform).unwrap_or_default();
            let (config_descriptor, layer_descriptor) =
                (descriptor(PROVIDER_CONFIG, &config), descriptor(PROVIDER_LAYER, &bytes));
            let layer_digest = format!("sha256:{}", sha256_hex(&bytes));
            self.client().push_blob(&reference, bytes, &layer_digest).await.map_err(|e| self.failed(image, &e))?;
            let config_digest = format!("sha256:{}", sha256_hex(&config));
            self.client().push_blob(&reference, config, &config_digest).await.map_err(|e| self.failed(image, &e))?;
            let manifest = serde_json::to_vec(&serde_json::json!({
                "schemaVersion": 2,
                "mediaType": IMAGE_MANIFEST,
                "artifactType": PROVIDER_LAYER,
                "config": config_descriptor,
                "layers": [layer_descriptor],
            }))
            .unwrap_or_default();
            let digest = format!("sha256:{}", sha256_hex(&manifest));
            let by_digest = Self::reference(&OciRef { tag: None, ..image.pinned(&digest) })?;
            let mut entry = descriptor(IMAGE_MANIFEST, &manifest);
            entry["platform"] = serde_json::to_value(&platform).unwrap_or_default();
            self.client()
                .push_manifest_raw(
                    &by_digest,
                    manifest,
                    IMAGE_MANIFEST.parse().expect("a media type is a header value"),
                )
                .await
                .map_err(|e| self.failed(image, &e))?;
            manifests.push(entry);
        }
        let index = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": IMAGE_INDEX,
            "artifactType": PROVIDER_LAYER,
            "manifests": manifests,
        }))
        .unwrap_or_default();
        let digest = format!("sha256:{}", sha256_hex(&index));
        self.client()
            .push_manifest_raw(&reference, index, IMAGE_INDEX.parse().expect("a media type is a header value"))
            .await
            .map_err(|e| self.failed(image, &e))?;
        Ok(digest)
    }
}

/// How often a long pull says how far it got.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// A layer's bytes as they arrive, with a progress line every second.
struct Progress {
    image: String,
    total: u64,
    limit: u64,
    bytes: Vec<u8>,
    started: Instant,
    next_report: Instant,
}

impl Progress {
    fn new(image: String, total: u64, limit: u64) -> Self {
        let started = Instant::now();
        Self { image, total, limit, bytes: Vec::new(), started, next_report: started + PROGRESS_EVERY }
    }
}

impl tokio::io::AsyncWrite for Progress {
    fn poll_write(self: Pin<&mut Self>, _cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        if this.bytes.len() as u64 + buf.len() as u64 > this.limit {
            return Poll::Ready(Err(std::io::Error::other(format!(
                "the layer is larger than a host takes ({} bytes)",
                this.limit
            ))));
        }
        this.bytes.extend_from_slice(buf);
        if Instant::now() >= this.next_report {
            this.next_report += PROGRESS_EVERY;
            let mib = |n: u64| n as f64 / f64::from(1u32 << 20);
            info!(image = %this.image, "pulling: {:.1} of {:.1} MiB", mib(this.bytes.len() as u64), mib(this.total));
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_images_run_only_from_listed_repositories_by_whole_segments() {
        let settings = RegistrySettings {
            provider_images: vec!["registry.local:5000/acme".into(), "oci://ghcr.io/org/kv/".into()],
            ..RegistrySettings::default()
        };
        let registry = Registry::new(settings);
        let runs = |r: &str| registry.runs_provider(&OciRef::parse(r).expect("ref"));
        assert!(runs("registry.local:5000/acme/kv:1.0") && runs("registry.local:5000/acme/team/kv:1.0"));
        assert!(runs("ghcr.io/org/kv:2.0"));
        assert!(!runs("registry.local:5000/acme-evil/kv:1.0") && !runs("ghcr.io/org/kvx:1.0"));
        assert!(!runs("registry.local:5001/acme/kv:1.0"));
    }

    #[test]
    fn pull_policies_parse() {
        assert_eq!("always".parse::<PullPolicy>(), Ok(PullPolicy::Always));
        assert_eq!("if-not-present".parse::<PullPolicy>(), Ok(PullPolicy::IfNotPresent));
        assert!("never".parse::<PullPolicy>().is_err());
    }
}
