//! `ferry keys`: cluster seeds, operator keys and provider credentials.

use anyhow::Context as _;
use clap::{Args, Subcommand};
use ferry_proto::auth::ClusterKey;

#[derive(Args)]
pub(crate) struct KeysArgs {
    #[command(subcommand)]
    command: KeysCommand,
}

#[derive(Subcommand)]
enum KeysCommand {
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
    },
}

pub(crate) fn run(args: KeysArgs) -> anyhow::Result<()> {
    match args.command {
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
        KeysCommand::Credential { seed, lattice, provider_id, hours } => {
            let cluster_seed =
                seed.resolve()?.context("a cluster seed is needed: FERRY_CLUSTER_SEED or --cluster-seed-file")?;
            ferry_proto::subject::validate_id("provider id", &provider_id)?;
            ferry_proto::subject::validate_id("lattice", &lattice)?;
            let key = ClusterKey::from_seed(&cluster_seed).context("failed to read cluster seed")?;
            let credential = key.issue_credential(&lattice, &provider_id, ferry_proto::time::now_ms(), hours);
            eprintln!(
                "credential for {provider_id} in {lattice}, valid until {} (ms since epoch)",
                credential.valid_until_ms()
            );
            println!("{}", credential.encode());
        }
    }
    Ok(())
}
