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

/// The first instance's answer to one signed health request (none within 4 s: empty).
async fn health_of(lattice: &Lattice, provider: &str) -> anyhow::Result<Vec<HealthAnswer>> {
    let mut inv = Invocation::new("test-host", provider, "default", subject::OP_HEALTH, Vec::new());
    let key = lattice.cluster.provider_key(&lattice.name, provider, period_of(inv.issued_at_ms));
    inv.set_timeout(Duration::from_secs(5));
    inv.sign(&key);
    let inbox = lattice.raw.new_inbox();
    let mut replies = lattice.raw.subscribe(inbox.clone()).await?;
    lattice.raw.publish_with_reply(subject::health(&lattice.name, provider)?, inbox, inv.encode()?.into()).await?;
    let mut answers = Vec::new();
    if let Ok(Some(msg)) = tokio::time::timeout(Duration::from_secs(4), replies.next()).await {
        let resp = InvocationResponse::decode(&msg.payload)?;
        resp.verify(&key, &inv.id)?;
        answers.push(codec::decode(&resp.into_result()?)?);
    }
    Ok(answers)
}

#[tokio::test(flavor = "multi_thread")]
async fn keyvalue_health_reports_a_backend_that_does_not_answer() -> anyhow::Result<()> {
    let lattice = Lattice::start().await?;
    let mut redis_server = ferry_tests::RedisServer::start().await?;
    let _provider = lattice.start_provider("ferry-provider-keyvalue", "kv-redis").await?;
    lattice.config("redis", &[("url", &redis_server.url)]).await?;
    lattice.start_component("kv-http", "kvc", &[]).await?;
    let mut link = ferry_proto::link::Link::new("kvc", "kv-redis", "wasi", "keyvalue", vec!["store".into()]);
    link.target_config = vec!["redis".into()];
    lattice.link(link).await?;

    let answers = health_of(&lattice, "kv-redis").await?;
    assert!(answers.len() == 1 && answers[0].healthy, "{answers:?}");
    redis_server.process.kill();
    let answers = health_of(&lattice, "kv-redis").await?;
    assert_eq!(answers.len(), 1, "the provider must still answer");
    assert!(!answers[0].healthy, "Redis is gone but the provider says healthy: {:?}", answers[0]);
    assert!(answers[0].message.contains("Redis"), "{}", answers[0].message);
    Ok(())
}
