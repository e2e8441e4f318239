//! `ferry nats-config`: a nats-server configuration for one lattice in which every process
//! connects as itself — a NATS account for the lattice, an nkey user for the hosts, one for
//! operators' tools and one per provider with only its own subjects
//! ([`ferry_proto::permissions`]) — and the seed of each identity, written 0600 beside it.
//! Providers that keep components' data in JetStream get a second identity in an account of
//! its own, apart from the lattice's buckets. Nothing without one of those keys gets in.
//!
//! Seeds already in the directory are kept, so running it again (to add a provider) changes
//! no one's identity.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use ferry_proto::permissions::{self, NatsUser, ProviderGrants};

#[derive(clap::Args)]
pub(crate) struct NatsConfigArgs {
    /// Lattice name.
    #[arg(long, env = "FERRY_LATTICE", default_value = "default")]
    lattice: String,
    /// Directory written: nats-server.conf, host.nk, ctl.nk, providers/{ID}.nk and, for
    /// providers granted `jetstream`, providers/{ID}.store.nk (give providers/ to hosts as
    /// --provider-nats-dir).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// A provider of the lattice and what it may do beyond its own subjects, `ID[:GRANTS]`;
    /// repeatable. GRANTS is a comma-separated list of `calls` (it invokes components, as
    /// http-server and messaging do), `jetstream` (it keeps components' data in JetStream, in
    /// an account apart from the lattice's) and
    /// `subjects=S[|S…]` (application subjects it publishes and subscribes to).
    #[arg(long = "provider", value_name = "ID[:GRANTS]")]
    providers: Vec<String>,
    /// Address the server listens on (`listen:`); by default nats-server's own.
    #[arg(long, value_name = "HOST:PORT")]
    listen: Option<String>,
    /// JetStream's store directory; by default nats-server's own.
    #[arg(long, value_name = "DIR")]
    store_dir: Option<PathBuf>,
    /// TLS: the server's certificate (PEM); with --tls-key.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// TLS: the server certificate's key (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// TLS: certificate authorities that clients' certificates must chain to; with
    /// --tls-verify-clients every client must present one (mutual TLS).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_ca: Option<PathBuf>,
    /// Mutual TLS: refuse clients without a certificate from --tls-ca.
    #[arg(long, requires = "tls_ca")]
    tls_verify_clients: bool,
}

/// One identity: its seed file (created when missing) and public key.
fn identity(path: &Path) -> anyhow::Result<String> {
    if let Ok(seed) = std::fs::read_to_string(path) {
        let pair = nkeys::KeyPair::from_seed(seed.trim())
            .with_context(|| format!("{} does not hold a user nkey seed", path.display()))?;
        anyhow::ensure!(
            pair.public_key().starts_with('U'),
            "{} holds a seed of another kind than a NATS user (U…)",
            path.display()
        );
        return Ok(pair.public_key());
    }
    let pair = nkeys::KeyPair::new_user();
    crate::keys::write_secret(path, &pair.seed().context("failed to encode a new seed")?)?;
    Ok(pair.public_key())
}

impl NatsConfigArgs {
    /// The configuration `ferry up` runs its own nats-server with: on `listen`, storing in
    /// `store_dir`, for `providers` (`ID[:GRANTS]`), written to `out`.
    pub(crate) fn local(lattice: &str, out: &Path, listen: &str, store_dir: &Path, providers: &[&str]) -> Self {
        Self {
            lattice: lattice.to_owned(),
            out: out.to_owned(),
            providers: providers.iter().map(|p| (*p).to_owned()).collect(),
            listen: Some(listen.to_owned()),
            store_dir: Some(store_dir.to_owned()),
            tls_cert: None,
            tls_key: None,
            tls_ca: None,
            tls_verify_clients: false,
        }
    }
}

pub(crate) fn run(args: NatsConfigArgs) -> anyhow::Result<()> {
    let providers = generate(&args)?;
    println!("wrote {}", args.out.join("nats-server.conf").display());
    let provider_dir = args.out.join("providers");
    println!("hosts:     FERRY_NATS_NKEY_FILE={}", args.out.join("host.nk").display());
    println!("           --provider-nats-dir {}", provider_dir.display());
    println!("operators: FERRY_NATS_NKEY_FILE={}", args.out.join("ctl.nk").display());
    for (id, grants) in &providers {
        println!("provider {id}: FERRY_NATS_NKEY_FILE={}", provider_dir.join(format!("{id}.nk")).display());
        if grants.jetstream {
            println!("    and FERRY_STORE_NATS_NKEY_FILE={}", provider_dir.join(format!("{id}.store.nk")).display());
        }
    }
    Ok(())
}

/// Write the configuration and any missing seed; the providers and their grants.
pub(crate) fn generate(args: &NatsConfigArgs) -> anyhow::Result<Vec<(String, ProviderGrants)>> {
    ferry_proto::subject::validate_id("lattice", &args.lattice)?;
    let mut providers = Vec::new();
    for spec in &args.providers {
        let (id, grants) = spec.split_once(':').unwrap_or((spec.as_str(), ""));
        ferry_proto::subject::validate_id("provider id", id)?;
        let grants = ProviderGrants::parse(grants).with_context(|| format!("in --provider {spec}"))?;
        anyhow::ensure!(!providers.iter().any(|(seen, _)| seen == id), "provider {id} is given twice");
        providers.push((id.to_owned(), grants));
    }
    let provider_dir = args.out.join("providers");
    std::fs::create_dir_all(&provider_dir).with_context(|| format!("cannot create {}", provider_dir.display()))?;

    let ids: Vec<&str> = providers.iter().map(|(id, _)| id.as_str()).collect();
    let mut users = vec![
        NatsUser {
            name: "hosts".into(),
            nkey: identity(&args.out.join("host.nk"))?,
            permissions: permissions::trusted(),
        },
        NatsUser {
            name: "operators (ferry ctl, ferry app, ferry call)".into(),
            nkey: identity(&args.out.join("ctl.nk"))?,
            permissions: permissions::trusted(),
        },
    ];
    let mut store_users = Vec::new();
    for (id, grants) in &providers {
        users.push(NatsUser {
            name: format!("provider {id}"),
            nkey: identity(&provider_dir.join(format!("{id}.nk")))?,
            permissions: permissions::provider(&args.lattice, id, grants, &ids)?,
        });
        if grants.jetstream {
            store_users.push(NatsUser {
                name: format!("provider {id}: components' data"),
                nkey: identity(&provider_dir.join(format!("{id}.store.nk")))?,
                permissions: permissions::trusted(),
            });
        }
    }
    let (lattice_account, store_account) = permissions::account_names(&args.lattice)?;
    let mut accounts = vec![(lattice_account, users)];
    if !store_users.is_empty() {
        accounts.push((store_account, store_users));
    }

    let mut config = format!(
        "# nats-server configuration for Ferry lattice {:?}, written by `ferry nats-config`.\n\
         # Every client authenticates with an nkey of its own; see docs/security.md.\n",
        args.lattice
    );
    if let Some(listen) = &args.listen {
        config.push_str(&format!("listen: {listen:?}\n"));
    }
    match &args.store_dir {
        Some(dir) => config.push_str(&format!("jetstream {{ store_dir: {:?} }}\n", dir.display().to_string())),
        None => config.push_str("jetstream: enabled\n"),
    }
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        config.push_str(&format!(
            "tls {{\n  cert_file: {:?}\n  key_file: {:?}\n",
            cert.display().to_string(),
            key.display().to_string()
        ));
        if let Some(ca) = &args.tls_ca {
            config.push_str(&format!("  ca_file: {:?}\n", ca.display().to_string()));
        }
        if args.tls_verify_clients {
            config.push_str("  verify: true\n");
        }
        config.push_str("}\n");
    }
    config.push_str(&permissions::accounts_block(&accounts));
    let path = args.out.join("nats-server.conf");
    std::fs::write(&path, config).with_context(|| format!("cannot write {}", path.display()))?;

    Ok(providers)
}
