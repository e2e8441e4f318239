//! Components from a real OCI registry (Debian's `docker-registry`): `ferry push` publishes a
//! component; hosts start it by tag and by digest, pull it into their image cache, start it
//! from the cache with the registry gone, notice a tampered cache entry and pull it again; a
//! registry with htpasswd authentication serves a host with credentials, refuses one without,
//! and the password appears in no log line or argument list.

use std::path::Path;

use ferry_proto::{ctl::ComponentStart, link::Link};
use ferry_tests::{Lattice, RegistryServer, TEST_CLIENT_ID, binary, build_component, leaks};
use serde_json::json;

/// `ferry push REFERENCE FILE` to `registry` (plain HTTP), with `extra` flags; the digest
/// reference it prints, or its error output.
fn push(
    registry: &RegistryServer,
    reference: &str,
    file: &Path,
    extra: &[&str],
) -> anyhow::Result<Result<String, String>> {
    let output = std::process::Command::new(binary("ferry")?)
        .arg("push")
        .arg(reference)
        .arg(file)
        .args(["--allow-insecure-registry", &registry.address])
        .args(extra)
        .env("RUST_BACKTRACE", "0")
        .output()?;
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout).trim().to_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    );
    assert!(leaks::find_secrets(&stdout).is_empty() && leaks::find_secrets(&stderr).is_empty(), "{stdout}\n{stderr}");
    Ok(if output.status.success() { Ok(stdout) } else { Err(stderr) })
}

/// Start `image` as component `id` on `host_id`, linked for the test client; the host's
/// refusal when it fails.
async fn start(lattice: &Lattice, host_id: &str, id: &str, image: &str) -> anyhow::Result<Result<(), String>> {
    let start = ComponentStart {
        request_id: format!("start-{id}"),
        component_id: id.to_owned(),
        image: image.to_owned(),
        max_instances: Some(2),
        config: Vec::new(),
    };
    let resp = lattice.ctl.send(&start, Some(host_id)).await?;
    if !resp.success {
        return Ok(Err(resp.message));
    }
    lattice.link(Link::new(TEST_CLIENT_ID, id, "wasi", "http", vec!["incoming-handler".into()])).await?;
    Ok(Ok(()))
}

/// `id` answers the http-echo component's default route.
async fn answers(lattice: &Lattice, id: &str) -> anyhow::Result<()> {
    let (status, body) = lattice.call(id, json!({})).await?;
    anyhow::ensure!(status == 200 && body == json!("hello"), "{id} answered {status} {body}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn components_start_by_tag_and_digest_from_a_registry_then_from_the_cache_and_tampering_is_repulled()
-> anyhow::Result<()> {
    let mut registry = RegistryServer::start(None).await?;
    let wasm = build_component("http-echo")?;
    let tagged = format!("oci://{}/test/echo:1.0", registry.address);
    let pinned = push(&registry, &tagged, &wasm, &[])?.map_err(anyhow::Error::msg)?;
    let digest = pinned.rsplit_once('@').map(|(_, d)| d.to_owned()).expect("a digest reference");
    assert!(pinned.starts_with(&tagged), "{pinned}");

    let cache = tempfile::tempdir()?;
    let cache_dir = cache.path().display().to_string();
    let address = registry.address.clone();
    let host_args = ["--allow-insecure-registry", &address, "--oci-cache", &cache_dir];
    let lattice = Lattice::start().await?;
    let (mut host, host_id) = lattice.start_host_with(&host_args).await?;
    start(&lattice, &host_id, "by-tag", &tagged).await?.map_err(anyhow::Error::msg)?;
    answers(&lattice, "by-tag").await?;
    // The plain form (no oci://), pinned to the digest alone.
    let plain_digest = format!("{}/test/echo@{digest}", registry.address);
    start(&lattice, &host_id, "by-digest", &plain_digest).await?.map_err(anyhow::Error::msg)?;
    answers(&lattice, "by-digest").await?;
    // A reference that floats on :latest is refused, with the reason.
    let latest = start(&lattice, &host_id, "latest", &format!("{}/test/echo", registry.address)).await?;
    assert!(latest.as_ref().is_err_and(|m| m.contains(":latest")), "{latest:?}");

    // The registry goes away and the host restarts: the digest, and the tag it resolved to,
    // start from the cache.
    registry.stop();
    assert!(host.terminate(std::time::Duration::from_secs(10)));
    let (mut host, host_id) = lattice.start_host_with(&host_args).await?;
    start(&lattice, &host_id, "cached-digest", &pinned).await?.map_err(anyhow::Error::msg)?;
    answers(&lattice, "cached-digest").await?;
    start(&lattice, &host_id, "cached-tag", &tagged).await?.map_err(anyhow::Error::msg)?;
    answers(&lattice, "cached-tag").await?;

    // A tampered cache entry is not run: with the registry still gone the start fails, and
    // once it is back the component is pulled again and runs.
    let layer = cache.path().join("blobs/sha256").join(ferry_proto::image::sha256_hex(&std::fs::read(&wasm)?));
    assert!(layer.is_file(), "the component's layer is cached under its digest: {}", layer.display());
    std::fs::write(&layer, b"\0asm tampered")?;
    let refused = start(&lattice, &host_id, "tampered", &pinned).await?;
    assert!(refused.is_err(), "a tampered cache entry was run");
    registry.start_again().await?;
    start(&lattice, &host_id, "repulled", &pinned).await?.map_err(anyhow::Error::msg)?;
    answers(&lattice, "repulled").await?;
    assert_eq!(std::fs::read(&layer)?, std::fs::read(&wasm)?, "the cache entry was pulled again");
    host.wait_for_log("does not match its digest", std::time::Duration::from_secs(5)).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_registry_with_htpasswd_serves_a_host_with_credentials_and_refuses_one_without() -> anyhow::Result<()> {
    let password = "registry-pw-7f3a9c";
    leaks::register_secret(password);
    let registry = RegistryServer::start(Some(("alice", password))).await?;
    let secrets = tempfile::tempdir()?;
    let password_file = secrets.path().join("registry-password");
    std::fs::write(&password_file, format!("{password}\n"))?;
    let password_file = password_file.display().to_string();
    let credentials = ["--registry-user", "alice", "--registry-password-file", &password_file];

    let wasm = build_component("http-echo")?;
    let tagged = format!("{}/private/echo:2.1", registry.address);
    let refused = push(&registry, &tagged, &wasm, &[])?;
    assert!(refused.as_ref().is_err_and(|e| e.contains("refused access")), "{refused:?}");
    let pinned = push(&registry, &tagged, &wasm, &credentials)?.map_err(anyhow::Error::msg)?;

    let lattice = Lattice::start().await?;
    let cache = tempfile::tempdir()?;
    let cache_dir = cache.path().display().to_string();
    let (anonymous, anonymous_id) =
        lattice.start_host_with(&["--allow-insecure-registry", &registry.address, "--oci-cache", &cache_dir]).await?;
    let without = start(&lattice, &anonymous_id, "without", &pinned).await?;
    assert!(without.as_ref().is_err_and(|m| m.contains("refused access") && m.contains("credentials")), "{without:?}");
    drop(anonymous);

    let mut args = vec!["--allow-insecure-registry", &registry.address, "--oci-cache", &cache_dir];
    args.extend(credentials);
    let (host, host_id) = lattice.start_host_with(&args).await?;
    start(&lattice, &host_id, "with", &pinned).await?.map_err(anyhow::Error::msg)?;
    answers(&lattice, "with").await?;
    for (who, logs) in [("host", host.logs()), ("registry", registry.logs())] {
        assert!(!logs.contains(password), "the password is in the {who}'s log");
    }
    Ok(())
}
