//! Secrets on the command line: a cluster seed and config values can come from a file, stdin or
//! the environment, so they need not sit in an argument list where every user of the machine
//! can read them (`ps`, `/proc/*/cmdline`, shell history).

use std::{io::Read as _, path::PathBuf};

use anyhow::{Context as _, bail};

/// Where a cluster seed comes from.
#[derive(clap::Args, Debug)]
pub(crate) struct SeedArgs {
    /// The lattice's cluster seed (SC…). Visible in the process list when given as a flag:
    /// prefer FERRY_CLUSTER_SEED or --cluster-seed-file.
    #[arg(long, env = "FERRY_CLUSTER_SEED", hide_env_values = true)]
    cluster_seed: Option<String>,
    /// Read the cluster seed from FILE (`-` for stdin).
    #[arg(long, env = "FERRY_CLUSTER_SEED_FILE", value_name = "FILE", conflicts_with = "cluster_seed")]
    cluster_seed_file: Option<PathBuf>,
}

impl SeedArgs {
    /// The seed, if one was given either way.
    pub(crate) fn resolve(self) -> anyhow::Result<Option<String>> {
        match (self.cluster_seed, self.cluster_seed_file) {
            (Some(seed), _) => Ok(Some(seed)),
            (None, Some(path)) => Ok(Some(read_source(&path)?.trim().to_owned())),
            (None, None) => Ok(None),
        }
    }
}

/// Where an operator seed comes from, for signing control commands.
#[derive(clap::Args, Debug)]
pub(crate) struct OperatorSeedArgs {
    /// Sign commands with the operator seed in FERRY_OPERATOR_SEED (SO…), as hosts started
    /// with --operator-key require.
    #[arg(long, env = "FERRY_OPERATOR_SEED", hide_env_values = true, hide = true)]
    operator_seed: Option<String>,
    /// Sign commands with the operator seed in FILE (`-` for stdin).
    #[arg(long, env = "FERRY_OPERATOR_SEED_FILE", value_name = "FILE", conflicts_with = "operator_seed")]
    operator_seed_file: Option<PathBuf>,
}

impl OperatorSeedArgs {
    /// The operator key, if a seed was given either way.
    pub(crate) fn resolve(self) -> anyhow::Result<Option<ferry_proto::ctl::operator::OperatorKey>> {
        let seed = match (self.operator_seed, self.operator_seed_file) {
            (Some(seed), _) => seed,
            (None, Some(path)) => read_source(&path)?,
            (None, None) => return Ok(None),
        };
        let key = ferry_proto::ctl::operator::OperatorKey::from_seed(&seed).context("invalid operator seed")?;
        Ok(Some(key))
    }
}

/// The text of `path`, or of stdin for `-`.
pub(crate) fn read_source(path: &PathBuf) -> anyhow::Result<String> {
    if path.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).context("failed to read stdin")?;
        return Ok(text);
    }
    std::fs::read_to_string(path).with_context(|| format!("failed to read {}", path.display()))
}

/// `key=value` lines; blank lines and lines starting with `#` are skipped.
pub(crate) fn parse_pairs(text: &str) -> anyhow::Result<Vec<(String, String)>> {
    let mut pairs = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            bail!("line {}: expected key=value", number + 1);
        };
        pairs.push((key.trim().to_owned(), value.to_owned()));
    }
    Ok(pairs)
}

/// `KEY=VAR` pairs resolved to `KEY=value of $VAR`.
pub(crate) fn from_env(pairs: Vec<(String, String)>) -> anyhow::Result<Vec<(String, String)>> {
    pairs
        .into_iter()
        .map(|(key, var)| {
            let value =
                std::env::var(&var).with_context(|| format!("environment variable {var} (for {key}) is not set"))?;
            Ok((key, value))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn pairs_are_read_line_by_line() {
        let pairs = super::parse_pairs("# secrets\npassword=a=b\n\nuser = x\r\n").unwrap();
        assert_eq!(pairs, [("password".into(), "a=b".into()), ("user".into(), " x".into())]);
        assert!(super::parse_pairs("novalue").is_err());
    }
}
