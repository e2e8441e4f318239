//! Health: every provider instance answers a health request with its own id and status.

use std::{collections::HashSet, time::Duration};

use ferry_proto::{
    auth::period_of,
    codec,
    envelope::{Invocation, InvocationResponse},
    health::HealthAnswer,
    subject,
};
use ferry_tests::Lattice;
use futures::StreamExt as _;

#[tokio::test(flavor = "multi_thread")]
async fn every_provider_instance_answers_health_with_its_id() -> anyhow::Result<()> {
    let lattice = Lattice::start().await?;
    let _one = lattice.start_provider("ferry-provider-keyvalue", "kv-nats").await?;
    let _two = lattice.start_provider("ferry-provider-keyvalue", "kv-nats").await?;

    let mut inv = Invocation::new("test-host", "kv-nats", "default", subject::OP_HEALTH, Vec::new());
    let key = lattice.cluster.provider_key(&lattice.name, "kv-nats", period_of(inv.issued_at_ms));
    inv.sign(&key);
    let inbox = lattice.raw.new_inbox();
    let mut replies = lattice.raw.subscribe(inbox.clone()).await?;
    lattice.raw.publish_with_reply(subject::health(&lattice.name, "kv-nats")?, inbox, inv.encode()?.into()).await?;

    let mut instances = HashSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while instances.len() < 2 {
        let Ok(Some(msg)) = tokio::time::timeout_at(deadline, replies.next()).await else { break };
        let resp = InvocationResponse::decode(&msg.payload)?;
        resp.verify(&key, &inv.id)?;
        let answer: HealthAnswer = codec::decode(&resp.into_result()?)?;
        assert_eq!(answer.provider_id, "kv-nats");
        assert!(answer.healthy, "{answer:?}");
        instances.insert(answer.instance_id);
    }
    assert_eq!(instances.len(), 2, "both instances must answer, with distinct ids");

    // An unsigned health request gets a typed refusal, not an answer.
    let mut forged = Invocation::new("test-host", "kv-nats", "default", subject::OP_HEALTH, Vec::new());
    forged.mac = vec![0; 32];
    let reply = lattice.raw.request(subject::health(&lattice.name, "kv-nats")?, forged.encode()?.into()).await?;
    let resp = InvocationResponse::decode(&reply.payload)?;
    assert_eq!(resp.error.map(|e| e.kind), Some(ferry_proto::ErrorKind::Denied));
    Ok(())
}
