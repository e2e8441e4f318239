//! Components from OCI registries: pulled by reference (`oci://REGISTRY/REPO:TAG`,
//! `…@sha256:…`), kept in a content-addressed cache on disk ([`cache`]), and pushed by `ferry
//! push` with the media types of the CNCF wasm OCI artifact layout (a config of type
//! `application/vnd.wasm.config.v0+json` and one `application/wasm` layer), which wasmCloud's
//! and wasmtime's tools pull as well. docs/registries.md has the rules.
//!
//! A digest-pinned reference is served from the cache once pulled and never asks the registry
//! again; a tag is resolved as the [`PullPolicy`] says. Registry credentials come from a
//! docker-style config file or from a user name and a password file or variable, never from a
//! command line, and are never logged.

mod cache;

use std::{
    path::{Path, PathBuf},
    pin::Pin,
    str::FromStr,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use base64::Engine as _;
use ferry_proto::image::{MAX_COMPONENT_BYTES, OciRef, sha256_hex};
use oci_client::{
    Client, Reference,
    client::{ClientConfig, ClientProtocol, Config, ImageLayer},
    errors::OciDistributionError,
    manifest::OciDescriptor,
    secrets::RegistryAuth,
};
use tracing::{debug, info};

/// Media type of a wasm component layer (CNCF wasm OCI artifact layout).
pub const WASM_LAYER: &str = "application/wasm";
/// Media type of a wasm artifact's config.
pub const WASM_CONFIG: &str = "application/vnd.wasm.config.v0+json";
/// The layer type of components published by older wasmCloud tools (`wash push` before the
/// CNCF layout); pulled as well.
const WASMCLOUD_LAYER: &str = "application/vnd.module.wasm.content.layer.v1+wasm";
/// Manifest types a pull accepts.
const MANIFEST_TYPES: &[&str] = &["application/vnd.oci.image.manifest.v1+json"];

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

/// Where registry credentials come from: a user name and password given to the process (used
/// for every registry), else the entry for the registry in a docker-style config file.
#[derive(Clone, Default)]
pub struct Credentials {
    basic: Option<(String, String)>,
    docker_config: Option<PathBuf>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.basic.as_ref().map(|(user, _)| user))
            .field("docker_config", &self.docker_config)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// A user name and password for every registry.
    pub fn basic(user: impl Into<String>, password: impl Into<String>) -> Self {
        Self { basic: Some((user.into(), password.into())), docker_config: None }
    }

    /// Credentials from a docker-style config file (`{"auths": {"REGISTRY": {"auth": …}}}`).
    #[must_use]
    pub fn with_docker_config(mut self, path: impl Into<PathBuf>) -> Self {
        self.docker_config = Some(path.into());
        self
    }

    /// The docker config file the environment names: `$DOCKER_CONFIG/config.json`, else
    /// `~/.docker/config.json`, when it exists.
    pub fn default_docker_config() -> Option<PathBuf> {
        let dir = std::env::var_os("DOCKER_CONFIG")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".docker")))?;
        let path = dir.join("config.json");
        path.is_file().then_some(path)
    }

    fn for_registry(&self, registry: &str) -> RegistryAuth {
        if let Some((user, password)) = &self.basic {
            return RegistryAuth::Basic(user.clone(), password.clone());
        }
        self.docker_config
            .as_deref()
            .and_then(|path| docker_config_auth(path, registry))
            .unwrap_or(RegistryAuth::Anonymous)
    }
}

/// The entry for `registry` in the docker config at `path`: `auth` (base64 `user:password`) or
/// `username` and `password`. Keys may carry a scheme and a path (`https://ghcr.io/v1/`).
fn docker_config_auth(path: &Path, registry: &str) -> Option<RegistryAuth> {
    let text = std::fs::read_to_string(path).ok()?;
    let config: serde_json::Value = serde_json::from_str(&text).ok()?;
    let auths = config.get("auths")?.as_object()?;
    let host_of = |key: &str| {
        let key = key.split_once("://").map_or(key, |(_, rest)| rest);
        key.split('/').next().unwrap_or(key).to_owned()
    };
    let entry = auths.iter().find(|(key, _)| host_of(key) == registry).map(|(_, entry)| entry)?;
    if let Some(encoded) = entry.get("auth").and_then(|v| v.as_str()) {
        let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
        let (user, password) = std::str::from_utf8(&decoded).ok()?.split_once(':')?;
        return Some(RegistryAuth::Basic(user.to_owned(), password.to_owned()));
    }
    let user = entry.get("username")?.as_str()?;
    let password = entry.get("password")?.as_str()?;
    Some(RegistryAuth::Basic(user.to_owned(), password.to_owned()))
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

/// A registry client with its cache.
pub struct Registry {
    client: Client,
    cache: cache::Cache,
    settings: RegistrySettings,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").field("settings", &self.settings).finish_non_exhaustive()
    }
}

impl Registry {
    /// A client for `settings`.
    pub fn new(settings: RegistrySettings) -> Self {
        // reqwest's rustls needs a process-wide crypto provider: ring, as the rest of the tree.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let protocol = if settings.insecure.is_empty() {
            ClientProtocol::Https
        } else {
            ClientProtocol::HttpsExcept(settings.insecure.clone())
        };
        let client = Client::new(ClientConfig {
            protocol,
            connect_timeout: Some(Duration::from_secs(10)),
            read_timeout: Some(Duration::from_secs(60)),
            ..ClientConfig::default()
        });
        let cache = cache::Cache::new(settings.cache_dir.clone().unwrap_or_else(RegistrySettings::default_cache_dir));
        Self { client, cache, settings }
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
        if image.is_latest() && !self.settings.allow_latest {
            return Err(RegistryError::Refused(format!(
                "{image} floats on :latest; pin a tag or a digest (or start the host with --allow-latest)"
            )));
        }
        let manifest_digest = match &image.digest {
            Some(digest) => digest.clone(),
            None => self.resolve_tag(image).await?,
        };
        let manifest = match self.cache.blob(&manifest_digest).await {
            Some(bytes) => bytes,
            None => self.pull_manifest(&image.pinned(&manifest_digest)).await?.0,
        };
        let layer = component_layer(image, &manifest)?;
        if let Some(bytes) = self.cache.blob(&layer.digest).await {
            debug!(%image, digest = %layer.digest, "component from the image cache");
            return Ok((bytes, manifest_digest));
        }
        let bytes = self.pull_layer(image, &layer).await?;
        self.cache.put_blob(&layer.digest, &bytes).await?;
        Ok((bytes, manifest_digest))
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
            .client
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
    async fn pull_layer(&self, image: &OciRef, layer: &OciDescriptor) -> Result<Vec<u8>, RegistryError> {
        let reference = Self::reference(image)?;
        let auth = self.settings.credentials.for_registry(&image.registry);
        // Authenticates for the blob pull that follows (a no-op when it already has a token).
        self.client.store_auth_if_needed(reference.resolve_registry(), &auth).await;
        let mut sink = Progress::new(image.to_string(), u64::try_from(layer.size).unwrap_or(0));
        self.client.pull_blob(&reference, layer, &mut sink).await.map_err(|e| self.failed(image, &e))?;
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
        self.client.push(&reference, &layers, config, &auth, None).await.map_err(|e| self.failed(image, &e))?;
        self.client.fetch_manifest_digest(&reference, &auth).await.map_err(|e| self.failed(image, &e))
    }
}

/// The component layer of an image manifest, refused when there is none or it is too large.
fn component_layer(image: &OciRef, manifest: &[u8]) -> Result<OciDescriptor, RegistryError> {
    let manifest: oci_client::manifest::OciImageManifest = serde_json::from_slice(manifest)
        .map_err(|e| RegistryError::Refused(format!("{image}: not an image manifest: {e}")))?;
    let layer = manifest
        .layers
        .into_iter()
        .find(|l| l.media_type == WASM_LAYER || l.media_type == WASMCLOUD_LAYER)
        .ok_or_else(|| {
            RegistryError::Refused(format!("{image} is not a wasm component image (no {WASM_LAYER} layer)"))
        })?;
    if u64::try_from(layer.size).unwrap_or(u64::MAX) > MAX_COMPONENT_BYTES {
        return Err(RegistryError::Refused(format!(
            "{image}'s component is {} bytes; a host takes at most {MAX_COMPONENT_BYTES}",
            layer.size
        )));
    }
    Ok(layer)
}

/// How often a long pull says how far it got.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// A layer's bytes as they arrive, with a progress line every second.
struct Progress {
    image: String,
    total: u64,
    bytes: Vec<u8>,
    started: Instant,
    next_report: Instant,
}

impl Progress {
    fn new(image: String, total: u64) -> Self {
        let started = Instant::now();
        Self { image, total, bytes: Vec::new(), started, next_report: started + PROGRESS_EVERY }
    }
}

impl tokio::io::AsyncWrite for Progress {
    fn poll_write(self: Pin<&mut Self>, _cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        if this.bytes.len() as u64 + buf.len() as u64 > MAX_COMPONENT_BYTES {
            return Poll::Ready(Err(std::io::Error::other(format!(
                "the layer is larger than a host takes ({MAX_COMPONENT_BYTES} bytes)"
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
    fn docker_config_entries_are_found_by_registry_host() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.json");
        let encoded = base64::engine::general_purpose::STANDARD.encode("alice:s3cret");
        std::fs::write(
            &path,
            serde_json::json!({"auths": {
                "https://registry.local:5000/v1/": {"auth": encoded},
                "ghcr.io": {"username": "bob", "password": "pw"},
            }})
            .to_string(),
        )
        .expect("write");
        let credentials = Credentials::default().with_docker_config(&path);
        assert!(
            matches!(credentials.for_registry("registry.local:5000"), RegistryAuth::Basic(u, p) if u == "alice" && p == "s3cret")
        );
        assert!(matches!(credentials.for_registry("ghcr.io"), RegistryAuth::Basic(u, _) if u == "bob"));
        assert!(matches!(credentials.for_registry("quay.io"), RegistryAuth::Anonymous));
        assert!(!format!("{:?}", Credentials::basic("u", "hidden")).contains("hidden"));
    }

    #[test]
    fn pull_policies_parse() {
        assert_eq!("always".parse::<PullPolicy>(), Ok(PullPolicy::Always));
        assert_eq!("if-not-present".parse::<PullPolicy>(), Ok(PullPolicy::IfNotPresent));
        assert!("never".parse::<PullPolicy>().is_err());
    }
}
