//! `ferry keys`: new key pairs of every kind a lattice uses, cluster seeds, operator keys and
//! provider credentials.

use std::{io::Write as _, os::unix::fs::OpenOptionsExt as _, path::PathBuf};

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand, ValueEnum};
use ferry_proto::auth::ClusterKey;

#[derive(Args)]
pub(crate) struct KeysArgs {
    #[command(subcommand)]
    command: KeysCommand,
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Generate a key pair of one kind (nkeys, as NATS and wasmCloud write them): prints the
    /// seed (secret) and the public key, or writes the seed to a file with --out.
    Gen(GenArgs),
    /// Generate a cluster seed for a new lattice; prints the seed (secret) and its public key.
    Cluster,
    /// Generate an operator key, which signs control commands; prints the seed (secret: give it
    /// to `ferry ctl` as FERRY_OPERATOR_SEED or --operator-seed-file) and the public key (give
    /// it to hosts as --operator-key).
    Operator,
    /// Issue a credential that lets a provider join a lattice for a limited time.
    Credential {
        #[command(flatten)]
        seed: crate::secret::SeedArgs,
        /// Lattice the provider joins.
        #[arg(long, default_value = "default")]
        lattice: String,
        /// The provider id.
        #[arg(long)]
        provider_id: String,
        /// Validity in hours, counted from the start of the current hour.
        #[arg(long, default_value_t = 24)]
        hours: u32,
        /// While the cluster key is rotated: also a credential from the cluster seed in FILE
        /// (repeatable), so the provider is taken up under either key (docs/security.md).
        #[arg(long = "also-cluster-seed-file", value_name = "FILE")]
        also: Vec<PathBuf>,
    },
}

/// `ferry keys gen`.
#[derive(Args)]
struct GenArgs {
    /// What the key is for.
    kind: KeyKind,
    /// Print JSON (`kind`, `public_key`, and `seed` unless --out is given).
    #[arg(long)]
    json: bool,
    /// Write the seed alone to FILE (created with mode 0600; an existing file is never
    /// overwritten), usable as a `--…-seed-file`; only the public key is printed.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

/// The kinds of key pair, by the nkeys prefix of their public key.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum KeyKind {
    /// An account (`A…`): a NATS account that owns a lattice's users.
    Account,
    /// A cluster (`C…`): the lattice's root secret, from which hosts derive every MAC key.
    Cluster,
    /// A host (`N…`).
    Host,
    /// A component (`M…`, a module key, as wasmCloud signs components with).
    Component,
    /// A provider (`V…`, a service key, as wasmCloud identifies providers).
    Provider,
    /// An operator (`O…`): signs control commands and issues claims.
    Operator,
    /// A NATS user (`U…`): one process's identity on the lattice's NATS (`ferry nats-config`).
    User,
}

impl KeyKind {
    fn generate(self) -> nkeys::KeyPair {
        match self {
            Self::Account => nkeys::KeyPair::new_account(),
            Self::Cluster => nkeys::KeyPair::new_cluster(),
            Self::Host => nkeys::KeyPair::new_server(),
            Self::Component => nkeys::KeyPair::new_module(),
            Self::Provider => nkeys::KeyPair::new_service(),
            Self::Operator => nkeys::KeyPair::new_operator(),
            Self::User => nkeys::KeyPair::new_user(),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Account => "account",
            Self::Cluster => "cluster",
            Self::Host => "host",
            Self::Component => "component",
            Self::Provider => "provider",
            Self::Operator => "operator",
            Self::User => "user",
        }
    }
}

fn generate(args: GenArgs) -> anyhow::Result<()> {
    let pair = args.kind.generate();
    let seed = pair.seed().context("failed to encode the new seed")?;
    let public_key = pair.public_key();
    if let Some(path) = &args.out {
        write_secret(path, &seed)?;
    }
    let shown_seed = args.out.is_none().then_some(seed.as_str());
    if args.json {
        let mut value = serde_json::json!({ "kind": args.kind.name(), "public_key": public_key });
        if let Some(seed) = shown_seed {
            value["seed"] = seed.into();
        }
        println!("{value}");
    } else {
        if let Some(seed) = shown_seed {
            println!("seed:       {seed}");
        }
        println!("public key: {public_key}");
    }
    if let Some(path) = &args.out {
        eprintln!("seed of {} key {public_key} written to {} (mode 0600)", args.kind.name(), path.display());
    }
    Ok(())
}

/// Create `path` readable by its owner only and write `secret` to it; an existing file is an
/// error, never overwritten (it may hold the only copy of another key).
pub(crate) fn write_secret(path: &std::path::Path, secret: &str) -> anyhow::Result<()> {
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).map_err(|err| {
        if err.kind() == std::io::ErrorKind::AlreadyExists {
            anyhow::anyhow!("{} exists; not overwriting it (it may hold another key)", path.display())
        } else {
            anyhow::anyhow!("cannot create {}: {err}", path.display())
        }
    })?;
    if let Err(err) = file.write_all(format!("{secret}\n").as_bytes()).and_then(|()| file.sync_all()) {
        drop(file);
        let _ = std::fs::remove_file(path);
        bail!("cannot write {}: {err}", path.display());
    }
    Ok(())
}

pub(crate) fn run(args: KeysArgs) -> anyhow::Result<()> {
    match args.command {
        KeysCommand::Gen(args) => generate(args)?,
        KeysCommand::Cluster => {
            let (key, seed) = ClusterKey::generate().context("failed to generate cluster key")?;
            println!("seed:       {seed}");
            println!("public key: {}", key.public_key());
        }
        KeysCommand::Operator => {
            let (key, seed) =
                ferry_proto::ctl::operator::OperatorKey::generate().context("failed to generate operator key")?;
            println!("seed:       {seed}");
            println!("public key: {}", key.public_key());
        }
        KeysCommand::Credential { seed, lattice, provider_id, hours, also } => {
            let cluster_seed =
                seed.resolve()?.context("a cluster seed is needed: FERRY_CLUSTER_SEED or --cluster-seed-file")?;
            ferry_proto::subject::validate_id("provider id", &provider_id)?;
            ferry_proto::subject::validate_id("lattice", &lattice)?;
            let mut seeds = vec![cluster_seed];
            for path in &also {
                seeds.push(crate::secret::read_source(path)?.trim().to_owned());
            }
            let now = ferry_proto::time::now_ms();
            let issued = seeds
                .iter()
                .map(|seed| {
                    let key = ClusterKey::from_seed(seed).context("failed to read cluster seed")?;
                    Ok(key.issue_credential(&lattice, &provider_id, now, hours))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let credential = ferry_proto::auth::CredentialSet::new(issued)?;
            eprintln!(
                "credential for {provider_id} in {lattice} from {}, valid for {hours} h from the start of this hour",
                credential.issuers().join(" and ")
            );
            println!("{}", credential.encode());
        }
    }
    Ok(())
}
