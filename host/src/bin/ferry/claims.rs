//! `ferry claims sign|inspect`: embed signed claims in a component, in the format wasmCloud's
//! `wash claims sign` writes, and show a component's claims.

use std::{path::PathBuf, time::Duration};

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use ferry_host::claims;
use ferry_proto::claims::{ComponentClaims, ComponentMetadata};
use nkeys::KeyPair;

#[derive(Args)]
pub(crate) struct ClaimsArgs {
    #[command(subcommand)]
    command: ClaimsCommand,
}

#[derive(Subcommand)]
enum ClaimsCommand {
    /// Sign COMPONENT: embed claims signed by the issuer, replacing any it carried.
    Sign(Box<SignArgs>),
    /// Show COMPONENT's claims, and whether they verify against its bytes and the clock.
    Inspect {
        /// The component (.wasm).
        component: PathBuf,
        /// Print JSON: the claims, and `valid` with the reason when they are not.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
struct SignArgs {
    /// The component (.wasm).
    component: PathBuf,
    /// The issuer's account seed (SA…, `ferry keys gen account --out FILE`): a FILE holding it
    /// (`-` for stdin). Given the seed itself it works, but every user of the machine can read
    /// it in the process list: prefer a file or FERRY_CLAIMS_ISSUER.
    #[arg(long, value_name = "FILE", required_unless_present = "issuer_env")]
    issuer: Option<String>,
    #[arg(long = "issuer-from-env", env = "FERRY_CLAIMS_ISSUER", hide = true, hide_env_values = true)]
    issuer_env: Option<String>,
    /// The component's own seed (SM…, `ferry keys gen component --out FILE`), as a FILE: keeps
    /// its identity across versions. Without it, a new identity is made.
    #[arg(long, value_name = "FILE")]
    subject: Option<String>,
    /// The component's name.
    #[arg(long)]
    name: String,
    /// A capability it may call: a WIT package (wasi:keyvalue), an interface
    /// (wasi:keyvalue/atomics) or wascap's name (wasmcloud:keyvalue); repeatable. With none,
    /// its calls are not restricted (as on wasmCloud).
    #[arg(long = "cap", value_name = "CAPABILITY")]
    caps: Vec<String>,
    /// A tag; repeatable.
    #[arg(long = "tag")]
    tags: Vec<String>,
    /// A revision number.
    #[arg(long)]
    rev: Option<i32>,
    /// A version string.
    #[arg(long)]
    ver: Option<String>,
    /// Valid until this long from now: `30d`, `12h`, `15m`, `90s`; a bare number counts days
    /// (as `wash` does). Without it, the claims do not expire.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    expires: Option<Duration>,
    /// Not valid until this long from now (same form as --expires).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    not_before: Option<Duration>,
    /// Write the signed component to FILE (default: COMPONENT with `_s` before `.wasm`, as
    /// `wash` names it).
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

/// `30d`, `12h`, `15m`, `90s`, or a number of days.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, "d"),
    };
    let number: u64 = number.parse().map_err(|_| format!("{text:?} is not a duration like 30d, 12h, 15m or 90s"))?;
    let seconds = match unit {
        "d" => 86_400,
        "h" => 3_600,
        "m" => 60,
        "s" => 1,
        other => return Err(format!("unknown unit {other:?} in {text:?}: use d, h, m or s")),
    };
    number.checked_mul(seconds).map(Duration::from_secs).ok_or_else(|| format!("{text:?} is too long"))
}

/// The key pair from `source`: a seed file, `-` for stdin, or (visibly) the seed itself.
fn key_from(source: &str, what: &str, prefix: &str) -> anyhow::Result<KeyPair> {
    let seed = if source.starts_with(prefix) && KeyPair::from_seed(source).is_ok() {
        eprintln!("warning: the {what} seed was given on the command line, where other users can read it");
        source.to_owned()
    } else {
        crate::secret::read_source(&PathBuf::from(source))?.trim().to_owned()
    };
    let key = KeyPair::from_seed(&seed).map_err(|_| anyhow::anyhow!("the {what} is not an nkeys seed"))?;
    if !seed.starts_with(prefix) {
        bail!("the {what} seed must be of the kind {prefix}… (`ferry keys gen …`)");
    }
    Ok(key)
}

fn now_s() -> u64 {
    ferry_proto::time::now_ms() / 1000
}

fn sign(args: SignArgs) -> anyhow::Result<()> {
    let issuer = match (&args.issuer, &args.issuer_env) {
        (Some(source), _) => key_from(source, "issuer", "SA")?,
        (None, Some(seed)) => key_from(seed, "issuer", "SA")?,
        (None, None) => bail!("give the issuer's seed with --issuer FILE or FERRY_CLAIMS_ISSUER"),
    };
    let subject = match &args.subject {
        Some(source) => key_from(source, "subject", "SM")?,
        None => KeyPair::new_module(),
    };
    let bytes = std::fs::read(&args.component).with_context(|| format!("cannot read {}", args.component.display()))?;
    let metadata = ComponentMetadata {
        name: Some(args.name),
        caps: (!args.caps.is_empty()).then_some(args.caps),
        tags: (!args.tags.is_empty()).then_some(args.tags),
        rev: args.rev,
        ver: args.ver,
        ..ComponentMetadata::default()
    };
    let mut claims = ComponentClaims::new(&issuer.public_key(), &subject.public_key(), metadata);
    claims.expires = args.expires.map(|d| now_s() + d.as_secs());
    claims.not_before = args.not_before.map(|d| now_s() + d.as_secs());
    let signed = claims::sign(&bytes, claims, &issuer).context("cannot sign the component")?;
    let out = args.out.unwrap_or_else(|| {
        let stem = args.component.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        args.component.with_file_name(format!("{stem}_s.wasm"))
    });
    std::fs::write(&out, &signed).with_context(|| format!("cannot write {}", out.display()))?;
    println!("signed component written to {}", out.display());
    println!("component key (subject): {}", subject.public_key());
    println!("issuer:                  {}", issuer.public_key());
    if args.subject.is_none() {
        println!("(a new component key was made and not kept; pass --subject FILE to keep one across versions)");
    }
    Ok(())
}

fn inspect(component: &PathBuf, json: bool) -> anyhow::Result<()> {
    let bytes = std::fs::read(component).with_context(|| format!("cannot read {}", component.display()))?;
    let Some(claims) = claims::read(&bytes)? else {
        if json {
            println!("{}", serde_json::json!({"signed": false}));
            return Ok(());
        }
        bail!("{} carries no claims", component.display());
    };
    let verdict = claims.admit(&claims::module_hash(&bytes)?, now_s(), &[]);
    if json {
        let mut value = serde_json::json!({"signed": true, "valid": verdict.is_ok(), "claims": claims});
        if let Err(err) = &verdict {
            value["reason"] = err.reason().into();
            value["error"] = err.to_string().into();
        }
        println!("{value}");
        return Ok(());
    }
    let meta = claims.metadata.clone().unwrap_or_default();
    let stamp = |s: Option<u64>, none: &str| s.map_or(none.to_owned(), |s| format!("{s} (seconds since the epoch)"));
    println!("component:  {}", meta.name.as_deref().unwrap_or("(unnamed)"));
    println!("key:        {}", claims.subject);
    println!("issuer:     {}", claims.issuer);
    println!("issued:     {}", claims.issued_at);
    println!("expires:    {}", stamp(claims.expires, "never"));
    println!("not before: {}", stamp(claims.not_before, "immediately"));
    println!("hash:       {}", meta.module_hash);
    println!("caps:       {}", meta.caps.map_or("(none: calls not restricted)".to_owned(), |c| c.join(", ")));
    if let Some(tags) = meta.tags {
        println!("tags:       {}", tags.join(", "));
    }
    match verdict {
        Ok(()) => println!("valid:      yes"),
        Err(err) => println!("valid:      no — {err}"),
    }
    Ok(())
}

pub(crate) fn run(args: ClaimsArgs) -> anyhow::Result<()> {
    match args.command {
        ClaimsCommand::Sign(args) => sign(*args),
        ClaimsCommand::Inspect { component, json } => inspect(&component, json),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn durations_take_units_and_bare_days() {
        assert_eq!(super::parse_duration("2").unwrap().as_secs(), 2 * 86_400);
        assert_eq!(super::parse_duration("90s").unwrap().as_secs(), 90);
        assert_eq!(super::parse_duration("3h").unwrap().as_secs(), 3 * 3_600);
        assert!(super::parse_duration("3w").is_err());
        assert!(super::parse_duration("-1d").is_err());
    }
}
