//! Blob durability: an upload that fails or is abandoned leaves nothing behind in the object
//! store, replaced objects leave no old chunks, and temporary files of a provider killed
//! mid-write are cleaned up.

use std::{collections::HashMap, path::PathBuf, time::Duration};

use ferry_proto::{link::Link, subject};
use ferry_tests::Lattice;
use futures::StreamExt as _;
use serde_json::{Value, json};

const MIB: u64 = 1 << 20;

async fn blob_lattice(backend: &[(&str, &str)]) -> anyhow::Result<(Lattice, ferry_tests::Process)> {
    let lattice = Lattice::start().await?;
    let provider = lattice.start_provider("ferry-provider-blobstore", "blob").await?;
    lattice.start_component("blob-test", "blobs", &[]).await?;
    lattice.config("blob-backend", backend).await?;
    let mut link =
        Link::new("blobs", "blob", "wasi", "blobstore", vec!["blobstore".into(), "container".into(), "types".into()]);
    link.target_config = vec!["blob-backend".into()];
    lattice.link(link).await?;
    Ok((lattice, provider))
}

/// The chunk subjects in the object store of `bucket`, with their message counts.
async fn chunk_subjects(lattice: &Lattice, bucket: &str) -> anyhow::Result<HashMap<String, usize>> {
    let js = async_nats::jetstream::new(lattice.raw.clone());
    let stream = js.get_stream(format!("OBJ_{bucket}")).await?;
    let mut subjects = HashMap::new();
    let mut all = stream.info_with_subjects(format!("$O.{bucket}.C.>")).await?;
    while let Some(entry) = all.next().await {
        let (subject, count) = entry?;
        subjects.insert(subject, count);
    }
    Ok(subjects)
}

#[tokio::test(flavor = "multi_thread")]
async fn abandoned_and_replaced_uploads_leave_no_chunks_in_the_object_store() -> anyhow::Result<()> {
    let (lattice, _provider) = blob_lattice(&[("backend", "nats")]).await?;
    let ok = |command: Value| lattice.ok("blobs", command);
    ok(json!({"op": "create", "container": "box"})).await?;
    ok(json!({"op": "write", "container": "box", "object": "keep", "size": MIB + 5})).await?;
    assert_eq!(chunk_subjects(&lattice, &subject::component_object_store(&lattice.name, "box")?).await?.len(), 1);

    // Abandoned part-way, twice (a new object and a replacement): both uploads' chunks go.
    for object in ["ghost", "keep"] {
        ok(json!({"op": "write", "container": "box", "object": object, "size": 3 * MIB, "order": "abandon"})).await?;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while lattice.host.logs().matches("outgoing value dropped without finish").count() < 2 {
        assert!(tokio::time::Instant::now() < deadline, "no abandon logged:\n{}", lattice.host.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut subjects = HashMap::new();
    while tokio::time::Instant::now() < deadline {
        subjects = chunk_subjects(&lattice, &subject::component_object_store(&lattice.name, "box")?).await?;
        if subjects.len() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(subjects.len(), 1, "abandoned uploads left chunks behind: {subjects:?}");
    assert_eq!(ok(json!({"op": "has", "container": "box", "object": "ghost"})).await?, json!(false));
    let kept = ok(json!({"op": "read", "container": "box", "object": "keep"})).await?;
    assert_eq!(kept["size"], json!(MIB + 5), "{kept}");

    // A replacement that completes leaves only its own chunks.
    ok(json!({"op": "write", "container": "box", "object": "keep", "size": 2 * MIB})).await?;
    let subjects = chunk_subjects(&lattice, &subject::component_object_store(&lattice.name, "box")?).await?;
    assert_eq!(subjects.len(), 1, "{subjects:?}");
    assert_eq!(subjects.values().sum::<usize>(), 16, "2 MiB in 128 KiB chunks: {subjects:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn object_store_errors_keep_their_kind() -> anyhow::Result<()> {
    let (lattice, _provider) = blob_lattice(&[("backend", "nats")]).await?;
    // A container that does not exist is not-found; one that exists reads fine.
    let (status, answer) = lattice.call("blobs", json!({"op": "get", "container": "nope"})).await?;
    assert_eq!(status, 500);
    assert!(answer["error"].as_str().unwrap_or_default().starts_with("not-found:"), "{answer}");
    lattice.ok("blobs", json!({"op": "create", "container": "yes"})).await?;
    lattice.ok("blobs", json!({"op": "get", "container": "yes"})).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn temporary_files_of_a_killed_writer_are_removed_when_the_root_opens() -> anyhow::Result<()> {
    let root: PathBuf =
        std::env::temp_dir().join(format!("ferry-durable-{}-{}", std::process::id(), ferry_proto::time::now_ms()));
    let container = root.join("c");
    std::fs::create_dir_all(container.join("sub"))?;
    let stale = [container.join(".ferry-tmp-0123"), container.join("sub/.ferry-tmp-4567")];
    let fresh = container.join(".ferry-tmp-89ab");
    let two_hours_ago = std::time::SystemTime::now() - Duration::from_secs(7200);
    for path in &stale {
        std::fs::write(path, b"half a write")?;
        std::fs::File::options().write(true).open(path)?.set_modified(two_hours_ago)?;
    }
    std::fs::write(&fresh, b"a write in progress")?;
    std::fs::write(container.join("object"), b"data")?;

    let root_text = root.display().to_string();
    let (lattice, mut provider) = blob_lattice(&[("backend", "fs"), ("root", &root_text)]).await?;
    provider.wait_for_log("removed temporary files", Duration::from_secs(10)).await?;
    for path in &stale {
        assert!(!path.exists(), "{} was left behind", path.display());
    }
    assert!(fresh.exists(), "a recent temporary file may belong to a live write");
    assert!(container.join("object").exists());
    let read = lattice.ok("blobs", json!({"op": "read", "container": "c", "object": "object"})).await?;
    assert_eq!(read["size"], json!(4), "{read}");
    let _ = std::fs::remove_dir_all(&root);
    Ok(())
}
