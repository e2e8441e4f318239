//! Component references and `component.update`: a host runs only what was uploaded into the
//! lattice (checked against its digest) or files under a directory it allows, and a
//! component updated under a stream of calls loses none of them.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use ferry_proto::{
    ctl::{ComponentStart, ComponentUpdate, HostInventory},
    event::{CloudEvent, Event},
    image::sha256_hex,
    subject,
};
use futures::StreamExt as _;

use ferry_tests::{Lattice, TEST_CLIENT_ID, build_component, get};

/// The command that starts `image` as component `id`.
pub(crate) fn start(id: &str, image: String) -> ComponentStart {
    ComponentStart {
        request_id: format!("start-{id}"),
        component_id: id.into(),
        image,
        max_instances: Some(8),
        config: Vec::new(),
    }
}

/// The components host `host` runs, by id.
async fn running(lattice: &Lattice, host: &str) -> anyhow::Result<Vec<String>> {
    let inventory = lattice.ctl.send(&HostInventory::default(), Some(host)).await?.data.expect("inventory");
    Ok(inventory.components.into_iter().map(|c| c.component_id).collect())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_host_runs_uploads_checked_by_digest_and_files_only_from_allowed_directories() -> anyhow::Result<()> {
    let lattice = Lattice::start().await?;
    let host = lattice.host_id.clone();
    let wasm = build_component("http-echo")?;
    let dir = wasm.parent().expect("a directory").canonicalize()?;

    // An upload, named by digest, runs.
    let image = lattice.image("http-echo").await?;
    assert_eq!(image, format!("sha256:{}", sha256_hex(&std::fs::read(&wasm)?)));
    let reply = lattice.ctl.send(&start("echo", image.clone()), Some(&host)).await?;
    assert!(reply.success, "{reply:?}");
    assert_eq!(reply.data.expect("data").component.image, image);
    lattice
        .link(ferry_proto::link::Link::new(TEST_CLIENT_ID, "echo", "wasi", "http", vec!["incoming-handler".into()]))
        .await?;
    assert_eq!(lattice.client.handle_http("echo", &get("/")).await?.status, 200);

    // What the host must not run: a path it was told to read, a relative path, a digest never
    // uploaded, bytes that do not hash to the name they were stored under.
    let js = async_nats::jetstream::new(lattice.raw.clone());
    let store = js.get_object_store(subject::component_store(&lattice.name)?).await?;
    let forged = sha256_hex(b"what the operator uploaded");
    store.put(forged.as_str(), &mut b"something else entirely".as_slice()).await?;
    let refused = [
        (format!("file:{}", wasm.display()), "--allow-file-dir"),
        (wasm.display().to_string(), "--allow-file-dir"),
        ("http_echo.wasm".to_owned(), "absolute path"),
        ("https://example.com/c.wasm".to_owned(), "unsupported scheme"),
        (format!("sha256:{}", "0".repeat(64)), "no component"),
        (format!("sha256:{forged}"), "does not hash"),
    ];
    for (image, why) in refused {
        let reply = lattice.ctl.send(&start("bad", image.clone()), Some(&host)).await?;
        assert!(!reply.success && reply.message.contains(why), "{image}: {reply:?}");
    }
    assert_eq!(running(&lattice, &host).await?, ["echo"], "a refused start changed nothing");

    // A host started to allow the directory runs a file from it, and nothing outside it.
    let (_allowing, allowing_id) = lattice.start_host_with(&["--allow-file-dir", &dir.display().to_string()]).await?;
    let reply = lattice.ctl.send(&start("local", format!("file:{}", wasm.display())), Some(&allowing_id)).await?;
    assert!(reply.success, "{reply:?}");
    let escape = format!("file:{}/../../../../Cargo.toml", dir.display());
    let reply = lattice.ctl.send(&start("escape", escape), Some(&allowing_id)).await?;
    assert!(!reply.success && reply.message.contains("outside"), "{reply:?}");
    assert_eq!(running(&lattice, &allowing_id).await?, ["local"]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_component_updated_under_a_stream_of_calls_loses_none() -> anyhow::Result<()> {
    let lattice = Arc::new(Lattice::start().await?);
    let host = lattice.host_id.clone();
    lattice.start_component_on("http-echo", "svc", &[], Some(&host)).await?;
    lattice
        .link(ferry_proto::link::Link::new(TEST_CLIENT_ID, "svc", "wasi", "http", vec!["incoming-handler".into()]))
        .await?;
    let new_image = lattice.image("hello").await?;
    let mut events = lattice.raw.subscribe(format!("ferry.evt.{}.component_updated", lattice.name)).await?;
    ferry_lattice::nats::sync_subscriptions(&lattice.raw).await?;

    let stop = Arc::new(AtomicBool::new(false));
    let (old, new) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut callers = Vec::new();
    for _ in 0..4 {
        let (lattice, stop, old, new) = (lattice.clone(), stop.clone(), old.clone(), new.clone());
        callers.push(tokio::spawn(async move {
            let mut errors = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                match lattice.client.handle_http("svc", &get("/sleep?ms=20")).await {
                    Ok(resp) if resp.status == 200 && resp.body.starts_with(b"Hello, world!") => {
                        new.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(resp) if resp.status == 200 => {
                        old.fetch_add(1, Ordering::Relaxed);
                    }
                    other => errors.push(format!(
                        "{:?}",
                        other.map(|r| (r.status, String::from_utf8_lossy(&r.body).into_owned()))
                    )),
                }
            }
            errors
        }));
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    let update =
        ComponentUpdate { request_id: "update-1".into(), component_id: "svc".into(), image: new_image.clone() };
    let reply = lattice.ctl.send(&update, Some(&host)).await?;
    assert!(reply.success, "{reply:?}");
    let updated = reply.data.expect("data");
    assert_eq!(updated.component.image, new_image);
    assert_ne!(updated.previous_digest, updated.component.digest);
    let new_before = new.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(600)).await;
    stop.store(true, Ordering::Relaxed);
    let mut errors = Vec::new();
    for caller in callers {
        errors.extend(caller.await?);
    }
    assert!(errors.is_empty(), "calls failed during the update: {errors:?}");
    let (old, new) = (old.load(Ordering::Relaxed), new.load(Ordering::Relaxed));
    assert!(old > 10 && new > new_before + 10, "both versions served: old {old}, new {new}");
    // Every call made after the reply meets the new version.
    for _ in 0..5 {
        let resp = lattice.client.handle_http("svc", &get("/")).await?;
        assert!(resp.body.starts_with(b"Hello, world!"), "{:?}", String::from_utf8_lossy(&resp.body));
    }

    let msg = tokio::time::timeout(Duration::from_secs(5), events.next()).await?.expect("event");
    match serde_json::from_slice::<CloudEvent>(&msg.payload)?.event()? {
        Event::ComponentUpdated(e) => {
            assert_eq!((e.request_id.as_str(), e.image.as_str()), ("update-1", new_image.as_str()));
            assert_eq!((e.previous_digest, e.digest), (updated.previous_digest, updated.component.digest.clone()));
        }
        other => panic!("{other:?}"),
    }
    let inventory = lattice.ctl.send(&HostInventory::default(), Some(&host)).await?.data.expect("inventory");
    assert_eq!(inventory.components[0].digest, updated.component.digest);
    assert_eq!(inventory.components[0].max_instances, 50, "an update keeps the bound");

    // A bad reference leaves the running version alone; an update of nothing is refused.
    let bad = ComponentUpdate {
        request_id: "bad".into(),
        component_id: "svc".into(),
        image: format!("sha256:{}", "1".repeat(64)),
    };
    let reply = lattice.ctl.send(&bad, Some(&host)).await?;
    assert!(!reply.success && reply.message.contains("no component"), "{reply:?}");
    let resp = lattice.client.handle_http("svc", &get("/")).await?;
    assert!(resp.body.starts_with(b"Hello, world!"));
    let none = ComponentUpdate { request_id: "none".into(), component_id: "nobody".into(), image: new_image };
    let reply = lattice.ctl.send(&none, Some(&host)).await?;
    assert!(!reply.success && reply.message.contains("does not run"), "{reply:?}");
    assert!(
        tokio::time::timeout(Duration::from_millis(300), events.next()).await.is_err(),
        "a failed update announced nothing"
    );
    Ok(())
}
