//! The host's links service: link put/del/get and config put/get/del, with typed results.
//!
//! A put is stored (revision-checked) and then offered to the provider on each side as a
//! request; every instance's accept or reject decides `link_set` or `link_set_failed`. A
//! changed or deleted config reaches the providers whose links use it, as a link put with the
//! values now in force. Config values never appear in results, events or logs.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use ferry_proto::{
    ErrorKind, codec,
    ctl::{ConfigStored, LinkSet, RefreshedLink, SideAnswer},
    event::{ConfigChanged, Event, LinkChanged},
    link::{DEFAULT_LINK_NAME, Link, LinkAck, LinkDel, LinkKey},
    seal, subject,
};
use tokio::time::Instant;
use tracing::warn;

use crate::{events::Events, lattice::LatticeView, rpc::client::RpcClient};

/// How long a provider has to accept or reject a link.
const LINK_ACK_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a link or config command failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LinkError {
    /// The command is invalid, or conflicts with what is stored.
    #[error("{0}")]
    Invalid(String),
    /// What it names does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The lattice bucket failed.
    #[error("{0}")]
    Bucket(String),
    /// The link is stored, but a provider rejected it or gave no verdict.
    #[error("link stored at revision {} but a provider rejected it", .0.revision)]
    Rejected(LinkSet),
}

/// The links and config of the lattice, as one host changes them.
#[derive(Clone)]
pub(crate) struct Links {
    host_id: String,
    lattice: String,
    view: LatticeView,
    rpc: RpcClient,
    events: Events,
}

impl Links {
    pub(crate) fn new(host_id: &str, lattice: &str, view: LatticeView, rpc: RpcClient, events: Events) -> Self {
        Self { host_id: host_id.to_owned(), lattice: lattice.to_owned(), view, rpc, events }
    }

    /// Store `link` and offer it to both sides.
    pub(crate) async fn put(&self, request_id: &str, link: Link) -> Result<LinkSet, LinkError> {
        link.validate().map_err(|e| LinkError::Invalid(e.to_string()))?;
        // As wasmCloud: one name may not lead a component's import to two targets.
        if let Some(existing) = self.view.conflict_with(&link) {
            return Err(LinkError::Invalid(format!(
                "link already exists with different target, consider deleting the existing link or using a different link name: {} -> {} ({}) covers {}:{}/{{{}}}",
                existing.source_id,
                existing.target_id,
                existing.name,
                existing.wit_namespace,
                existing.wit_package,
                existing.interfaces.join(",")
            )));
        }
        let revision = self
            .view
            .bucket()
            .put_link(&link)
            .await
            .map_err(|e| LinkError::Bucket(format!("failed to store link: {e}")))?;
        self.view.record_link(&link, revision);
        let (accepted, providers) = self.notify_put(&link).await;
        let set = LinkSet { link, revision, providers };
        let changed = changed(request_id, &set);
        if accepted {
            self.events.emit(&Event::LinkSet(changed)).await;
            Ok(set)
        } else {
            self.events.emit(&Event::LinkSetFailed(changed)).await;
            Err(LinkError::Rejected(set))
        }
    }

    /// Delete the link `key` names and tell both sides.
    pub(crate) async fn del(&self, request_id: &str, mut key: LinkKey) -> Result<LinkSet, LinkError> {
        if key.name.is_empty() {
            key.name = DEFAULT_LINK_NAME.to_owned();
        }
        let (link, revision) = match self.view.bucket().del_link(&key).await {
            Ok(Some(found)) => found,
            Ok(None) => {
                return Err(LinkError::NotFound(format!(
                    "no link {} -> {} ({}) for {}:{}",
                    key.source_id, key.target_id, key.name, key.wit_namespace, key.wit_package
                )));
            }
            Err(err) => return Err(LinkError::Bucket(format!("failed to delete link: {err}"))),
        };
        self.view.forget_link(&link, revision);
        let del = LinkDel { key, revision };
        let mut providers = Vec::new();
        for side in sides(&link) {
            let result = self
                .offer(side, subject::OP_LINK_DEL, subject::link_del(&self.lattice, side), codec::encode(&del))
                .await;
            providers.push(answer(side, result));
        }
        let set = LinkSet { link, revision, providers };
        self.events.emit(&Event::LinkDeleted(changed(request_id, &set))).await;
        Ok(set)
    }

    /// Every link, or those from or to `id`.
    pub(crate) async fn get(&self, id: Option<&str>) -> Result<Vec<Link>, LinkError> {
        let links =
            self.view.bucket().links().await.map_err(|e| LinkError::Bucket(format!("failed to read links: {e}")))?;
        Ok(links
            .into_iter()
            .map(|(l, _)| l)
            .filter(|l| id.is_none_or(|id| l.source_id == id || l.target_id == id))
            .collect())
    }

    /// Store config `name` and offer every link that names it again.
    pub(crate) async fn put_config(
        &self,
        request_id: &str,
        name: &str,
        values: &BTreeMap<String, String>,
    ) -> Result<ConfigStored, LinkError> {
        subject::validate_id("config name", name).map_err(|e| LinkError::Invalid(e.to_string()))?;
        let revision = self
            .view
            .bucket()
            .put_config(name, values)
            .await
            .map_err(|e| LinkError::Bucket(format!("failed to store config {name}: {e}")))?;
        self.view.record_config(name, Some(values.clone()), revision);
        let changed = ConfigChanged { request_id: request_id.to_owned(), name: name.to_owned(), revision };
        self.events.emit(&Event::ConfigSet(changed)).await;
        let links = self.refresh_links(name).await;
        Ok(ConfigStored { name: name.to_owned(), revision, links })
    }

    /// The values of config `name`.
    pub(crate) async fn get_config(&self, name: &str) -> Result<BTreeMap<String, String>, LinkError> {
        match self.view.bucket().config(name).await {
            Ok(Some(values)) => Ok(values),
            Ok(None) => Err(LinkError::NotFound(format!("no config named {name}"))),
            Err(err) => Err(LinkError::Bucket(format!("failed to read config {name}: {err}"))),
        }
    }

    /// Delete config `name` and offer every link that names it again, without it.
    pub(crate) async fn del_config(&self, request_id: &str, name: &str) -> Result<ConfigStored, LinkError> {
        let revision = match self.view.bucket().del_config(name).await {
            Ok(Some(revision)) => revision,
            Ok(None) => return Err(LinkError::NotFound(format!("no config named {name}"))),
            Err(err) => return Err(LinkError::Bucket(format!("failed to delete config {name}: {err}"))),
        };
        self.view.record_config(name, None, revision);
        let changed = ConfigChanged { request_id: request_id.to_owned(), name: name.to_owned(), revision };
        self.events.emit(&Event::ConfigDeleted(changed)).await;
        let links = self.refresh_links(name).await;
        Ok(ConfigStored { name: name.to_owned(), revision, links })
    }

    /// Offer every link that names config `name` again, resolved with the config as it is now.
    async fn refresh_links(&self, name: &str) -> Vec<RefreshedLink> {
        let mut refreshed = Vec::new();
        for link in self.view.links_using_config(name) {
            let (accepted, _) = self.notify_put(&link).await;
            refreshed.push(RefreshedLink {
                source_id: link.source_id.clone(),
                target_id: link.target_id.clone(),
                name: link.name.clone(),
                accepted,
            });
        }
        refreshed
    }

    /// Offer `link` to both sides as the view resolves it now: its configs merged, at the
    /// revision of the newest entry it depends on. Whether every side accepted, and each
    /// side's answer.
    async fn notify_put(&self, link: &Link) -> (bool, Vec<SideAnswer>) {
        let Some(put) = self.view.resolve(link) else {
            let nothing = SideAnswer {
                id: String::new(),
                accepted: true,
                result: "the link was deleted meanwhile; nothing to offer".into(),
            };
            return (true, vec![nothing]);
        };
        let mut answers = Vec::new();
        for side in sides(link) {
            let result = self
                .offer(side, subject::OP_LINK_PUT, subject::link_put(&self.lattice, side), codec::encode(&put))
                .await;
            answers.push(answer(side, result));
        }
        (answers.iter().all(|a| a.accepted), answers)
    }

    /// Send a link notification to `side` and collect the answer of every running instance:
    /// each sends a receipt at once and its verdict after applying. `Ok` with a description
    /// when all that answered accepted (or nobody listens: a component, or a provider not
    /// running yet reads the link from the bucket when it starts); `Err` with the reasons when
    /// an instance rejected it or gave no verdict in time.
    async fn offer<E: std::fmt::Display>(
        &self,
        side: &str,
        operation: &str,
        subject: Result<String, E>,
        payload: Result<Vec<u8>, E>,
    ) -> Result<String, String> {
        let (subject, payload) = match (subject, payload) {
            (Ok(s), Ok(p)) => (s, p),
            (Err(e), _) | (_, Err(e)) => return Err(e.to_string()),
        };
        let (mut inv, key) = self.rpc.prepare(&self.host_id, side, DEFAULT_LINK_NAME, operation);
        // A link put carries resolved config (secrets): sealed, so only the provider reads it.
        inv.payload = if operation == subject::OP_LINK_PUT {
            match seal::seal(&key, &inv.id, &payload) {
                Ok(sealed) => sealed,
                Err(err) => return Err(err.to_string()),
            }
        } else {
            payload
        };
        let mut answers = match self.rpc.broadcast(subject, &mut inv, LINK_ACK_TIMEOUT).await {
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
}

/// The event data of a link change.
fn changed(request_id: &str, set: &LinkSet) -> LinkChanged {
    LinkChanged {
        request_id: request_id.to_owned(),
        link: set.link.clone(),
        revision: set.revision,
        providers: set.providers.clone(),
    }
}

/// One side's answer from the outcome of an offer.
fn answer(side: &str, result: Result<String, String>) -> SideAnswer {
    let accepted = result.is_ok();
    SideAnswer { id: side.to_owned(), accepted, result: result.unwrap_or_else(|e| e) }
}

/// The distinct ids on the two ends of a link.
fn sides(link: &Link) -> Vec<&str> {
    if link.source_id == link.target_id {
        vec![link.source_id.as_str()]
    } else {
        vec![link.source_id.as_str(), link.target_id.as_str()]
    }
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
