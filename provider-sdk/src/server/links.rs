//! A provider instance's links, kept in step with the lattice.
//!
//! Which links exist comes from the lattice bucket: the instance follows its `link.` keys
//! ([`ferry_lattice::view::follow_links`]) and calls the provider's link hooks for every link of
//! its own that the view changes, from the first sync on and after a lost connection. Their
//! config never comes from the bucket (a provider's NATS user may not read it): a host hands it
//! over sealed under this provider's key, in link put notifications and in answers to the
//! instance's link sync requests ([`ferry_lattice::LatticeClient::sync_links`]), which it makes
//! at start, after a lost connection, every minute (a config change whose notification was
//! missed), and while a link the view holds has no resolution yet (no host up). A host's link
//! notification asks the instance to apply a change now and say whether the provider
//! accepted it. Everything runs on one task, in order.

use std::{
    collections::{HashMap, HashSet},
    panic::AssertUnwindSafe,
    sync::{Arc, Mutex},
    time::Duration,
};

use ferry_proto::{
    codec,
    link::{LinkAck, LinkDel, LinkPut},
    seal,
    state::{self, parse_link_key},
    subject::Channel,
};
use futures::{FutureExt as _, StreamExt as _};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use ferry_lattice::{
    LatticeBucket,
    view::{self, ViewChange},
};

use super::{Server, signed_ok};
use crate::{
    Provider,
    links::{Applied, Held},
};

/// How long a link notification waits for the view to reach its revision before it is applied
/// as the notification says.
const NOTIFICATION_WAIT: Duration = Duration::from_secs(3);
/// How often an instance that found no lattice bucket at start looks for it again.
const BUCKET_RETRY: Duration = Duration::from_secs(2);
/// How often an instance asks a host for its links again, to catch a config change whose
/// notification it missed.
const LINK_RESYNC: Duration = Duration::from_secs(60);
/// How soon it asks again while a link the view holds has no resolution (no host answered).
const UNRESOLVED_RETRY: Duration = Duration::from_secs(2);

/// Links with their config as hosts last resolved them, by bucket key, and the keys the view
/// holds that no host has resolved yet.
#[derive(Debug, Default)]
pub(super) struct Resolved {
    puts: Mutex<HashMap<String, LinkPut>>,
    waiting: Mutex<HashSet<String>>,
}

impl Resolved {
    /// Keep `put` unless a newer resolution of the same link is held.
    fn remember(&self, put: LinkPut) {
        let Ok(key) = state::link_key(&put.link) else { return };
        let mut puts = self.puts.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if puts.get(&key).is_none_or(|held| held.revision <= put.revision) {
            puts.insert(key, put);
        }
    }

    /// The resolution of `key` at `revision` or later.
    fn at_least(&self, key: &str, revision: u64) -> Option<LinkPut> {
        let puts = self.puts.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        puts.get(key).filter(|put| put.revision >= revision).cloned()
    }

    /// Drop the resolution of `key` a delete at `revision` made obsolete, so a deleted link's
    /// config (secrets included) is not kept, and the map does not grow with every link that
    /// ever came and went. A resolution newer than the delete (the link was put again) stays.
    fn forget(&self, key: &str, revision: u64) {
        let mut puts = self.puts.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if puts.get(key).is_some_and(|held| held.revision <= revision) {
            puts.remove(key);
        }
    }

    fn wait_for(&self, key: &str, waiting: bool) {
        let mut keys = self.waiting.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if waiting {
            keys.insert(key.to_owned());
        } else {
            keys.remove(key);
        }
    }

    fn any_waiting(&self) -> bool {
        !self.waiting.lock().unwrap_or_else(std::sync::PoisonError::into_inner).is_empty()
    }
}

impl<P: Provider> Server<P> {
    /// Start following the lattice bucket. Returns after the first sync when the bucket exists
    /// (its changes are queued on `changes`); otherwise keeps looking for it in the background.
    pub(super) async fn follow_view(
        self: &Arc<Self>,
        changes: mpsc::UnboundedSender<ViewChange>,
        stop: CancellationToken,
    ) {
        let (nats, lattice) = (self.ctx.nats().clone(), self.ctx.lattice().to_owned());
        let follow = |bucket: LatticeBucket| {
            view::follow_links(
                self.view.clone(),
                bucket,
                Some(self.reconnects.clone()),
                Some(changes.clone()),
                stop.clone(),
            )
        };
        match LatticeBucket::open(&nats, &lattice, false).await {
            Ok(bucket) => match follow(bucket).await {
                Ok(_task) => return,
                Err(err) => warn!(cause = %err, "cannot sync links from the lattice bucket yet; retrying"),
            },
            Err(err) => warn!(cause = %err, "no lattice bucket yet; links will follow once a host creates it"),
        }
        let (view, reconnects) = (self.view.clone(), self.reconnects.clone());
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(BUCKET_RETRY) => {}
                }
                let Ok(bucket) = LatticeBucket::open(&nats, &lattice, false).await else { continue };
                match view::follow_links(
                    view.clone(),
                    bucket,
                    Some(reconnects.clone()),
                    Some(changes.clone()),
                    stop.clone(),
                )
                .await
                {
                    Ok(_task) => return,
                    Err(err) => warn!(cause = %err, "cannot sync links from the lattice bucket yet; retrying"),
                }
            }
        });
    }

    /// Bring the link under bucket key `key` in line with the view: put it (through the
    /// provider's hook) if the view holds it, remove it if the view holds its delete.
    async fn sync_link(&self, key: &str) -> LinkAck {
        match self.view.resolve(key) {
            // The view knows the link is there, at its revision, but not its config: that comes
            // from a host, asked again when what is held is older.
            Some(bare) => {
                let mut put = self.resolved.at_least(key, bare.revision);
                if put.is_none() && self.fetch_resolved().await {
                    put = self.resolved.at_least(key, bare.revision);
                }
                self.resolved.wait_for(key, put.is_none());
                match put {
                    Some(put) => self.apply_put(put).await,
                    None => {
                        warn!(source = %bare.link.source_id, target = %bare.link.target_id, name = %bare.link.name, "no host has resolved this link's config yet; asking again shortly");
                        self.ack(false, Some("no host has resolved the link's config yet".into()))
                    }
                }
            }
            None => {
                self.resolved.wait_for(key, false);
                if let Some(link_key) = parse_link_key(key) {
                    let revision = self.view.deleted_at(key).unwrap_or(0);
                    self.resolved.forget(key, revision);
                    self.apply_del(&LinkDel { key: link_key, revision }).await;
                }
                self.ack(true, None)
            }
        }
    }

    /// Ask a host for this provider's links, resolved, and keep what it says; whether one
    /// answered.
    pub(super) async fn fetch_resolved(&self) -> bool {
        match self.ctx.client().sync_links(self.view.high_water()).await {
            Ok(answer) => {
                debug!(links = answer.links.len(), revision = answer.revision, "links resolved by a host");
                for put in answer.links {
                    self.resolved.remember(put);
                }
                true
            }
            Err(err) => {
                warn!(cause = %err, "cannot get this provider's links from a host");
                false
            }
        }
    }

    /// Ask a host for every link again and apply what changed: config changes whose
    /// notification did not arrive, links that had no resolution.
    async fn resync_all(&self) {
        if !self.fetch_resolved().await {
            return;
        }
        for (link, _) in self.view.links() {
            if self.involves_me(&link.source_id, &link.target_id)
                && let Ok(key) = state::link_key(&link)
            {
                let _ = self.sync_link(&key).await;
            }
        }
    }

    fn ack(&self, accepted: bool, error: Option<String>) -> LinkAck {
        LinkAck { instance_id: self.ctx.instance_id().to_owned(), accepted, error, pending: false }
    }

    fn involves_me(&self, source: &str, target: &str) -> bool {
        let id = self.ctx.provider_id();
        source == id || target == id
    }

    /// React to a change of the view: links of this provider that it touched are synced.
    pub(super) async fn on_view_change(&self, change: ViewChange) {
        match change {
            ViewChange::Link { key, link, .. } => {
                let mine = match &link {
                    Some(link) => self.involves_me(&link.source_id, &link.target_id),
                    None => parse_link_key(&key).is_some_and(|k| self.involves_me(&k.source_id, &k.target_id)),
                };
                if mine {
                    let _ = self.sync_link(&key).await;
                }
            }
            ViewChange::Config(name) => {
                for link in self.view.links_using_config(&name) {
                    if self.involves_me(&link.source_id, &link.target_id)
                        && let Ok(key) = state::link_key(&link)
                    {
                        debug!(config = %name, source = %link.source_id, target = %link.target_id, "config changed: resyncing link");
                        let _ = self.sync_link(&key).await;
                    }
                }
            }
        }
    }

    async fn apply_put(&self, put: LinkPut) -> LinkAck {
        if !self.involves_me(&put.link.source_id, &put.link.target_id) {
            let id = self.ctx.provider_id();
            return self.ack(false, Some(format!("link does not involve provider {id}")));
        }
        match self.ctx.links().check_put(&put) {
            Applied::Stale => {
                debug!(revision = put.revision, "ignoring stale link put");
                self.ack(true, None)
            }
            Applied::Unchanged => {
                self.ctx.links().refresh(put);
                self.ack(true, None)
            }
            Applied::Changed => {
                let hook = AssertUnwindSafe(self.provider.on_link_put(&self.ctx, &put)).catch_unwind().await;
                let result = hook.unwrap_or_else(|_| Err("link hook panicked".to_owned()));
                let (source, target, name) =
                    (put.link.source_id.clone(), put.link.target_id.clone(), put.link.name.clone());
                match result {
                    Ok(state) => {
                        info!(%source, %target, %name, revision = put.revision, "link set");
                        match self.ctx.links().accept(put, Arc::new(state)) {
                            Ok(replaced) => self.release(replaced).await,
                            // A newer change arrived while the hook ran: this state is not used.
                            Err(unused) => self.release(Some(unused)).await,
                        }
                        self.ack(true, None)
                    }
                    Err(err) => {
                        warn!(%source, %target, %name, cause = %err, "link rejected by provider");
                        let displaced = self.ctx.links().reject(&put);
                        self.release(displaced).await;
                        self.ack(false, Some(err))
                    }
                }
            }
        }
    }

    async fn apply_del(&self, del: &LinkDel) {
        if let Some(old) = self.ctx.links().apply_del(&del.key, del.revision) {
            info!(source = %del.key.source_id, target = %del.key.target_id, name = %del.key.name, revision = del.revision, "link deleted");
            self.release(Some(old)).await;
        }
    }

    /// Hand a state no longer in use back to the provider.
    async fn release(&self, held: Option<Held>) {
        let Some(Held { put, state }) = held else { return };
        // Only states the hook built are held, so they are the provider's type.
        let Ok(state) = state.downcast::<P::Link>() else { return };
        let _ = AssertUnwindSafe(self.provider.on_link_del(&self.ctx, &put, state)).catch_unwind().await;
    }

    /// A host's link put: it carries the config, resolved, so it is applied as it is, unless
    /// the view holds a later delete of the link.
    async fn notified_put(&self, put: LinkPut) -> LinkAck {
        let key = match state::link_key(&put.link) {
            Ok(key) => key,
            Err(err) => return self.ack(false, Some(format!("bad link put: {err}"))),
        };
        if self.view.deleted_at(&key).is_some_and(|deleted| deleted > put.revision) {
            debug!(revision = put.revision, "ignoring a link put the view holds a later delete of");
            return self.ack(true, None);
        }
        self.resolved.remember(put.clone());
        self.resolved.wait_for(&key, false);
        self.apply_put(put).await
    }

    /// A host's link delete, likewise.
    async fn notified_del(&self, del: LinkDel) -> LinkAck {
        if self.view.caught_up_to(del.revision, NOTIFICATION_WAIT).await
            && let Ok(key) = state::link_key_of(&del.key)
        {
            return self.sync_link(&key).await;
        }
        if let Ok(key) = state::link_key_of(&del.key) {
            self.resolved.forget(&key, del.revision);
        }
        self.apply_del(&del).await;
        self.ack(true, None)
    }

    /// Link notifications and view changes, one at a time, in arrival order. Each notification
    /// gets a receipt at once (from a task of its own, so a slow hook delays no receipt), then
    /// its verdict once applied.
    pub(super) async fn link_loop(
        self: Arc<Self>,
        puts: async_nats::Subscriber,
        dels: async_nats::Subscriber,
        mut changes: mpsc::UnboundedReceiver<ViewChange>,
        control: CancellationToken,
    ) {
        let (tx, mut notes) = mpsc::unbounded_channel();
        let receiver = tokio::spawn(self.clone().receive_notifications(puts, dels, tx, control.clone()));
        let mut reconnects = self.reconnects.clone();
        reconnects.mark_seen();
        let mut tick = tokio::time::interval(UNRESOLVED_RETRY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_resync = tokio::time::Instant::now();
        loop {
            tokio::select! {
                () = control.cancelled() => break,
                Some(change) = changes.recv() => self.on_view_change(change).await,
                Some(note) = notes.recv() => self.answer(note).await,
                () = reconnects.next() => {
                    self.resync_all().await;
                    last_resync = tokio::time::Instant::now();
                }
                _ = tick.tick() => {
                    if self.resolved.any_waiting() || last_resync.elapsed() >= LINK_RESYNC {
                        self.resync_all().await;
                        last_resync = tokio::time::Instant::now();
                    }
                }
            }
        }
        let _ = receiver.await;
    }

    async fn receive_notifications(
        self: Arc<Self>,
        mut puts: async_nats::Subscriber,
        mut dels: async_nats::Subscriber,
        notes: mpsc::UnboundedSender<Notification>,
        control: CancellationToken,
    ) {
        loop {
            let (msg, is_put) = tokio::select! {
                () = control.cancelled() => break,
                Some(msg) = puts.next() => (msg, true),
                Some(msg) = dels.next() => (msg, false),
                else => break,
            };
            let channel = if is_put { Channel::LinkPut } else { Channel::LinkDel };
            match self.authenticate(&msg.payload, channel) {
                Err(refusal) => self.reply(msg.reply, *refusal).await,
                Ok((inv, key)) => {
                    let receipt = LinkAck { pending: true, ..self.ack(true, None) };
                    self.reply(msg.reply.clone(), signed_ok(&inv.id, &receipt, &key)).await;
                    let _ = notes.send(Notification { inv, key, reply: msg.reply, is_put });
                }
            }
        }
    }

    /// Apply a verified notification and send the verdict.
    async fn answer(&self, note: Notification) {
        let Notification { inv, key, reply, is_put } = note;
        let ack = if is_put {
            let opened = seal::open(&key, &inv.id, &inv.payload).map_err(|e| e.to_string());
            match opened.and_then(|plain| codec::decode::<LinkPut>(&plain).map_err(|e| e.to_string())) {
                Ok(put) => self.notified_put(put).await,
                Err(err) => self.ack(false, Some(format!("bad link put: {err}"))),
            }
        } else {
            match codec::decode::<LinkDel>(&inv.payload) {
                Ok(del) => self.notified_del(del).await,
                Err(err) => self.ack(false, Some(format!("bad link del: {err}"))),
            }
        };
        self.reply(reply, signed_ok(&inv.id, &ack, &key)).await;
    }
}

/// A verified link notification waiting to be applied.
struct Notification {
    inv: ferry_proto::envelope::Invocation,
    key: ferry_proto::auth::MacKey,
    reply: Option<async_nats::Subject>,
    is_put: bool,
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use ferry_proto::link::Link;

    use super::*;

    fn put(revision: u64, secret: &str) -> LinkPut {
        LinkPut {
            link: Link::new("comp", "kv", "wasi", "keyvalue", vec!["store".into()]),
            source_config: BTreeMap::new(),
            target_config: BTreeMap::from([("password".to_owned(), secret.to_owned())]),
            revision,
        }
    }

    #[test]
    fn a_delete_forgets_the_resolution_it_made_obsolete_and_keeps_a_newer_one() {
        let resolved = Resolved::default();
        let key = state::link_key(&put(0, "").link).expect("key");
        resolved.remember(put(5, "old secret"));
        resolved.forget(&key, 4);
        assert!(resolved.at_least(&key, 5).is_some(), "a delete older than the put must not drop it");
        resolved.forget(&key, 6);
        assert!(resolved.at_least(&key, 0).is_none(), "the deleted link's config must not be kept");
        assert!(resolved.puts.lock().expect("lock").is_empty());

        resolved.remember(put(9, "new secret"));
        resolved.forget(&key, 6);
        assert_eq!(
            resolved.at_least(&key, 9).map(|p| p.target_config["password"].clone()).as_deref(),
            Some("new secret")
        );
    }
}
