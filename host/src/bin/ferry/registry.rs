//! `ferry push` and the registry flags a host and `push` share: the image cache, the pull
//! policy, plain-HTTP registries, the repositories provider binaries may come from, and
//! credentials (a docker config file, or a user name with a password from a variable or a file
//! — never from the command line).

use std::path::PathBuf;

use anyhow::Context as _;
use ferry_host::oci::{Credentials, Platform, PullPolicy, Registry, RegistrySettings};
use ferry_proto::image::OciRef;

/// How registries are reached.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct RegistryArgs {
    /// Where pulled images are kept, by digest (default `$XDG_CACHE_HOME/ferry/oci` or
    /// `~/.cache/ferry/oci`).
    #[arg(long, env = "FERRY_OCI_CACHE", value_name = "DIR")]
    oci_cache: Option<PathBuf>,
    /// When a tag is looked up again: `if-not-present` (the digest it resolved to last, while
    /// its content is cached) or `always` (on every start). Digests are never looked up again.
    #[arg(long, env = "FERRY_PULL_POLICY", default_value = "if-not-present")]
    pull_policy: PullPolicy,
    /// A registry (`host:port`) reached over plain HTTP: a local registry. Repeatable.
    #[arg(long = "allow-insecure-registry", value_name = "HOST:PORT")]
    insecure: Vec<String>,
    /// Take references that float on `:latest` (refused otherwise: what runs would change
    /// under a restart).
    #[arg(long)]
    allow_latest: bool,
    /// A repository (`REGISTRY/REPOSITORY`, or a prefix of whole segments: `REGISTRY/org`)
    /// whose provider binaries this host runs (`provider.start` with an image reference).
    /// Repeatable; without one, providers come only from `--allow-file-dir`.
    #[arg(long = "allow-provider-image", value_name = "REGISTRY/REPOSITORY")]
    provider_images: Vec<String>,
    /// The user name for registries; the password comes from `FERRY_REGISTRY_PASSWORD` or
    /// `--registry-password-file`.
    #[arg(long, env = "FERRY_REGISTRY_USER", value_name = "USER")]
    registry_user: Option<String>,
    /// A file holding the registry password (`-`: standard input).
    #[arg(long, value_name = "FILE")]
    registry_password_file: Option<PathBuf>,
    /// A docker-style config file with credentials per registry (default
    /// `$DOCKER_CONFIG/config.json` or `~/.docker/config.json`, when present).
    #[arg(long, value_name = "FILE")]
    registry_config: Option<PathBuf>,
}

impl RegistryArgs {
    /// The settings these flags (and the environment) describe.
    pub(crate) fn settings(&self) -> anyhow::Result<RegistrySettings> {
        let mut credentials = match &self.registry_user {
            Some(user) => {
                let password = match &self.registry_password_file {
                    Some(path) => crate::secret::read_source(path)?.trim_end_matches(['\r', '\n']).to_owned(),
                    None => std::env::var("FERRY_REGISTRY_PASSWORD").context(
                        "--registry-user needs a password: FERRY_REGISTRY_PASSWORD or --registry-password-file",
                    )?,
                };
                Credentials::basic(user.clone(), password)
            }
            None => Credentials::default(),
        };
        if let Some(path) = self.registry_config.clone().or_else(Credentials::default_docker_config) {
            credentials = credentials.with_docker_config(path);
        }
        Ok(RegistrySettings {
            cache_dir: self.oci_cache.clone(),
            pull_policy: self.pull_policy,
            insecure: self.insecure.clone(),
            allow_latest: self.allow_latest,
            credentials,
            provider_images: self.provider_images.clone(),
        })
    }
}

/// `ferry push`.
#[derive(clap::Args, Debug)]
pub(crate) struct PushArgs {
    /// Where to publish: `oci://REGISTRY/REPOSITORY:TAG` or `REGISTRY/REPOSITORY:TAG`.
    reference: String,
    /// A component (`.wasm`); or provider executables, one per platform, each `FILE` (its
    /// platform read from the executable) or `OS/ARCH=FILE` (`linux/arm64=target/…/kv`).
    #[arg(required = true, value_name = "FILE")]
    files: Vec<String>,
    #[command(flatten)]
    registry: RegistryArgs,
}

/// Publish a component, or provider executables for one or more platforms; prints the digest
/// reference that pins what was pushed.
pub(crate) async fn push(args: PushArgs) -> anyhow::Result<()> {
    let image = OciRef::parse(&args.reference)?;
    anyhow::ensure!(image.digest.is_none(), "push to a tag, not a digest: {image}");
    let mut files = Vec::new();
    for arg in &args.files {
        let (platform, path) = match arg.split_once('=') {
            Some((platform, path)) => (Some(platform.parse::<Platform>().map_err(anyhow::Error::msg)?), path),
            None => (None, arg.as_str()),
        };
        let bytes = std::fs::read(path).with_context(|| format!("cannot read {path}"))?;
        files.push((platform, path, bytes));
    }
    let registry = Registry::new(args.registry.settings()?);
    if let [(None, path, bytes)] = files.as_slice()
        && wasmparser::Parser::is_component(bytes)
    {
        let size = bytes.len();
        let digest = registry.push_component(&image, bytes.clone()).await?;
        eprintln!("pushed component {path} ({size} bytes) as {image}");
        println!("{}", image.pinned(&digest));
        return Ok(());
    }
    let mut binaries: Vec<(Platform, Vec<u8>)> = Vec::new();
    for (platform, path, bytes) in files {
        anyhow::ensure!(
            !wasmparser::Parser::is_component(&bytes) && !wasmparser::Parser::is_core_wasm(&bytes),
            "{path} is wasm: push one component on its own, or provider executables"
        );
        let platform = match platform.or_else(|| Platform::of_executable(&bytes)) {
            Some(platform) => platform,
            None => anyhow::bail!(
                "{path} is neither a component nor a Linux executable: name its platform (OS/ARCH={path})"
            ),
        };
        anyhow::ensure!(
            binaries.iter().all(|(p, _)| *p != platform),
            "two executables for {platform}: push one per platform"
        );
        eprintln!("provider executable {path} for {platform} ({} bytes)", bytes.len());
        binaries.push((platform, bytes));
    }
    let digest = registry.push_provider(&image, binaries).await?;
    eprintln!("pushed provider as {image}");
    println!("{}", image.pinned(&digest));
    Ok(())
}
