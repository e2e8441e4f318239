//! Components compiled outside the host: a host hands each component to a compiler process (its
//! own executable) that compiles it into the compilation cache, then loads it from there; bytes
//! that are not a component are refused with the compiler's reason; a host started later on the
//! same cache loads what was compiled instead of compiling again.

use std::{os::unix::fs::PermissionsExt as _, path::Path, time::SystemTime};

use ferry_proto::link::Link;
use ferry_tests::{Lattice, TEST_CLIENT_ID, get};

use crate::update::start;

/// The compiled components in cache `dir`, with the time each was written.
fn compiled(dir: &Path) -> anyhow::Result<Vec<(String, SystemTime)>> {
    let mut found = Vec::new();
    for version in std::fs::read_dir(dir.join("modules"))? {
        for entry in std::fs::read_dir(version?.path())? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            // Not the usage statistics wasmtime keeps beside an entry, nor the temporary file
            // it writes them through (left for its cleanup task to remove).
            if !name.ends_with(".stats") && !name.contains(".wip-atomic-write-") {
                found.push((name, entry.metadata()?.modified()?));
            }
        }
    }
    Ok(found)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_compiler_process_compiles_into_the_cache_and_the_next_host_loads_from_it() -> anyhow::Result<()> {
    let lattice = Lattice::start().await?;
    let scratch = tempfile::tempdir()?;
    let cache = scratch.path().join("compiled");
    let garbage = scratch.path().join("garbage.wasm");
    // A core module: WebAssembly, but no component.
    std::fs::write(&garbage, b"\0asm\x01\0\0\0")?;
    let args =
        ["--compile-cache", &cache.display().to_string(), "--allow-file-dir", &scratch.path().display().to_string()];
    let (first, first_id) = lattice.start_host_with(&args).await?;

    lattice.start_component_on("hello", "hello", &[], Some(&first_id)).await?;
    lattice.link(Link::new(TEST_CLIENT_ID, "hello", "wasi", "http", vec!["incoming-handler".into()])).await?;
    assert_eq!(lattice.client.handle_http("hello", &get("/")).await?.status, 200);
    let logs = first.logs();
    assert!(logs.contains("component compiled by the compiler process"), "{logs}");
    assert!(!logs.contains("compiler process failed"), "{logs}");
    let entries = compiled(&cache)?;
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(std::fs::metadata(&cache)?.permissions().mode() & 0o777, 0o700, "the cache is private");

    // Not a component: refused with the compiler's reason; the host serves on.
    let reply = lattice.ctl.send(&start("bad", format!("file:{}", garbage.display())), Some(&first_id)).await?;
    assert!(!reply.success && reply.message.contains("not a valid component"), "{reply:?}");
    assert_eq!(lattice.client.handle_http("hello", &get("/")).await?.status, 200);
    assert_eq!(compiled(&cache)?, entries, "nothing was written for it");

    // A second host on the same cache loads the component: nothing is compiled or written again.
    let (second, second_id) = lattice.start_host_with(&args).await?;
    lattice.start_component_on("hello", "hello2", &[], Some(&second_id)).await?;
    lattice.link(Link::new(TEST_CLIENT_ID, "hello2", "wasi", "http", vec!["incoming-handler".into()])).await?;
    assert_eq!(lattice.client.handle_http("hello2", &get("/")).await?.status, 200);
    assert_eq!(compiled(&cache)?, entries, "the compiled component was loaded, not compiled again");
    assert!(!second.logs().contains("compiler process failed"), "{}", second.logs());

    // Compiling in the host's own process, with no cache, serves the same.
    let (_third, third_id) = lattice.start_host_with(&["--no-compile-cache"]).await?;
    lattice.start_component_on("hello", "hello3", &[], Some(&third_id)).await?;
    lattice.link(Link::new(TEST_CLIENT_ID, "hello3", "wasi", "http", vec!["incoming-handler".into()])).await?;
    assert_eq!(lattice.client.handle_http("hello3", &get("/")).await?.status, 200);
    Ok(())
}
