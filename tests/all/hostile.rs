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

/// Send `bytes` on `subject` and collect the answers that come within a moment.
async fn answers_to(lattice: &Lattice, subject: &str, bytes: Vec<u8>) -> anyhow::Result<Vec<InvocationResponse>> {
    let inbox = lattice.raw.new_inbox();
    let mut replies = lattice.raw.subscribe(inbox.clone()).await?;
    lattice.raw.publish_with_reply(subject.to_owned(), inbox, bytes.into()).await?;
    let mut answers = Vec::new();
    while let Ok(Some(msg)) = tokio::time::timeout(Duration::from_millis(1500), replies.next()).await {
        match InvocationResponse::decode(&msg.payload) {
            Ok(answer) => answers.push(answer),
            Err(err) => anyhow::bail!("an answer that is not a response: {err}"),
        }
    }
    Ok(answers)
}

#[tokio::test(flavor = "multi_thread")]
async fn truncated_nested_oversized_misencoded_and_unknown_invocations_are_refused_and_serving_goes_on()
-> anyhow::Result<()> {
    let (lattice, providers) = kv_lattice(1).await?;
    lattice.ok("kvc", json!({"op": "set", "bucket": "b", "key": "before", "value": "v"})).await?;
    // For the component (signed as the test client) and for the provider (signed as a host).
    for (target, origin, signer) in
        [("kvc", ferry_tests::TEST_CLIENT_ID, ferry_tests::TEST_CLIENT_ID), ("kv-nats", "kvc", "kv-nats")]
    {
        let subject = subject::rpc(&lattice.name, target)?;
        let signed = |operation: &str, payload: Vec<u8>, version: u16| -> anyhow::Result<Vec<u8>> {
            let mut inv = Invocation::new(origin, target, "default", operation, payload);
            inv.version = version;
            inv.set_timeout(Duration::from_secs(2));
            inv.sign(&lattice.cluster.provider_key(&lattice.name, signer, period_of(inv.issued_at_ms)));
            Ok(inv.encode()?)
        };
        let genuine = signed(
            "wasi:keyvalue/store.get",
            codec::encode(&json!({"bucket": "b", "key": "k"}))?,
            ferry_proto::PROTOCOL_VERSION,
        )?;
        let mut bad_utf8 = signed("wasi:keyvalue/store.get", Vec::new(), ferry_proto::PROTOCOL_VERSION)?;
        let at = bad_utf8.windows(origin.len()).position(|w| w == origin.as_bytes()).expect("the origin is in it");
        bad_utf8[at..at + 2].copy_from_slice(&[0xff, 0xfe]);
        let mut deep = vec![0x91; 200_000];
        deep.push(0xc0);
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("empty", Vec::new()),
            ("never-used MessagePack marker", vec![0xc1; 64]),
            ("truncated", genuine[..genuine.len() / 2].to_vec()),
            ("200 000 levels of nesting", deep),
            ("invalid UTF-8 in a field", bad_utf8),
            ("protocol version 999", signed("wasi:keyvalue/store.get", Vec::new(), 999)?),
            ("unknown operation", signed("wasi:nothing/here.at-all", Vec::new(), ferry_proto::PROTOCOL_VERSION)?),
            ("900 KB of garbage", vec![0xa5; 900 * 1024]),
        ];
        for (case, bytes) in cases {
            let answers = answers_to(&lattice, &subject, bytes).await?;
            // Refusals are unsigned; an authentic call to an unknown operation may get a signed
            // error saying so. Never a success.
            assert!(answers.len() <= 1, "{target}, {case}: {answers:?}");
            for answer in &answers {
                let kind = answer.error.as_ref().map(|e| e.kind);
                assert!(kind.is_some(), "{target}, {case}: answered with success: {answer:?}");
                assert!(
                    answer.mac.is_empty() || case == "unknown operation",
                    "{target}, {case}: a signed refusal {answer:?}"
                );
            }
        }
    }
    // Everyone still serves.
    for i in 0..5 {
        lattice.ok("kvc", json!({"op": "set", "bucket": "b", "key": format!("after{i}"), "value": "v"})).await?;
    }
    assert_eq!(lattice.ok("kvc", json!({"op": "get", "bucket": "b", "key": "before"})).await?, json!("v"));
    assert!(lattice.host.logs().contains("rejected"), "nothing was logged as rejected:\n{}", lattice.host.logs());
    assert!(providers[0].logs().contains("rejected"), "{}", providers[0].logs());
    Ok(())
}
