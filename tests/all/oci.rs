//! Components from a real OCI registry (Debian's `docker-registry`): `ferry push` publishes a
//! component; hosts start it by tag and by digest, pull it into their image cache, start it
//! from the cache with the registry gone, notice a tampered cache entry and pull it again; a
//! registry with htpasswd authentication serves a host with credentials, refuses one without,
//! and the password appears in no log line or argument list. Provider executables are pushed
//! per platform and run by hosts that allow their repository, checked before every start.

use std::{path::Path, time::Duration};

use ferry_proto::{
    ctl::{ComponentStart, HostInventory, ProviderStart},
    link::Link,
};
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
    push_files(registry, reference, &[file.display().to_string()], extra)
}

/// `ferry push REFERENCE FILES…`, as [`push`].
fn push_files(
    registry: &RegistryServer,
    reference: &str,
    files: &[String],
    extra: &[&str],
) -> anyhow::Result<Result<String, String>> {
    let output = std::process::Command::new(binary("ferry")?)
        .arg("push")
        .arg(reference)
        .args(files)
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

/// Start provider `id` from `binary` on `host_id`: its description, or the host's refusal.
async fn start_provider(
    lattice: &Lattice,
    host_id: &str,
    id: &str,
    binary: &str,
) -> anyhow::Result<Result<ferry_proto::ctl::ProviderDescription, String>> {
    let start = ProviderStart {
        request_id: format!("start-{id}"),
        provider_id: id.to_owned(),
        binary: binary.to_owned(),
        config: Default::default(),
    };
    let resp = lattice.ctl.send(&start, Some(host_id)).await?;
    Ok(match resp.data.filter(|_| resp.success) {
        Some(started) => Ok(started.provider),
        None => Err(resp.message),
    })
}

/// Wait until provider `id` answers its health check healthy.
async fn serving(lattice: &Lattice, id: &str) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match crate::health::health_of(lattice, id).await {
            Ok(answers) if answers.first().is_some_and(|a| a.healthy) => return Ok(()),
            other if tokio::time::Instant::now() >= deadline => anyhow::bail!("{id} does not serve: {other:?}"),
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn provider_executables_are_pushed_per_platform_and_hosts_run_them_verified_before_every_start()
-> anyhow::Result<()> {
    let mut registry = RegistryServer::start(None).await?;
    let kv = binary("ferry-provider-keyvalue")?;
    // The host's own executable (its platform read from the ELF header) and one for another
    // platform, named explicitly: one image index, a manifest each.
    let other = tempfile::NamedTempFile::new()?;
    std::fs::write(other.path(), b"#!/bin/sh\nexit 1\n")?;
    let tagged = format!("oci://{}/providers/kv:1.0", registry.address);
    let files = [kv.display().to_string(), format!("linux/riscv64={}", other.path().display())];
    let pinned = push_files(&registry, &tagged, &files, &[])?.map_err(anyhow::Error::msg)?;
    assert!(pinned.starts_with(&tagged) && pinned.contains("@sha256:"), "{pinned}");
    // What the registry holds under the tag: an OCI image index with a manifest per platform.
    let mut index = ferry_tests::http::request(
        "GET",
        &registry.address,
        "/v2/providers/kv/manifests/1.0",
        ferry_tests::http::empty(),
    )?;
    index.headers_mut().insert(hyper::header::ACCEPT, "application/vnd.oci.image.index.v1+json".parse()?);
    let (status, _, body) = ferry_tests::http::fetch(registry.address.parse()?, index).await?;
    assert_eq!(status, hyper::StatusCode::OK);
    assert_eq!(format!("sha256:{}", ferry_proto::image::sha256_hex(&body)), pinned.rsplit_once('@').expect("digest").1);
    let index: serde_json::Value = serde_json::from_slice(&body)?;
    let platforms: Vec<String> = index["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .map(|m| {
            format!(
                "{}/{}",
                m["platform"]["os"].as_str().unwrap_or("?"),
                m["platform"]["architecture"].as_str().unwrap_or("?")
            )
        })
        .collect();
    // The host's own platform (read from the executable), then the one named.
    let host_arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    assert_eq!(platforms, [format!("linux/{host_arch}"), "linux/riscv64".to_owned()], "{index}");
    let twice =
        [kv.display().to_string(), format!("linux/amd64={}", kv.display()), format!("linux/arm64={}", kv.display())];
    let refused = push_files(&registry, &tagged, &twice, &[])?;
    assert!(refused.as_ref().is_err_and(|e| e.contains("two executables")), "{refused:?}");

    let cache = tempfile::tempdir()?;
    let cache_dir = cache.path().display().to_string();
    let allowed = format!("{}/providers", registry.address);
    let host_args =
        ["--allow-insecure-registry", &registry.address, "--oci-cache", &cache_dir, "--allow-provider-image", &allowed];
    let lattice = Lattice::start().await?;
    let (mut host, host_id) = lattice.start_host_with(&host_args).await?;
    let inventory = lattice.ctl.send(&HostInventory::default(), Some(&host_id)).await?.data.expect("inventory");
    assert!(inventory.host.starts_providers, "a host that allows provider images starts providers");

    // Only from the repositories the host allows.
    let elsewhere = format!("oci://{}/elsewhere/kv:1.0", registry.address);
    let refused = start_provider(&lattice, &host_id, "nope", &elsewhere).await?;
    assert!(refused.as_ref().is_err_and(|m| m.contains("--allow-provider-image")), "{refused:?}");

    let started = start_provider(&lattice, &host_id, "kv", &tagged).await?.map_err(anyhow::Error::msg)?;
    assert_eq!(started.binary, pinned, "the description pins what runs");
    serving(&lattice, "kv").await?;

    // The cached executable is checked before every start: replaced behind the host's back,
    // it is pulled again when the provider restarts.
    let executable = cache.path().join("bin/sha256").join(ferry_proto::image::sha256_hex(&std::fs::read(&kv)?));
    assert!(executable.is_file(), "the executable is cached under its digest: {}", executable.display());
    std::fs::remove_file(&executable)?;
    std::fs::write(&executable, b"#!/bin/sh\necho tampered\n")?;
    let pid = started.pid.expect("a pid");
    let _ = std::process::Command::new("kill").args(["-KILL", &pid.to_string()]).status();
    host.wait_for_log("does not match its digest", Duration::from_secs(15)).await?;
    serving(&lattice, "kv").await?;
    assert_eq!(std::fs::read(&executable)?, std::fs::read(&kv)?, "the executable was pulled again");
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(std::fs::metadata(&executable)?.permissions().mode() & 0o777, 0o700);

    // With the registry gone, the digest (and the tag it resolved to) start from the cache.
    registry.stop();
    let by_digest = start_provider(&lattice, &host_id, "kv-pinned", &pinned).await?.map_err(anyhow::Error::msg)?;
    assert_eq!(by_digest.binary, pinned);
    serving(&lattice, "kv-pinned").await?;
    let inventory = lattice.ctl.send(&HostInventory::default(), Some(&host_id)).await?.data.expect("inventory");
    let binaries: Vec<&str> = inventory.providers.iter().map(|p| p.binary.as_str()).collect();
    assert_eq!(binaries, [pinned.as_str(), pinned.as_str()], "{inventory:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn an_application_s_capability_image_from_a_registry_is_pulled_and_run_by_the_host_that_allows_it()
-> anyhow::Result<()> {
    let registry = RegistryServer::start(None).await?;
    let kv = binary("ferry-provider-keyvalue")?;
    let image = format!("{}/providers/keyvalue-store:2.0", registry.address);
    let pinned = push(&registry, &image, &kv, &[])?.map_err(anyhow::Error::msg)?;
    let cache = tempfile::tempdir()?;
    let cache_dir = cache.path().display().to_string();
    let allowed = format!("{}/providers", registry.address);
    let lattice = Lattice::start_for_apps_with(&[
        "--allow-insecure-registry",
        &registry.address,
        "--oci-cache",
        &cache_dir,
        "--allow-provider-image",
        &allowed,
    ])
    .await?;
    let manifest = format!(
        r#"apiVersion: core.oam.dev/v1beta1
kind: Application
metadata:
  name: pulled
  annotations:
    version: v1
spec:
  components:
    - name: store
      type: capability
      properties:
        image: {image}
"#
    );
    lattice.deploy(&manifest).await?;
    let inventory = lattice.ctl.send(&HostInventory::default(), None).await?.data.expect("inventory");
    let binaries: Vec<&str> = inventory.providers.iter().map(|p| p.binary.as_str()).collect();
    assert_eq!(binaries, [pinned.as_str()], "the manifest's image runs, pinned: {inventory:?}");
    let id = inventory.providers[0].provider_id.clone();
    serving(&lattice, &id).await?;
    Ok(())
}
