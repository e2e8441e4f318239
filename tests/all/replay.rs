//! Replay protection holds across the members of a queue group and across restarts: a captured
//! state-changing invocation, republished within the window, changes nothing on any instance of
//! the provider, any host running the component, or a process started since.

use std::time::Duration;

use ferry_proto::{ErrorKind, RpcError, envelope::InvocationResponse, keyvalue::op, link::Link, subject};
use ferry_tests::Lattice;
use futures::StreamExt as _;
use serde_json::json;

const KV: &str = "ferry-provider-keyvalue";

async fn link_kv(lattice: &Lattice) -> anyhow::Result<()> {
    let mut link = Link::new("kvc", "kv-nats", "wasi", "keyvalue", vec!["store".into(), "atomics".into()]);
    link.name = "default".into();
    lattice.link(link).await?;
    Ok(())
}

/// Publish `bytes` on `subject` `times` times, each with its own inbox; the answers (not the
/// progress messages a receiver sends before them).
async fn replay(
    lattice: &Lattice,
    subject: &str,
    bytes: &[u8],
    times: usize,
) -> anyhow::Result<Vec<InvocationResponse>> {
    let mut answers = Vec::new();
    for _ in 0..times {
        let inbox = lattice.raw.new_inbox();
        let mut replies = lattice.raw.subscribe(inbox.clone()).await?;
        lattice.raw.publish_with_reply(subject.to_owned(), inbox, bytes.to_vec().into()).await?;
        loop {
            let reply = tokio::time::timeout(Duration::from_secs(10), replies.next()).await?.expect("a reply");
            let answer = InvocationResponse::decode(&reply.payload)
                .map_err(|err| anyhow::anyhow!("{err}: {:?} {:?}", reply.status, reply.payload))?;
            if !answer.progress {
                answers.push(answer);
                break;
            }
        }
    }
    Ok(answers)
}

fn counter(value: &serde_json::Value) -> u64 {
    value.as_str().and_then(|v| v.parse().ok()).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_captured_write_replayed_to_other_provider_instances_or_after_a_restart_changes_nothing() -> anyhow::Result<()>
{
    let lattice = Lattice::start().await?;
    let mut first = lattice.start_provider(KV, "kv-nats").await?;
    let _second = lattice.start_provider(KV, "kv-nats").await?;
    lattice.start_component("kv-http", "kvc", &[]).await?;
    link_kv(&lattice).await?;

    // Capture the host's increment invocation to the provider.
    let rpc = subject::rpc(&lattice.name, "kv-nats")?;
    let mut capture = lattice.raw.subscribe(rpc.clone()).await?;
    // Live at the server before the call, which travels on another connection.
    ferry_lattice::nats::sync_subscriptions(&lattice.raw).await?;
    assert_eq!(lattice.ok("kvc", json!({"op": "increment", "bucket": "b", "key": "n", "delta": 1})).await?, json!(1));
    let captured = loop {
        let msg = tokio::time::timeout(Duration::from_secs(5), capture.next()).await?.expect("captured");
        let inv = ferry_proto::envelope::Invocation::decode(&msg.payload)?;
        if inv.operation == op::INCREMENT {
            break msg.payload.to_vec();
        }
    };

    // Replayed many times: the queue group hands it to both instances; none applies it.
    let answers = replay(&lattice, &rpc, &captured, 12).await?;
    for answer in &answers {
        assert!(
            matches!(&answer.error, Some(RpcError { kind: ErrorKind::Denied, .. })),
            "a replayed increment was not refused: {answer:?}"
        );
    }
    assert_eq!(counter(&lattice.ok("kvc", json!({"op": "get", "bucket": "b", "key": "n"})).await?), 1);

    // Nor after the provider restarts.
    first.kill();
    let _third = lattice.start_provider(KV, "kv-nats").await?;
    let answers = replay(&lattice, &rpc, &captured, 4).await?;
    assert!(answers.iter().all(|a| a.error.as_ref().is_some_and(|e| e.kind == ErrorKind::Denied)), "{answers:?}");
    assert_eq!(counter(&lattice.ok("kvc", json!({"op": "get", "bucket": "b", "key": "n"})).await?), 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_captured_component_call_replayed_to_another_host_changes_nothing() -> anyhow::Result<()> {
    let lattice = Lattice::start().await?;
    let (_second_host, second_id) = lattice.start_host().await?;
    let _provider = lattice.start_provider(KV, "kv-nats").await?;
    // The component runs on both hosts.
    lattice.start_component_on("kv-http", "kvc", &[], Some(&lattice.host_id)).await?;
    lattice.start_component_on("kv-http", "kvc", &[], Some(&second_id)).await?;
    lattice
        .link(Link::new(ferry_tests::TEST_CLIENT_ID, "kvc", "wasi", "http", vec!["incoming-handler".into()]))
        .await?;
    link_kv(&lattice).await?;

    let rpc = subject::rpc(&lattice.name, "kvc")?;
    let mut capture = lattice.raw.subscribe(rpc.clone()).await?;
    // Live at the server before the call, which travels on another connection.
    ferry_lattice::nats::sync_subscriptions(&lattice.raw).await?;
    assert_eq!(lattice.ok("kvc", json!({"op": "increment", "bucket": "b", "key": "n", "delta": 1})).await?, json!(1));
    let captured = tokio::time::timeout(Duration::from_secs(5), capture.next()).await?.expect("captured").payload;

    // Each replay runs on one host or the other; the component's increment is refused there.
    for answer in replay(&lattice, &rpc, &captured, 12).await? {
        if answer.error.is_none() {
            let body: ferry_proto::http::HttpResponse = ferry_proto::codec::decode(&answer.payload)?;
            assert_ne!(body.status, 200, "a replayed call succeeded: {}", String::from_utf8_lossy(&body.body));
        }
    }
    assert_eq!(counter(&lattice.ok("kvc", json!({"op": "get", "bucket": "b", "key": "n"})).await?), 1);
    Ok(())
}
