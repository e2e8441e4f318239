//! `ferry push` and the registry flags a host and `push` share: the image cache, the pull
//! policy, plain-HTTP registries, and credentials (a docker config file, or a user name with a
//! password from a variable or a file — never from the command line).

use std::path::PathBuf;

use anyhow::Context as _;
use ferry_host::oci::{Credentials, PullPolicy, Registry, RegistrySettings};
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
        })
    }
}

/// `ferry push`.
#[derive(clap::Args, Debug)]
pub(crate) struct PushArgs {
    /// Where to publish: `oci://REGISTRY/REPOSITORY:TAG` or `REGISTRY/REPOSITORY:TAG`.
    reference: String,
    /// The component (`.wasm`) to publish.
    file: PathBuf,
    #[command(flatten)]
    registry: RegistryArgs,
}

/// Publish a component; prints the digest reference that pins what was pushed.
pub(crate) async fn push(args: PushArgs) -> anyhow::Result<()> {
    let image = OciRef::parse(&args.reference)?;
    anyhow::ensure!(image.digest.is_none(), "push to a tag, not a digest: {image}");
    let bytes = std::fs::read(&args.file).with_context(|| format!("cannot read {}", args.file.display()))?;
    wasmparser::Parser::is_component(&bytes)
        .then_some(())
        .with_context(|| format!("{} is not a wasm component", args.file.display()))?;
    let size = bytes.len();
    let registry = Registry::new(args.registry.settings()?);
    let digest = registry.push_component(&image, bytes).await?;
    eprintln!("pushed {} ({size} bytes) as {image}", args.file.display());
    println!("{}", image.pinned(&digest));
    Ok(())
}
