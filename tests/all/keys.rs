//! `ferry keys gen`: a key pair of each kind, as text or JSON, and a seed written to a file only
//! its owner can read, never over an existing one.

use std::{os::unix::fs::PermissionsExt as _, process::Command};

use ferry_tests::binary;

/// Run `ferry ARGS`; (success, stdout, stderr).
fn ferry(args: &[&str]) -> anyhow::Result<(bool, String, String)> {
    let out = Command::new(binary("ferry")?).args(args).output()?;
    Ok((out.status.success(), String::from_utf8(out.stdout)?, String::from_utf8(out.stderr)?))
}

#[test]
fn keys_gen_makes_each_kind_prints_json_and_writes_seed_files_0600() -> anyhow::Result<()> {
    for (kind, letter) in [
        ("account", 'A'),
        ("cluster", 'C'),
        ("host", 'N'),
        ("component", 'M'),
        ("provider", 'V'),
        ("operator", 'O'),
        ("user", 'U'),
    ] {
        let (ok, stdout, stderr) = ferry(&["keys", "gen", kind])?;
        assert!(ok, "{kind}: {stderr}");
        let seed = stdout.lines().find_map(|l| l.strip_prefix("seed:")).map(str::trim).unwrap_or_default();
        let public = stdout.lines().find_map(|l| l.strip_prefix("public key:")).map(str::trim).unwrap_or_default();
        assert!(seed.starts_with(&format!("S{letter}")) && seed.len() == 58, "{kind}: seed {seed:?}");
        assert!(public.starts_with(letter) && public.len() == 56, "{kind}: public key {public:?}");
        assert_eq!(nkeys::KeyPair::from_seed(seed)?.public_key(), public, "{kind}: the seed is not the public key's");

        let (ok, stdout, _) = ferry(&["keys", "gen", kind, "--json"])?;
        assert!(ok);
        let json: serde_json::Value = serde_json::from_str(&stdout)?;
        assert_eq!(json["kind"], kind);
        let seed = json["seed"].as_str().unwrap_or_default();
        assert_eq!(nkeys::KeyPair::from_seed(seed)?.public_key(), json["public_key"].as_str().unwrap_or_default());
    }

    // --out: the seed alone, mode 0600, usable as a seed file; stdout shows no seed.
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("cluster.nk");
    let path = file.to_str().unwrap_or_default();
    let (ok, stdout, stderr) = ferry(&["keys", "gen", "cluster", "--out", path, "--json"])?;
    assert!(ok, "{stderr}");
    assert!(!stdout.contains("SC"), "the seed was printed as well: {stdout}");
    let json: serde_json::Value = serde_json::from_str(&stdout)?;
    assert!(json.get("seed").is_none(), "{json}");
    assert_eq!(std::fs::metadata(&file)?.permissions().mode() & 0o777, 0o600);
    let seed = std::fs::read_to_string(&file)?;
    assert_eq!(nkeys::KeyPair::from_seed(seed.trim())?.public_key(), json["public_key"].as_str().unwrap_or_default());
    let (ok, stdout, stderr) =
        ferry(&["keys", "credential", "--cluster-seed-file", path, "--lattice", "l", "--provider-id", "p"])?;
    assert!(ok && !stdout.trim().is_empty(), "the written seed does not work as a seed file: {stderr}");

    // Never over an existing file.
    let (ok, _, stderr) = ferry(&["keys", "gen", "operator", "--out", path])?;
    assert!(!ok && stderr.contains("not overwriting"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&file)?, seed, "the existing seed file changed");

    // An unknown kind is refused with the list of kinds.
    let (ok, _, stderr) = ferry(&["keys", "gen", "robot"])?;
    assert!(!ok && stderr.contains("account") && stderr.contains("provider"), "{stderr}");
    Ok(())
}
