//! Blob storage end to end: component → host → NATS → blobstore provider process → the
//! filesystem or a JetStream object store, objects of any size streamed both ways.

use std::{path::PathBuf, time::Duration};

use ferry_proto::link::Link;
use ferry_tests::{
    Lattice, Process,
    http::{peak_rss, rss},
};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

const BLOBSTORE: &str = "ferry-provider-blobstore";
pub(crate) const MIB: u64 = 1 << 20;

/// A fresh directory under the system's temporary directory.
fn temp_dir(tag: &str) -> anyhow::Result<PathBuf> {
    let dir =
        std::env::temp_dir().join(format!("ferry-blob-{tag}-{}-{}", std::process::id(), ferry_proto::time::now_ms()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// The blobstore provider, the blob-test component `id`, and a link between them whose target
/// config is `backend`.
async fn blob_lattice(backend: &[(&str, &str)], rpc_timeout: Duration) -> anyhow::Result<(Lattice, Process)> {
    let lattice = Lattice::start_with_timeout(rpc_timeout).await?;
    let provider = lattice.start_provider(BLOBSTORE, "blob").await?;
    lattice.start_component("blob-test", "blobs", &[]).await?;
    lattice.config("blob-backend", backend).await?;
    let mut link =
        Link::new("blobs", "blob", "wasi", "blobstore", vec!["blobstore".into(), "container".into(), "types".into()]);
    link.target_config = vec!["blob-backend".into()];
    lattice.link(link).await?;
    Ok((lattice, provider))
}

/// A command that must fail; returns its error string.
async fn fails(lattice: &Lattice, command: Value) -> anyhow::Result<String> {
    let (status, answer) = lattice.call("blobs", command.clone()).await?;
    anyhow::ensure!(status == 500, "{command} did not fail: {answer}");
    Ok(answer["error"].as_str().unwrap_or_default().to_owned())
}

pub(crate) fn pattern_sha(len: u64) -> String {
    let mut hasher = Sha256::new();
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut offset = 0u64;
    while offset < len {
        buf.clear();
        let end = (offset + 64 * 1024).min(len);
        buf.extend((offset..end).map(|o| (o.wrapping_mul(31).wrapping_add(o >> 13) % 251) as u8));
        hasher.update(&buf);
        offset = end;
    }
    hasher.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Every blobstore function through the component, against one backend.
pub(crate) async fn exercise(lattice: &Lattice) -> anyhow::Result<()> {
    let ok = |cmd: Value| lattice.ok("blobs", cmd);
    assert_eq!(ok(json!({"op": "create", "container": "photos"})).await?, json!("photos"));
    ok(json!({"op": "create", "container": "archive"})).await?;
    assert_eq!(ok(json!({"op": "exists", "container": "photos"})).await?, json!(true));
    assert_eq!(ok(json!({"op": "exists", "container": "nope"})).await?, json!(false));
    assert!(fails(lattice, json!({"op": "get", "container": "nope"})).await?.starts_with("not-found:"));
    assert_eq!(ok(json!({"op": "container_info", "container": "photos"})).await?["name"], json!("photos"));

    // Data and ranges (inclusive, clamped to the object), empty objects, nested names.
    ok(json!({"op": "write", "container": "photos", "object": "a.txt", "text": "hello world"})).await?;
    let read = |start: u64, end: u64| {
        ok(json!({"op": "read", "container": "photos", "object": "a.txt", "start": start, "end": end, "mode": "sync"}))
    };
    assert_eq!(read(0, u64::MAX).await?["text"], json!("hello world"));
    assert_eq!(read(0, 0).await?["text"], json!("h"));
    assert_eq!(read(6, 10).await?["text"], json!("world"));
    assert_eq!(read(6, 1000).await?["text"], json!("world"));
    assert_eq!(read(10, 10).await?["text"], json!("d"));
    assert_eq!(read(11, 20).await?["len"], json!(0));
    let err =
        fails(lattice, json!({"op": "read", "container": "photos", "object": "a.txt", "start": 5, "end": 2})).await?;
    assert!(err.starts_with("bad-request:"), "{err}");
    ok(json!({"op": "write", "container": "photos", "object": "empty", "text": ""})).await?;
    let empty = ok(json!({"op": "read", "container": "photos", "object": "empty", "mode": "sync"})).await?;
    assert_eq!((empty["len"].clone(), empty["size"].clone()), (json!(0), json!(0)));
    assert_eq!(ok(json!({"op": "info", "container": "photos", "object": "empty"})).await?["size"], json!(0));
    ok(json!({"op": "write", "container": "photos", "object": "dir/sub/file", "text": "deep"})).await?;
    let deep = ok(json!({"op": "read", "container": "photos", "object": "dir/sub/file", "mode": "sync"})).await?;
    assert_eq!(deep["text"], json!("deep"));
    assert_eq!(ok(json!({"op": "has", "container": "photos", "object": "a.txt"})).await?, json!(true));
    assert_eq!(ok(json!({"op": "has", "container": "photos", "object": "nope"})).await?, json!(false));
    let info = ok(json!({"op": "info", "container": "photos", "object": "a.txt"})).await?;
    assert_eq!((info["size"].clone(), info["container"].clone()), (json!(11), json!("photos")));
    let err = fails(lattice, json!({"op": "info", "container": "photos", "object": "nope"})).await?;
    assert!(err.starts_with("not-found:"), "{err}");

    // A multi-chunk object streams both ways.
    ok(json!({"op": "write", "container": "photos", "object": "big", "size": 3 * MIB + 7})).await?;
    let big = ok(json!({"op": "read", "container": "photos", "object": "big"})).await?;
    assert_eq!(big["sha256"], json!(pattern_sha(3 * MIB + 7)));
    let part =
        ok(json!({"op": "read", "container": "photos", "object": "big", "start": MIB, "end": 2 * MIB - 1})).await?;
    assert_eq!(part["len"], json!(MIB));

    // A component that writes the data before calling write-data (as hosts that buffer allow)
    // works too: small values stay in memory, larger ones spool to a file until write-data.
    let body_first = |object: &str, size: u64| json!({"op": "write", "container": "photos", "object": object, "size": size, "order": "body_first"});
    ok(body_first("first-small", 1000)).await?;
    ok(body_first("first-big", 3 * MIB + 11)).await?;
    for (object, size) in [("first-small", 1000), ("first-big", 3 * MIB + 11)] {
        let read = ok(json!({"op": "read", "container": "photos", "object": object})).await?;
        assert_eq!(read["sha256"], json!(pattern_sha(size)), "{object} written body first");
    }

    // A value dropped without finish is corrupt by the interface's terms: nothing is stored,
    // and the object it would have replaced keeps its data.
    let abandon =
        |object: &str| json!({"op": "write", "container": "photos", "object": object, "size": MIB, "order": "abandon"});
    ok(abandon("ghost")).await?;
    ok(abandon("first-small")).await?;
    // The host logs each abandon; the provider learns of it from the stream's end a moment
    // later.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while lattice.host.logs().matches("outgoing value dropped without finish").count() < 2 {
        assert!(tokio::time::Instant::now() < deadline, "no log line for the abandons:\n{}", lattice.host.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(ok(json!({"op": "has", "container": "photos", "object": "ghost"})).await?, json!(false));
    let kept = ok(json!({"op": "read", "container": "photos", "object": "first-small"})).await?;
    assert_eq!(kept["sha256"], json!(pattern_sha(1000)), "an abandoned write must not replace the object");

    // Listing more than 1,000 objects, in pages, and skipping.
    ok(json!({"op": "write_many", "container": "photos", "prefix": "k", "count": 1100})).await?;
    let listed = ok(json!({"op": "list", "container": "photos", "page": 300})).await?;
    let names: Vec<String> = serde_json::from_value(listed["names"].clone())?;
    let mut expected: Vec<String> = (0..1100).map(|i| format!("k{i:05}")).collect();
    // No "ghost": the abandoned write left nothing behind, not even a temporary name.
    expected.extend(["a.txt", "big", "dir/sub/file", "empty", "first-big", "first-small"].map(String::from));
    expected.sort();
    assert_eq!(names, expected, "every name once, in order");
    assert!(listed["pages"].as_u64().unwrap_or(0) >= 4, "{}", listed["pages"]);
    let skipped = ok(json!({"op": "skip", "container": "photos", "count": 1000})).await?;
    assert_eq!(skipped["skipped"], json!(1000));
    assert_eq!(skipped["next"], json!([expected[1000]]));

    // Copy and move, within and across containers.
    let id = |c: &str, o: &str| json!({"container": c, "object": o});
    ok(json!({"op": "copy", "src": id("photos", "a.txt"), "dest": id("archive", "b.txt")})).await?;
    ok(json!({"op": "copy", "src": id("archive", "b.txt"), "dest": id("archive", "b2.txt")})).await?;
    ok(json!({"op": "move", "src": id("photos", "a.txt"), "dest": id("archive", "c.txt")})).await?;
    ok(json!({"op": "move", "src": id("photos", "big"), "dest": id("photos", "big2")})).await?;
    assert_eq!(ok(json!({"op": "has", "container": "photos", "object": "a.txt"})).await?, json!(false));
    for object in ["b.txt", "b2.txt", "c.txt"] {
        let read = ok(json!({"op": "read", "container": "archive", "object": object, "mode": "sync"})).await?;
        assert_eq!(read["text"], json!("hello world"), "{object}");
    }
    let moved = ok(json!({"op": "read", "container": "photos", "object": "big2"})).await?;
    assert_eq!(moved["sha256"], json!(pattern_sha(3 * MIB + 7)));

    // Deletes, clear, delete-container.
    ok(json!({"op": "delete", "container": "archive", "object": "b2.txt"})).await?;
    ok(json!({"op": "delete", "container": "archive", "object": "never-was"})).await?;
    assert_eq!(ok(json!({"op": "has", "container": "archive", "object": "b2.txt"})).await?, json!(false));
    ok(json!({"op": "delete_many", "container": "photos", "objects": ["k00000", "k00001"]})).await?;
    assert_eq!(ok(json!({"op": "has", "container": "photos", "object": "k00001"})).await?, json!(false));
    ok(json!({"op": "clear", "container": "photos"})).await?;
    let listed = ok(json!({"op": "list", "container": "photos"})).await?;
    assert_eq!(listed["names"], json!([]));
    ok(json!({"op": "delete_container", "container": "archive"})).await?;
    assert_eq!(ok(json!({"op": "exists", "container": "archive"})).await?, json!(false));
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn every_blobstore_function_works_on_the_filesystem() -> anyhow::Result<()> {
    let root = temp_dir("fs")?;
    let (lattice, _provider) = blob_lattice(&[("root", &root.display().to_string())], Duration::from_secs(10)).await?;
    exercise(&lattice).await?;
    let _ = std::fs::remove_dir_all(&root);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn every_blobstore_function_works_on_the_nats_object_store() -> anyhow::Result<()> {
    let (lattice, _provider) = blob_lattice(&[("backend", "nats")], Duration::from_secs(10)).await?;
    exercise(&lattice).await
}

#[tokio::test(flavor = "multi_thread")]
async fn more_reads_of_one_nats_container_than_its_servers_default_consumer_limit_all_succeed() -> anyhow::Result<()> {
    // Each read is a consumer of the object store's stream, kept a few seconds after it ends;
    // nats-server 2.15 allows a stream 1000 unless it says otherwise.
    let (lattice, _provider) = blob_lattice(&[("backend", "nats")], Duration::from_secs(10)).await?;
    lattice.ok("blobs", json!({"op": "create", "container": "busy"})).await?;
    lattice.ok("blobs", json!({"op": "write", "container": "busy", "object": "o", "text": "hi"})).await?;
    let lattice = std::sync::Arc::new(lattice);
    let mut readers = Vec::new();
    for _ in 0..8 {
        let lattice = lattice.clone();
        readers.push(tokio::spawn(async move {
            let mut failed = Vec::new();
            for _ in 0..150 {
                let read = json!({"op": "read", "container": "busy", "object": "o", "mode": "sync"});
                match lattice.call("blobs", read).await {
                    Ok((200, _)) => {}
                    other => failed.push(format!("{other:?}")),
                }
            }
            failed
        }));
    }
    let mut failed = Vec::new();
    for reader in readers {
        failed.extend(reader.await?);
    }
    assert!(failed.is_empty(), "{} of 1200 reads failed, the first: {}", failed.len(), failed[0]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_256_mib_object_round_trips_in_bounded_memory() -> anyhow::Result<()> {
    let root = temp_dir("big")?;
    let (lattice, provider) = blob_lattice(&[("root", &root.display().to_string())], Duration::from_secs(60)).await?;
    lattice.ok("blobs", json!({"op": "create", "container": "big"})).await?;
    let (host_pid, provider_pid) = (lattice.host.pid(), provider.pid());
    let (host_before, provider_before) = (rss(host_pid)?, rss(provider_pid)?);
    let size = 256 * MIB;
    lattice.ok("blobs", json!({"op": "write", "container": "big", "object": "blob", "size": size})).await?;
    assert_eq!(std::fs::metadata(root.join("big/blob"))?.len(), size);
    let read = lattice.ok("blobs", json!({"op": "read", "container": "big", "object": "blob"})).await?;
    let expected = pattern_sha(size);
    assert_eq!((read["len"].clone(), read["sha256"].clone()), (json!(size), json!(expected)));
    let (host_peak, provider_peak) = (peak_rss(host_pid)?, peak_rss(provider_pid)?);
    println!(
        "256 MiB object written and read back, sha256 {expected}: peak RSS host {} MiB (+{} MiB), provider {} MiB (+{} MiB)",
        host_peak / MIB,
        host_peak.saturating_sub(host_before) / MIB,
        provider_peak / MIB,
        provider_peak.saturating_sub(provider_before) / MIB
    );
    assert!(provider_peak.saturating_sub(provider_before) < 32 * MIB, "provider memory grew with the object");
    assert!(host_peak.saturating_sub(host_before) < 64 * MIB, "host memory grew with the object");
    let _ = std::fs::remove_dir_all(&root);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn names_that_escape_the_root_are_refused_and_nothing_outside_changes() -> anyhow::Result<()> {
    let base = temp_dir("escape")?;
    let (root, outside) = (base.join("root"), base.join("outside"));
    std::fs::create_dir_all(&outside)?;
    std::fs::write(outside.join("secret.txt"), b"keep me")?;
    let (lattice, _provider) = blob_lattice(&[("root", &root.display().to_string())], Duration::from_secs(10)).await?;
    lattice.ok("blobs", json!({"op": "create", "container": "photos"})).await?;
    // Links planted inside the root, pointing out of it.
    std::os::unix::fs::symlink(&outside, root.join("photos/link"))?;
    std::os::unix::fs::symlink(&outside, root.join("evil"))?;
    std::os::unix::fs::symlink(outside.join("secret.txt"), root.join("photos/secret-link"))?;

    let write = |container: &str, object: &str| json!({"op": "write", "container": container, "object": object, "text": "pwned"});
    let read =
        |container: &str, object: &str| json!({"op": "read", "container": container, "object": object, "mode": "sync"});
    let attempts = [
        (write("photos", "../outside/secret.txt"), "bad-request:"),
        (write("photos", "../../outside/secret.txt"), "bad-request:"),
        (write("photos", "/etc/passwd"), "bad-request:"),
        (write("photos", "a/../../x"), "bad-request:"),
        (write("photos", "nul\u{0}byte"), "bad-request:"),
        (read("photos", "../../outside/secret.txt"), "bad-request:"),
        (json!({"op": "create", "container": ".."}), "bad-request:"),
        (json!({"op": "create", "container": "a/b"}), "bad-request:"),
        (json!({"op": "create", "container": "/tmp"}), "bad-request:"),
        (write("photos", "link/secret.txt"), "denied:"),
        (read("photos", "link/secret.txt"), "denied:"),
        (read("photos", "secret-link"), "denied:"),
        (write("photos", "secret-link"), "denied:"),
        (json!({"op": "delete", "container": "photos", "object": "link/secret.txt"}), "denied:"),
        (json!({"op": "get", "container": "evil"}), "denied:"),
        (write("evil", "secret.txt"), "denied:"),
        (json!({"op": "clear", "container": "evil"}), "denied:"),
        (json!({"op": "delete_container", "container": "evil"}), "denied:"),
    ];
    for (attempt, kind) in attempts {
        let err = fails(&lattice, attempt.clone()).await?;
        assert!(err.starts_with(kind), "{attempt} gave {err:?}, expected {kind}");
    }
    assert_eq!(std::fs::read(outside.join("secret.txt"))?, b"keep me");
    let entries: Vec<_> = std::fs::read_dir(&outside)?.filter_map(Result::ok).map(|e| e.file_name()).collect();
    assert_eq!(entries, ["secret.txt"], "files appeared outside the root");
    // The same container still works for ordinary names.
    lattice.ok("blobs", write("photos", "fine.txt")).await?;
    let _ = std::fs::remove_dir_all(&base);
    Ok(())
}
