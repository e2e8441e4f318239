//! `link.put|del|get`. A put is stored (revision-checked) and then offered to the provider on
//! each side as a request; its accept or reject decides `link_set` or `link_set_failed`.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use ferry_proto::{
    ErrorKind, codec,
    ctl::{CtlResponse, LinkDelCommand, LinkGetCommand, LinkPutCommand},
    link::{DEFAULT_LINK_NAME, Link, LinkAck, LinkDel},
    seal, subject,
};
use tokio::time::Instant;
use tracing::warn;

use crate::host::HostInner;

/// How long a provider has to accept or reject a link.
const LINK_ACK_TIMEOUT: Duration = Duration::from_secs(10);

/// What the providers on both sides of a link said.
pub(super) struct Outcome {
    /// False if any running provider rejected the link or failed to answer.
    pub(super) accepted: bool,
    /// One line per side that answered or failed.
    pub(super) details: Vec<serde_json::Value>,
}

pub(super) async fn put(host: &HostInner, cmd: LinkPutCommand) -> CtlResponse {
    let link = cmd.link;
    if let Err(err) = link.validate() {
        return CtlResponse::fail(cmd.request_id, err.to_string());
    }
    // As wasmCloud: one name may not lead a component's import to two targets.
    if let Some(existing) = host.view.conflict_with(&link) {
        return CtlResponse::fail(
            cmd.request_id,
            format!(
                "link already exists with different target, consider deleting the existing link or using a different link name: {} -> {} ({}) covers {}:{}/{{{}}}",
                existing.source_id,
                existing.target_id,
                existing.name,
                existing.wit_namespace,
                existing.wit_package,
                existing.interfaces.join(",")
            ),
        );
    }
    let revision = match host.view.bucket().put_link(&link).await {
        Ok(revision) => revision,
        Err(err) => return CtlResponse::fail(cmd.request_id, format!("failed to store link: {err}")),
    };
    host.view.record_link(&link, revision);
    let outcome = notify_put(host, &link).await;
    let data = serde_json::json!({ "request_id": cmd.request_id, "link": link, "revision": revision, "providers": outcome.details });
    if outcome.accepted {
        host.events.emit("link_set", data.clone()).await;
        CtlResponse::ok(
            cmd.request_id,
            format!("link {} -> {} ({}) set at revision {revision}", link.source_id, link.target_id, link.name),
            data,
        )
    } else {
        host.events.emit("link_set_failed", data.clone()).await;
        CtlResponse {
            request_id: cmd.request_id,
            success: false,
            message: format!("link stored at revision {revision} but a provider rejected it"),
            data,
        }
    }
}

pub(super) async fn del(host: &HostInner, cmd: LinkDelCommand) -> CtlResponse {
    let mut key = cmd.key;
    if key.name.is_empty() {
        key.name = DEFAULT_LINK_NAME.to_owned();
    }
    let (link, revision) = match host.view.bucket().del_link(&key).await {
        Ok(Some(found)) => found,
        Ok(None) => {
            return CtlResponse::fail(
                cmd.request_id,
                format!(
                    "no link {} -> {} ({}) for {}:{}",
                    key.source_id, key.target_id, key.name, key.wit_namespace, key.wit_package
                ),
            );
        }
        Err(err) => return CtlResponse::fail(cmd.request_id, format!("failed to delete link: {err}")),
    };
    host.view.forget_link(&link, revision);
    let del = LinkDel { key, revision };
    let mut details = Vec::new();
    for side in sides(&link) {
        let result = offer(
            host,
            side,
            subject::OP_LINK_DEL,
            subject::link_del(&host.identity.lattice, side),
            codec::encode(&del),
        )
        .await;
        details.push(serde_json::json!({ "id": side, "result": result.unwrap_or_else(|e| e) }));
    }
    let data =
        serde_json::json!({ "request_id": cmd.request_id, "link": link, "revision": revision, "providers": details });
    host.events.emit("link_deleted", data.clone()).await;
    CtlResponse::ok(
        cmd.request_id,
        format!("link {} -> {} ({}) deleted", link.source_id, link.target_id, link.name),
        data,
    )
}

pub(super) async fn get(host: &HostInner, cmd: LinkGetCommand) -> CtlResponse {
    match host.view.bucket().links().await {
        Ok(links) => {
            let links: Vec<Link> = links
                .into_iter()
                .map(|(l, _)| l)
                .filter(|l| cmd.id.as_ref().is_none_or(|id| &l.source_id == id || &l.target_id == id))
                .collect();
            CtlResponse::ok(cmd.request_id, format!("{} link(s)", links.len()), serde_json::json!(links))
        }
        Err(err) => CtlResponse::fail(cmd.request_id, format!("failed to read links: {err}")),
    }
}

/// Offer `link` to both sides as the view resolves it now: its configs merged, at the revision
/// of the newest entry it depends on (after a link put or a config change).
pub(super) async fn notify_put(host: &HostInner, link: &Link) -> Outcome {
    let Some(put) = host.view.resolve(link) else {
        return Outcome {
            accepted: true,
            details: vec![serde_json::json!({ "result": "the link was deleted meanwhile; nothing to offer" })],
        };
    };
    let mut outcome = Outcome { accepted: true, details: Vec::new() };
    for side in sides(link) {
        match offer(
            host,
            side,
            subject::OP_LINK_PUT,
            subject::link_put(&host.identity.lattice, side),
            codec::encode(&put),
        )
        .await
        {
            Ok(result) => outcome.details.push(serde_json::json!({ "id": side, "result": result })),
            Err(result) => {
                outcome.accepted = false;
                outcome.details.push(serde_json::json!({ "id": side, "result": result }));
            }
        }
    }
    outcome
}

/// The distinct ids on the two ends of a link.
fn sides(link: &Link) -> Vec<&str> {
    if link.source_id == link.target_id {
        vec![link.source_id.as_str()]
    } else {
        vec![link.source_id.as_str(), link.target_id.as_str()]
    }
}

/// Send a link notification to `side` and collect the answer of every running instance: each
/// sends a receipt at once and its verdict after applying. `Ok` with a description when all
/// that answered accepted (or nobody listens: a component, or a provider not running yet reads
/// the link from the bucket when it starts); `Err` with the reasons when an instance rejected
/// it or gave no verdict in time.
async fn offer<E: std::fmt::Display>(
    host: &HostInner,
    side: &str,
    operation: &str,
    subject: Result<String, E>,
    payload: Result<Vec<u8>, E>,
) -> Result<String, String> {
    let (subject, payload) = match (subject, payload) {
        (Ok(s), Ok(p)) => (s, p),
        (Err(e), _) | (_, Err(e)) => return Err(e.to_string()),
    };
    let (mut inv, key) = host.rpc.prepare(&host.identity.id, side, DEFAULT_LINK_NAME, operation);
    // A link put carries resolved config (secrets): sealed, so only the provider reads it.
    inv.payload = if operation == subject::OP_LINK_PUT {
        match seal::seal(&key, &inv.id, &payload) {
            Ok(sealed) => sealed,
            Err(err) => return Err(err.to_string()),
        }
    } else {
        payload
    };
    let mut answers = match host.rpc.broadcast(subject, &mut inv, LINK_ACK_TIMEOUT).await {
        Ok(answers) => answers,
        Err(err) => return Err(err.to_string()),
    };
    let final_deadline = Instant::now() + LINK_ACK_TIMEOUT;
    let mut tally = Tally::default();
    loop {
        let until = match tally.window_end {
            Some(end) if end > Instant::now() => end,
            _ => final_deadline,
        };
        match answers.next_until(until).await {
            Err(err) if err.kind == ErrorKind::Unavailable && tally.is_empty() => {
                return Ok("no running instance; it will read the link at start".to_owned());
            }
            Err(err) => {
                warn!(side, cause = %err, "link notification failed");
                tally.failures.push(err.to_string());
                break;
            }
            Ok(None) if until == final_deadline => break,
            Ok(None) => {}
            Ok(Some(Ok(bytes))) => match codec::decode::<LinkAck>(&bytes) {
                Ok(ack) => tally.add(ack),
                Err(err) => tally.failures.push(format!("undecodable answer: {err}")),
            },
            Ok(Some(Err(err))) => tally.failures.push(err.to_string()),
        }
        if tally.complete() {
            break;
        }
    }
    tally.outcome(side)
}

/// How long after the last receipt the sender still expects receipts from other instances:
/// receipts are sent before any work, so instances that run answer well within it.
const RECEIPT_WINDOW: Duration = Duration::from_millis(200);

/// The answers of a provider's instances to one link notification.
#[derive(Default)]
struct Tally {
    /// Instances that sent a receipt.
    received: BTreeSet<String>,
    /// Verdicts by instance.
    verdicts: BTreeMap<String, LinkAck>,
    /// Answers that were errors.
    failures: Vec<String>,
    /// Until when more receipts are expected.
    window_end: Option<Instant>,
}

impl Tally {
    fn is_empty(&self) -> bool {
        self.received.is_empty() && self.verdicts.is_empty() && self.failures.is_empty()
    }

    fn add(&mut self, ack: LinkAck) {
        self.window_end = Some(Instant::now() + RECEIPT_WINDOW);
        self.received.insert(ack.instance_id.clone());
        if !ack.pending {
            self.verdicts.insert(ack.instance_id.clone(), ack);
        }
    }

    /// Every instance that sent a receipt gave its verdict, and no more receipts are due.
    fn complete(&self) -> bool {
        self.window_end.is_some_and(|end| Instant::now() >= end)
            && self.received.iter().all(|id| self.verdicts.contains_key(id))
    }

    fn outcome(self, side: &str) -> Result<String, String> {
        let mut problems = self.failures;
        for (id, ack) in &self.verdicts {
            if !ack.accepted {
                problems.push(format!("rejected by instance {id}: {}", ack.error.clone().unwrap_or_default()));
            }
        }
        for id in self.received.iter().filter(|id| !self.verdicts.contains_key(*id)) {
            problems.push(format!("instance {id} gave no verdict within {LINK_ACK_TIMEOUT:?}"));
        }
        if self.verdicts.is_empty() && problems.is_empty() {
            problems.push(format!("no answer from {side} within {LINK_ACK_TIMEOUT:?}"));
        }
        if problems.is_empty() {
            let ids: Vec<&str> = self.verdicts.keys().map(String::as_str).collect();
            Ok(format!("accepted by instance{} {}", if ids.len() == 1 { "" } else { "s" }, ids.join(", ")))
        } else {
            warn!(side, problems = ?problems, "link notification not accepted everywhere");
            Err(problems.join("; "))
        }
    }
}
