//! Messaging end to end: plain NATS clients ↔ the messaging provider process ↔ NATS ↔ hosts ↔
//! a component's `wasmcloud:messaging` handler and consumer.

use std::{collections::HashMap, time::Duration};

use ferry_proto::link::Link;
use ferry_tests::{Lattice, Process};
use futures::StreamExt as _;

const MESSAGING: &str = "ferry-provider-messaging";

pub(crate) fn consumer_link(component: &str, provider: &str) -> Link {
    Link::new(component, provider, "wasmcloud", "messaging", vec!["consumer".into()])
}

pub(crate) fn handler_link(provider: &str, component: &str, source_config: &[&str]) -> Link {
    let mut link = Link::new(provider, component, "wasmcloud", "messaging", vec!["handler".into()]);
    link.source_config = source_config.iter().map(|c| (*c).to_owned()).collect();
    link
}

/// POST `path` to the component through the lattice; returns status and body text.
pub(crate) async fn command(
    lattice: &Lattice,
    component: &str,
    path: &str,
    body: &[u8],
) -> anyhow::Result<(u16, String)> {
    let request = ferry_proto::http::HttpRequest {
        method: "POST".into(),
        scheme: "http".into(),
        authority: "localhost".into(),
        path_with_query: path.to_owned(),
        headers: Vec::new(),
        body: body.to_vec(),
        body_stream: None,
    };
    let response = lattice.client.handle_http(component, &request).await?;
    Ok((response.status, String::from_utf8_lossy(&response.body).into_owned()))
}

/// The messaging provider, the messaging-echo component `id` (config `name=id`), and the
/// consumer link between them.
async fn messaging_lattice(id: &str) -> anyhow::Result<(Lattice, Process)> {
    let lattice = Lattice::start().await?;
    let provider = lattice.start_provider(MESSAGING, "msg").await?;
    lattice.config(&format!("name-{id}"), &[("name", id)]).await?;
    lattice.start_component("messaging-echo", id, &[&format!("name-{id}")]).await?;
    lattice.link(consumer_link(id, "msg")).await?;
    Ok((lattice, provider))
}

#[tokio::test(flavor = "multi_thread")]
async fn subscribed_components_answer_plain_nats_clients_and_failures_are_logged() -> anyhow::Result<()> {
    let (lattice, mut provider) = messaging_lattice("echo").await?;
    lattice.config("echo-subs", &[("subscriptions", "echo.*, fail.>")]).await?;
    lattice.link(handler_link("msg", "echo", &["echo-subs"])).await?;
    provider.wait_for_log("handler link subscribed", Duration::from_secs(10)).await?;

    // A plain client's request reaches the handler, whose reply goes to the reply-to.
    let mut seen = lattice.raw.subscribe("seen.>").await?;
    ferry_lattice::nats::sync_subscriptions(&lattice.raw).await?;
    let reply = tokio::time::timeout(Duration::from_secs(5), lattice.raw.request("echo.hi", "hello".into())).await??;
    assert_eq!(reply.payload.as_ref(), b"echo: hello");
    let report = tokio::time::timeout(Duration::from_secs(5), seen.next()).await?.expect("seen");
    assert_eq!((report.subject.as_str(), report.payload.as_ref()), ("seen.echo.hi", &b"hello"[..]));

    // A handler error is logged with the subject and the error.
    lattice.raw.publish("fail.now", "x".into()).await?;
    provider.wait_for_log("handler failed on purpose for fail.now", Duration::from_secs(10)).await?;
    let line = provider.logs().lines().find(|l| l.contains("handler failed on purpose")).unwrap_or_default().to_owned();
    assert!(line.contains("message not handled") && line.contains("subject=fail.now"), "{line}");
    assert!(line.contains("ComponentError"), "{line}");

    // So is a message for a component no host runs.
    lattice.config("ghost-subs", &[("subscriptions", "ghost.x")]).await?;
    lattice.link(handler_link("msg", "ghost", &["ghost-subs"])).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !provider.logs().lines().any(|l| l.contains("subject=ghost.x") && l.contains("Unavailable")) {
        assert!(tokio::time::Instant::now() < deadline, "no log line for ghost.x:\n{}", provider.logs());
        lattice.raw.publish("ghost.x", "boo".into()).await?;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Link del unsubscribes: nobody answers any more.
    lattice.unlink(handler_link("msg", "echo", &[]).key()).await?;
    provider.wait_for_log("handler link unsubscribed", Duration::from_secs(10)).await?;
    let gone = tokio::time::timeout(Duration::from_secs(2), lattice.raw.request("echo.hi", "again".into())).await;
    assert!(!matches!(gone, Ok(Ok(_))), "still answered after link del");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn components_publish_and_request_through_the_consumer() -> anyhow::Result<()> {
    let (lattice, _provider) = messaging_lattice("caller").await?;

    // An external responder.
    let mut service = lattice.raw.subscribe("svc.ping").await?;
    let responder = lattice.raw.clone();
    tokio::spawn(async move {
        while let Some(msg) = service.next().await {
            if let Some(reply) = msg.reply {
                let mut body = b"pong:".to_vec();
                body.extend_from_slice(&msg.payload);
                let _ = responder.publish(reply, body.into()).await;
            }
        }
    });
    let mut events = lattice.raw.subscribe("events.>").await?;
    ferry_lattice::nats::sync_subscriptions(&lattice.raw).await?;

    assert_eq!(
        command(&lattice, "caller", "/request?subject=svc.ping&timeout=2000", b"1").await?,
        (200, "pong:1".into())
    );
    assert_eq!(command(&lattice, "caller", "/publish?subject=events.created", b"e1").await?, (200, "published".into()));
    let event = tokio::time::timeout(Duration::from_secs(5), events.next()).await?.expect("event");
    assert_eq!((event.subject.as_str(), event.payload.as_ref()), ("events.created", &b"e1"[..]));

    // Typed failures reach the component as its error string.
    let (status, error) = command(&lattice, "caller", "/request?subject=nobody.home&timeout=300", b"").await?;
    assert_eq!(status, 500);
    assert!(error.starts_with("unavailable:") || error.starts_with("timeout:"), "{error}");
    for reserved in ["ferry.rpc.test.caller", "$KV.FERRY_test_DATA.x"] {
        let (status, error) = command(&lattice, "caller", &format!("/publish?subject={reserved}"), b"x").await?;
        assert_eq!(status, 500);
        assert!(error.starts_with("denied:"), "{reserved}: {error}");
    }
    let (status, error) = command(&lattice, "caller", "/publish?subject=bad..subject", b"x").await?;
    assert_eq!(status, 500, "{error}");
    assert!(error.starts_with("bad-request:"), "{error}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_queue_group_over_two_providers_and_two_hosts_handles_each_message_once() -> anyhow::Result<()> {
    let lattice = Lattice::start().await?;
    let (_second_host, second_id) = lattice.start_host().await?;
    let _one = lattice.start_provider(MESSAGING, "msg").await?;
    let mut two = lattice.start_provider(MESSAGING, "msg").await?;
    for host in [lattice.host_id.as_str(), second_id.as_str()] {
        lattice.start_component_on("messaging-echo", "worker", &[], Some(host)).await?;
    }
    lattice.link(consumer_link("worker", "msg")).await?;
    lattice.config("jobs", &[("subscriptions", "jobs.a,jobs.b"), ("queue_group", "workers")]).await?;
    lattice.link(handler_link("msg", "worker", &["jobs"])).await?;
    two.wait_for_log("handler link subscribed", Duration::from_secs(10)).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut seen = lattice.raw.subscribe("seen.jobs.>").await?;
    ferry_lattice::nats::sync_subscriptions(&lattice.raw).await?;
    for i in 0..50 {
        lattice.raw.publish("jobs.a", format!("a{i}").into()).await?;
        lattice.raw.publish("jobs.b", format!("b{i}").into()).await?;
    }
    ferry_lattice::nats::sync_subscriptions(&lattice.raw).await?;
    let mut counts: HashMap<String, u32> = HashMap::new();
    let quiet = Duration::from_secs(3);
    while let Ok(Some(msg)) = tokio::time::timeout(quiet, seen.next()).await {
        *counts.entry(String::from_utf8_lossy(&msg.payload).into_owned()).or_default() += 1;
    }
    assert_eq!(counts.len(), 100, "every message handled: {counts:?}");
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "handled more than once: {twice:?}");
    Ok(())
}
