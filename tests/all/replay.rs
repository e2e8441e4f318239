//! Replay protection holds across the members of a queue group and across restarts: a captured
//! state-changing invocation, republished within the window, changes nothing on any instance of
//! the provider, any host running the component, or a process started since; republished after
//! the take-up window, it runs nowhere and is not answered, though its receiver has forgotten
//! its id by then.

use std::time::Duration;

use ferry_proto::{
    ErrorKind, RpcError,
    delivery::{PATIENCE, TAKE_UP_WINDOW},
    envelope::{Invocation, InvocationResponse},
    keyvalue::op,
    link::Link,
    subject,
};
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

/// Publish `bytes` on `subject` `times` times at once, each with its own inbox; for each, its
/// answer (not the progress messages a receiver sends before it), or `None` when nothing came
/// within [`PATIENCE`]: a receiver drops a replay that arrives after the take-up window unrun
/// and unanswered, as it does any late invocation.
async fn replay(
    lattice: &Lattice,
    subject: &str,
    bytes: &[u8],
    times: usize,
) -> anyhow::Result<Vec<Option<InvocationResponse>>> {
    let mut inboxes = Vec::new();
    for _ in 0..times {
        let inbox = lattice.raw.new_inbox();
        inboxes.push((lattice.raw.subscribe(inbox.clone()).await?, inbox));
    }
    for (_, inbox) in &inboxes {
        lattice.raw.publish_with_reply(subject.to_owned(), inbox.clone(), bytes.to_vec().into()).await?;
    }
    let first_sign_by = tokio::time::Instant::now() + PATIENCE;
    let mut answers = Vec::new();
    for (mut replies, _) in inboxes {
        let Ok(first) = tokio::time::timeout_at(first_sign_by, replies.next()).await else {
            answers.push(None);
            continue;
        };
        let mut reply = first.expect("a reply");
        loop {
            let answer = InvocationResponse::decode(&reply.payload)
                .map_err(|err| anyhow::anyhow!("{err}: {:?} {:?}", reply.status, reply.payload))?;
            if !answer.progress {
                answers.push(Some(answer));
                break;
            }
            reply = tokio::time::timeout(Duration::from_secs(10), replies.next()).await?.expect("a reply");
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
    assert!(answers.iter().any(Option::is_some), "no replay arrived in time to be refused");
    for answer in answers.iter().flatten() {
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
    assert!(
        answers.iter().flatten().all(|a| a.error.as_ref().is_some_and(|e| e.kind == ErrorKind::Denied)),
        "{answers:?}"
    );
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
    for answer in replay(&lattice, &rpc, &captured, 12).await?.into_iter().flatten() {
        if answer.error.is_none() {
            let body: ferry_proto::http::HttpResponse = ferry_proto::codec::decode(&answer.payload)?;
            assert_ne!(body.status, 200, "a replayed call succeeded: {}", String::from_utf8_lossy(&body.body));
        }
    }
    assert_eq!(counter(&lattice.ok("kvc", json!({"op": "get", "bucket": "b", "key": "n"})).await?), 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_capture_replayed_after_the_take_up_window_runs_nowhere_and_is_not_answered() -> anyhow::Result<()> {
    let lattice = Lattice::start().await?;
    let _provider = lattice.start_provider(KV, "kv-nats").await?;
    lattice.start_component("kv-http", "kvc", &[]).await?;
    link_kv(&lattice).await?;

    // Capture a component call (an increment) and the provider calls it makes, a write and a read.
    let (to_component, to_provider) = (subject::rpc(&lattice.name, "kvc")?, subject::rpc(&lattice.name, "kv-nats")?);
    let mut component_calls = lattice.raw.subscribe(to_component.clone()).await?;
    let mut provider_calls = lattice.raw.subscribe(to_provider.clone()).await?;
    ferry_lattice::nats::sync_subscriptions(&lattice.raw).await?;
    assert_eq!(lattice.ok("kvc", json!({"op": "increment", "bucket": "b", "key": "n", "delta": 1})).await?, json!(1));
    assert_eq!(counter(&lattice.ok("kvc", json!({"op": "get", "bucket": "b", "key": "n"})).await?), 1);
    let increment = tokio::time::timeout(Duration::from_secs(5), component_calls.next()).await?.expect("captured");
    let mut captured = vec![(to_component.clone(), increment.payload.to_vec())];
    for wanted in [op::INCREMENT, op::GET] {
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(5), provider_calls.next()).await?.expect("captured");
            if Invocation::decode(&msg.payload)?.operation == wanted {
                captured.push((to_provider.clone(), msg.payload.to_vec()));
                break;
            }
        }
    }

    // Past the take-up window each one is still within the replay window (it is not refused as
    // stale) but is dropped unrun: no answer, no acknowledgement, nothing changed.
    tokio::time::sleep(TAKE_UP_WINDOW + Duration::from_millis(500)).await;
    for (subject, bytes) in &captured {
        let operation = Invocation::decode(bytes)?.operation;
        let heard = replay(&lattice, subject, bytes, 1).await?;
        assert!(matches!(heard[..], [None]), "a late replay of {operation} to {subject} was answered: {heard:?}");
    }
    assert_eq!(counter(&lattice.ok("kvc", json!({"op": "get", "bucket": "b", "key": "n"})).await?), 1);
    Ok(())
}
