//! Memory and resources are bounded beyond one linear memory: all instances on a host share a
//! memory budget, an instance's resource table has a size, and a component's values share one
//! blob spool.

use std::time::{Duration, Instant};

use ferry_proto::{ctl::ComponentStart, link::Link};
use ferry_tests::{Lattice, TEST_CLIENT_ID, get};
use serde_json::json;

/// Start test component `name` as `id` on host `host_id`, callable by the test client.
async fn start_on(lattice: &Lattice, name: &str, id: &str, host_id: &str) -> anyhow::Result<()> {
    let start = ComponentStart {
        request_id: format!("start-{id}"),
        component_id: id.into(),
        image: lattice.image(name).await?,
        max_instances: Some(4),
        config: Vec::new(),
    };
    let resp = lattice.ctl.send(&start, Some(host_id)).await?;
    anyhow::ensure!(resp.success, "{}", resp.message);
    lattice.link(Link::new(TEST_CLIENT_ID, id, "wasi", "http", vec!["incoming-handler".into()])).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn instances_on_a_host_share_its_memory_budget() -> anyhow::Result<()> {
    let lattice = Lattice::start().await?;
    let (host, host_id) = lattice.start_host_with(&["--memory-mib", "64", "--host-memory-mib", "96"]).await?;
    start_on(&lattice, "http-echo", "hungry", &host_id).await?;

    // Each instance alone fits (50 MiB of 64), two at once do not (100 of 96).
    let hold = |ms: u64| {
        let client = lattice.client.clone();
        async move { client.handle_http("hungry", &get(&format!("/alloc?mb=50&ms={ms}"))).await }
    };
    let (first, second) = tokio::join!(hold(1500), async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        hold(0).await
    });
    let (first, second) = (first?, second?);
    assert_eq!(first.status, 200, "{}", String::from_utf8_lossy(&first.body));
    assert_eq!(
        second.status,
        507,
        "the second instance must not get memory: {}",
        String::from_utf8_lossy(&second.body)
    );
    assert!(host.logs().contains("memory growth refused"), "the host says why");

    // Once the first is done its memory is back in the budget.
    let again = hold(0).await?;
    assert_eq!(again.status, 200, "{}", String::from_utf8_lossy(&again.body));
    Ok(())
}

/// A guest that computes without pause shares its worker: on a host with one worker another
/// request is answered while it runs, and the execution time limit stops it.
#[tokio::test(flavor = "multi_thread")]
async fn a_busy_guest_shares_its_worker_and_stops_at_its_time_limit() -> anyhow::Result<()> {
    let lattice = Lattice::start().await?;
    let (host, host_id) = lattice.start_host_with(&["--workers", "1", "--execution-time-ms", "6000"]).await?;
    start_on(&lattice, "http-echo", "busy", &host_id).await?;
    let call = |path: &'static str| {
        let client = lattice.client.clone();
        async move {
            let started = Instant::now();
            let answer = client.handle_http("busy", &get(path)).await;
            (answer, started.elapsed())
        }
    };
    let ((spun, spun_for), (echoed, echo_took)) = tokio::join!(call("/spin?ms=60000"), async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        call("/echo").await
    });
    let echoed = echoed?;
    assert_eq!(echoed.status, 200, "{}", String::from_utf8_lossy(&echoed.body));
    assert!(
        echo_took + Duration::from_millis(500) < spun_for,
        "the other request must not wait for the busy guest: it took {echo_took:?}, the guest ran {spun_for:?}"
    );
    let err = match spun {
        Ok(resp) => {
            anyhow::bail!("the guest ran past its limit: {} {}", resp.status, String::from_utf8_lossy(&resp.body))
        }
        Err(err) => err,
    };
    assert_eq!(err.kind, ferry_proto::ErrorKind::ComponentTrap, "{err}");
    assert!(spun_for >= Duration::from_secs(5), "stopped at its limit, not before: {spun_for:?}");
    let after = lattice.client.handle_http("busy", &get("/echo")).await?;
    assert_eq!(after.status, 200, "the component goes on serving");
    assert!(!host.logs().contains("panicked"), "the host stays whole");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn an_instance_cannot_create_resources_without_bound() -> anyhow::Result<()> {
    let lattice = Lattice::start().await?;
    let (_host, host_id) = lattice.start_host_with(&["--max-resources", "5000"]).await?;
    start_on(&lattice, "http-echo", "makes", &host_id).await?;

    let some = lattice.client.handle_http("makes", &get("/resources?n=4000")).await?;
    assert_eq!(some.status, 200, "{}", String::from_utf8_lossy(&some.body));
    let err = match lattice.client.handle_http("makes", &get("/resources?n=6000")).await {
        Ok(resp) => {
            anyhow::bail!(
                "6000 resources were created under a 5000 limit: {} {}",
                resp.status,
                String::from_utf8_lossy(&resp.body)
            )
        }
        Err(err) => err,
    };
    assert_eq!(err.kind, ferry_proto::ErrorKind::ComponentTrap, "{err}");
    // The component goes on serving.
    let after = lattice.client.handle_http("makes", &get("/resources?n=10")).await?;
    assert_eq!(after.status, 200);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_components_values_share_one_blob_spool() -> anyhow::Result<()> {
    let lattice = Lattice::start().await?;
    let (_host, host_id) = lattice.start_host_with(&["--blob-spool-mib", "4"]).await?;
    let _provider = lattice.start_provider("ferry-provider-blobstore", "blob").await?;
    start_on(&lattice, "blob-test", "blobs", &host_id).await?;
    let root = std::env::temp_dir().join(format!("ferry-spool-{}-{}", std::process::id(), ferry_proto::time::now_ms()));
    std::fs::create_dir_all(&root)?;
    lattice.config("blob-backend", &[("root", &root.display().to_string())]).await?;
    let mut link =
        Link::new("blobs", "blob", "wasi", "blobstore", vec!["blobstore".into(), "container".into(), "types".into()]);
    link.target_config = vec!["blob-backend".into()];
    lattice.link(link).await?;
    lattice.ok("blobs", json!({"op": "create", "container": "c"})).await?;

    // One value of 3 MiB spools within the 4 MiB; two at once do not.
    lattice
        .ok("blobs", json!({"op": "write", "container": "c", "object": "one", "size": 3 << 20, "order": "body_first"}))
        .await?;
    let (status, answer) = lattice
        .call("blobs", json!({"op": "write_pair_body_first", "container": "c", "prefix": "p", "size": 3 << 20}))
        .await?;
    assert_eq!(status, 500, "two 3 MiB values spooled at once under a 4 MiB spool: {answer}");
    // Each alone is fine again.
    lattice
        .ok("blobs", json!({"op": "write", "container": "c", "object": "two", "size": 3 << 20, "order": "body_first"}))
        .await?;
    let _ = std::fs::remove_dir_all(&root);
    Ok(())
}
