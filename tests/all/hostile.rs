//! Hostile bus clients: plain NATS connections on the lattice that capture and republish
//! invocations, or answer for someone else. None of it may stop a provider or fail a call.

use std::{collections::HashSet, time::Duration};

use ferry_proto::{
    ErrorKind, RpcError,
    auth::period_of,
    codec,
    envelope::{Invocation, InvocationResponse},
    health::ShutdownRequest,
    link::Link,
    subject,
};
use ferry_tests::{Lattice, Process};
use futures::StreamExt as _;
use serde_json::json;

const KV: &str = "ferry-provider-keyvalue";

async fn kv_lattice(instances: usize) -> anyhow::Result<(Lattice, Vec<Process>)> {
    let lattice = Lattice::start().await?;
    let mut providers = Vec::new();
    for _ in 0..instances {
        providers.push(lattice.start_provider(KV, "kv-nats").await?);
    }
    lattice.start_component("kv-http", "kvc", &[]).await?;
    let mut link = Link::new("kvc", "kv-nats", "wasi", "keyvalue", vec!["store".into()]);
    link.name = "default".into();
    lattice.link(link).await?;
    Ok((lattice, providers))
}

fn instance_id(provider: &Process) -> anyhow::Result<String> {
    let logs = provider.logs();
    let id = logs
        .split("instance_id=")
        .nth(1)
        .map(|rest| rest.chars().take_while(char::is_ascii_alphanumeric).collect::<String>())
        .filter(|id| !id.is_empty());
    id.ok_or_else(|| anyhow::anyhow!("no instance_id in the provider's ready line:\n{logs}"))
}

/// Publish `bytes` on `subject` and collect every answer for a moment.
async fn republish(lattice: &Lattice, subject: String, bytes: Vec<u8>) -> anyhow::Result<Vec<InvocationResponse>> {
    let inbox = lattice.raw.new_inbox();
    let mut replies = lattice.raw.subscribe(inbox.clone()).await?;
    lattice.raw.publish_with_reply(subject, inbox, bytes.into()).await?;
    // The first answer may be slow on a loaded machine; more than one arrive close together.
    let mut answers = Vec::new();
    let mut wait = Duration::from_secs(5);
    while let Ok(Some(msg)) = tokio::time::timeout(wait, replies.next()).await {
        answers.push(InvocationResponse::decode(&msg.payload)?);
        wait = Duration::from_millis(500);
    }
    Ok(answers)
}

/// Every answer is a refusal, and none is signed (a signed refusal could pass for the answer to
/// the genuine request).
fn all_refused(answers: &[InvocationResponse]) -> bool {
    answers.iter().all(|a| matches!(&a.error, Some(RpcError { kind: ErrorKind::Denied, .. })) && a.mac.is_empty())
}

#[tokio::test(flavor = "multi_thread")]
async fn captured_invocations_republished_on_control_subjects_are_refused() -> anyhow::Result<()> {
    let (lattice, providers) = kv_lattice(2).await?;
    let (first, second) = (instance_id(&providers[0])?, instance_id(&providers[1])?);

    // Capture a data-plane invocation the host sends to the provider.
    let mut capture = lattice.raw.subscribe(subject::rpc(&lattice.name, "kv-nats")?).await?;
    lattice.ok("kvc", json!({"op": "set", "bucket": "b", "key": "k", "value": "v"})).await?;
    let captured = tokio::time::timeout(Duration::from_secs(5), capture.next()).await?.expect("a captured invocation");
    let bytes = captured.payload.to_vec();

    // Republished on every control subject, it is refused everywhere.
    for target in [
        subject::shutdown(&lattice.name, "kv-nats", None)?,
        subject::shutdown(&lattice.name, "kv-nats", Some(&first))?,
        subject::link_del(&lattice.name, "kv-nats")?,
        subject::link_put(&lattice.name, "kv-nats")?,
        subject::health(&lattice.name, "kv-nats")?,
    ] {
        let answers = republish(&lattice, target.clone(), bytes.clone()).await?;
        assert!(all_refused(&answers), "{target}: {answers:?}");
    }

    tokio::time::sleep(Duration::from_millis(500)).await;
    for provider in &providers {
        assert!(!provider.logs().contains("shutting down on request"), "a provider stopped:\n{}", provider.logs());
        assert!(provider.logs().contains("rejected invocation"), "no rejection logged:\n{}", provider.logs());
    }
    for i in 0..10 {
        lattice.ok("kvc", json!({"op": "set", "bucket": "b", "key": format!("k{i}"), "value": "v"})).await?;
    }

    // A genuine shutdown for one instance stops it; captured and republished to every
    // instance, it stops none of the others.
    let mut stop_first = Invocation::new("test-host", "kv-nats", "default", subject::OP_SHUTDOWN, Vec::new());
    stop_first.payload = codec::encode(&ShutdownRequest { instance_id: Some(first.clone()) })?;
    stop_first.set_timeout(Duration::from_secs(5));
    stop_first.sign(&lattice.cluster.provider_key(&lattice.name, "kv-nats", period_of(stop_first.issued_at_ms)));
    let bytes = stop_first.encode()?;
    let stopped =
        republish(&lattice, subject::shutdown(&lattice.name, "kv-nats", Some(&first))?, bytes.clone()).await?;
    assert!(stopped.len() == 1 && stopped[0].error.is_none(), "the genuine shutdown was refused: {stopped:?}");
    let mut first_process = providers.into_iter();
    let (mut stopping, survivor) = (first_process.next().expect("two"), first_process.next().expect("two"));
    stopping.wait_for_log("provider stopped", Duration::from_secs(15)).await?;

    let replayed = republish(&lattice, subject::shutdown(&lattice.name, "kv-nats", None)?, bytes).await?;
    assert!(all_refused(&replayed) && !replayed.is_empty(), "{replayed:?}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!survivor.logs().contains("shutting down on request"), "the other instance stopped:\n{}", survivor.logs());
    assert!(survivor.logs().contains(&format!("shutdown for instance {first}, not {second}")), "{}", survivor.logs());
    lattice.ok("kvc", json!({"op": "set", "bucket": "b", "key": "after", "value": "v"})).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn forged_replies_from_a_bus_client_do_not_fail_calls() -> anyhow::Result<()> {
    let (lattice, _providers) = kv_lattice(1).await?;

    // A hostile client answers every invocation it sees with a plausible error, unsigned, and
    // also provokes a MACed refusal for the same request id onto the caller's inbox.
    let hostile = async_nats::connect(&lattice.nats.url).await?;
    let mut seen = hostile.subscribe(format!("ferry.rpc.{}.>", lattice.name)).await?;
    let attacker = hostile.clone();
    let attack = tokio::spawn(async move {
        let mut answered = HashSet::new();
        let mut sent = 0usize;
        while let Some(msg) = seen.next().await {
            let (Ok(inv), Some(reply)) = (Invocation::decode(&msg.payload), msg.reply.clone()) else { continue };
            if !answered.insert(inv.id.clone()) {
                continue;
            }
            let forged = InvocationResponse::err(inv.id.clone(), RpcError::new(ErrorKind::Denied, "forged"));
            let _ = attacker.publish(reply.clone(), forged.encode().unwrap_or_default().into()).await;
            let mut provoke = inv.clone();
            provoke.mac = vec![0; 32];
            let target = subject::rpc("test", &inv.target).unwrap_or_default();
            let _ = attacker.publish_with_reply(target, reply, provoke.encode().unwrap_or_default().into()).await;
            sent += 2;
        }
        sent
    });
    tokio::time::sleep(Duration::from_millis(200)).await;

    for i in 0..20 {
        lattice.ok("kvc", json!({"op": "set", "bucket": "b", "key": format!("k{i}"), "value": "v"})).await?;
        assert_eq!(lattice.ok("kvc", json!({"op": "get", "bucket": "b", "key": format!("k{i}")})).await?, json!("v"));
    }
    assert!(lattice.client.rejected_replies() > 0, "the forged replies reached the caller and were dropped");
    drop(hostile);
    attack.abort();
    Ok(())
}
