//! One revision-ordered view of the lattice's links and config, the same for hosts and
//! providers.
//!
//! The lattice bucket is the only source of truth; every process keeps a copy of its links and
//! configs by watching it ([`follow`]). Each entry keeps the bucket revision it was written at,
//! deletes included, so a change only ever replaces an older one: a process's own write, a
//! notification and the watch may arrive in any order and the view ends up the same. The watch
//! is started again — from the bucket's current state — when it ends, fails or the connection
//! comes back, so nothing written while a process was away is missed.
//!
//! A resolved link ([`LatticeView::resolve`]) carries the revision of the newest entry it
//! depends on (the link and each config it names), so a config change orders after the link
//! it changes, and two views that reached that revision resolve a link to the same values.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::{Arc, RwLock},
    time::Duration,
};

use ferry_proto::{
    link::{Link, LinkPut},
    state::{self, ConfigValues},
};
use futures::StreamExt as _;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::{BucketChange, LatticeBucket, LatticeError, bucket::BucketEvent, nats::Reconnects};

/// How long the first sync may wait for the watch to deliver the bucket's entries.
const SYNC_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause before watching again after a watch failed, growing to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// An entry and the revision it was last written at; `None` once deleted.
#[derive(Debug, Clone)]
struct Versioned<T> {
    revision: u64,
    value: Option<T>,
}

#[derive(Debug, Default)]
struct Entries {
    /// Links by bucket key.
    links: HashMap<String, Versioned<Link>>,
    /// The bucket keys of the links present, by caller: a capability call finds its route
    /// among its own component's links, not by scanning every link of the lattice.
    by_source: HashMap<String, HashSet<String>>,
    /// Configs by name.
    configs: HashMap<String, Versioned<ConfigValues>>,
}

impl Entries {
    fn index(&mut self, key: &str, link: &Link) {
        self.by_source.entry(link.source_id.clone()).or_default().insert(key.to_owned());
    }

    fn unindex(&mut self, key: &str, link: &Link) {
        if let Some(keys) = self.by_source.get_mut(&link.source_id) {
            keys.remove(key);
            if keys.is_empty() {
                self.by_source.remove(&link.source_id);
            }
        }
    }

    fn in_force(&self, source: &str, name: &str, namespace: &str, package: &str, interface: &str) -> Option<&Link> {
        self.by_source
            .get(source)?
            .iter()
            .filter_map(|key| self.links.get(key))
            .filter_map(|v| v.value.as_ref().map(|l| (l, v.revision)))
            .filter(|(l, _)| l.name == name && l.covers(namespace, package, interface))
            .min_by(|(a, ra), (b, rb)| (ra, &a.target_id).cmp(&(rb, &b.target_id)))
            .map(|(l, _)| l)
    }
}

/// What applying an entry changed in the view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ViewChange {
    /// The link under bucket key `key` was put or deleted; `link` is what it was or is.
    Link {
        /// The bucket key.
        key: String,
        /// The link now (a put) or before (a delete); `None` for a delete of a link never seen.
        link: Option<Link>,
        /// Whether the link exists after the change.
        present: bool,
    },
    /// The named config was put or deleted.
    Config(String),
}

/// The links and configs of one lattice, ordered by bucket revision. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct LatticeView {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    entries: RwLock<Entries>,
    /// The highest revision the watch has delivered: every write up to it is in the view.
    high_water: watch::Sender<u64>,
}

impl Default for Inner {
    fn default() -> Self {
        Self { entries: RwLock::default(), high_water: watch::channel(0).0 }
    }
}

impl LatticeView {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Entries> {
        self.inner.entries.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Entries> {
        self.inner.entries.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Apply `change`, written at `revision`, unless the view holds a newer entry for its key.
    /// Returns what changed, or `None` when the entry was stale or already applied.
    pub fn apply(&self, revision: u64, change: &BucketChange) -> Option<ViewChange> {
        let mut entries = self.write();
        match change {
            BucketChange::Link(link) => {
                let key = state::link_key(link).ok()?;
                if entries.links.get(&key).is_some_and(|held| held.revision >= revision) {
                    return None;
                }
                entries.links.insert(key.clone(), Versioned { revision, value: Some(link.clone()) });
                // The key names the source, so a link it replaces was indexed under the same one.
                entries.index(&key, link);
                Some(ViewChange::Link { key, link: Some(link.clone()), present: true })
            }
            BucketChange::LinkDeleted(key) => {
                let held = entries.links.get(key);
                if held.is_some_and(|held| held.revision >= revision) {
                    return None;
                }
                let old = held.and_then(|held| held.value.clone());
                entries.links.insert(key.clone(), Versioned { revision, value: None });
                if let Some(old) = &old {
                    entries.unindex(key, old);
                }
                Some(ViewChange::Link { key: key.clone(), link: old, present: false })
            }
            BucketChange::Config(name, values) => {
                if entries.configs.get(name).is_some_and(|held| held.revision >= revision) {
                    return None;
                }
                entries.configs.insert(name.clone(), Versioned { revision, value: Some(values.clone()) });
                Some(ViewChange::Config(name.clone()))
            }
            BucketChange::ConfigDeleted(name) => {
                if entries.configs.get(name).is_some_and(|held| held.revision >= revision) {
                    return None;
                }
                entries.configs.insert(name.clone(), Versioned { revision, value: None });
                Some(ViewChange::Config(name.clone()))
            }
        }
    }

    /// Note that the watch has delivered every write up to `revision`.
    fn advance(&self, revision: u64) {
        self.inner.high_water.send_if_modified(|high| {
            let moved = revision > *high;
            *high = (*high).max(revision);
            moved
        });
    }

    /// The highest revision the view is known to be complete up to.
    pub fn high_water(&self) -> u64 {
        *self.inner.high_water.borrow()
    }

    /// Wait until the view is complete up to `revision`, at most `timeout`; whether it is.
    pub async fn caught_up_to(&self, revision: u64, timeout: Duration) -> bool {
        let mut rx = self.inner.high_water.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|high| *high >= revision)).await.is_ok_and(|r| r.is_ok())
    }

    /// Mark every key not in `seen` that is no older than `mark` as deleted at `mark`: entries
    /// removed from the bucket without a delete marker (purged, expired).
    fn prune(&self, seen: &HashSet<String>, mark: u64) -> Vec<ViewChange> {
        let mut entries = self.write();
        let mut changes = Vec::new();
        for (key, held) in &mut entries.links {
            if held.value.is_some() && held.revision <= mark && !seen.contains(key) {
                changes.push(ViewChange::Link { key: key.clone(), link: held.value.take(), present: false });
                held.revision = mark;
            }
        }
        for change in &changes {
            if let ViewChange::Link { key, link: Some(link), .. } = change {
                entries.unindex(key, link);
            }
        }
        for (name, held) in &mut entries.configs {
            let key = format!("{}{name}", state::CONFIG_PREFIX);
            if held.value.is_some() && held.revision <= mark && !seen.contains(&key) {
                held.value = None;
                held.revision = mark;
                changes.push(ViewChange::Config(name.clone()));
            }
        }
        changes
    }

    /// Every link with the revision it was written at.
    pub fn links(&self) -> Vec<(Link, u64)> {
        let entries = self.read();
        let mut links: Vec<(Link, u64)> =
            entries.links.values().filter_map(|v| v.value.clone().map(|l| (l, v.revision))).collect();
        links.sort_by_key(|(_, revision)| *revision);
        links
    }

    /// The link under bucket key `key`, resolved: its configs merged (later names win) and the
    /// revision of the newest entry it depends on. `None` when there is no such link.
    pub fn resolve(&self, key: &str) -> Option<LinkPut> {
        let entries = self.read();
        let held = entries.links.get(key)?;
        let link = held.value.clone()?;
        let mut revision = held.revision;
        let mut merge = |names: &[String]| {
            let mut merged = BTreeMap::new();
            for name in names {
                if let Some(config) = entries.configs.get(name) {
                    revision = revision.max(config.revision);
                    if let Some(values) = &config.value {
                        merged.extend(values.iter().map(|(k, v)| (k.clone(), v.clone())));
                    }
                }
            }
            merged
        };
        let source_config = merge(&link.source_config);
        let target_config = merge(&link.target_config);
        Some(LinkPut { link, source_config, target_config, revision })
    }

    /// The revision at which the link under `key` was deleted, if the view holds its delete.
    pub fn deleted_at(&self, key: &str) -> Option<u64> {
        self.read().links.get(key).filter(|v| v.value.is_none()).map(|v| v.revision)
    }

    /// The link in force for `source`'s calls to `namespace:package/interface` under link name
    /// `name`: of links that conflict (another target for the same name and interface, which
    /// only a race between two writers can store), the oldest, so every process picks the same.
    pub fn link_for(&self, source: &str, name: &str, namespace: &str, package: &str, interface: &str) -> Option<Link> {
        self.read().in_force(source, name, namespace, package, interface).cloned()
    }

    /// The target of [`Self::link_for`]'s link: what a capability call needs, without a copy
    /// of the whole link.
    pub fn target_for(
        &self,
        source: &str,
        name: &str,
        namespace: &str,
        package: &str,
        interface: &str,
    ) -> Option<String> {
        self.read().in_force(source, name, namespace, package, interface).map(|l| l.target_id.clone())
    }

    /// Whether a link `source` → `target` named `name` covers `namespace:package/interface`.
    pub fn has_link(
        &self,
        source: &str,
        target: &str,
        name: &str,
        namespace: &str,
        package: &str,
        interface: &str,
    ) -> bool {
        // One allocation, no validation: stored keys have exactly six non-empty segments, so a
        // key built from ids holding a dot or empty matches none of them.
        let key = format!("{}{source}.{target}.{namespace}.{package}.{name}", state::LINK_PREFIX);
        self.read()
            .links
            .get(&key)
            .and_then(|v| v.value.as_ref())
            .is_some_and(|l| l.covers(namespace, package, interface))
    }

    /// A link that `link` would conflict with: same source, name and package, another target,
    /// and an interface in common that a caller resolves by name alone
    /// ([`Link::routed_interfaces`]).
    pub fn conflict_with(&self, link: &Link) -> Option<Link> {
        let entries = self.read();
        entries
            .links
            .values()
            .filter_map(|v| v.value.as_ref())
            .find(|l| {
                l.source_id == link.source_id
                    && l.name == link.name
                    && l.wit_namespace == link.wit_namespace
                    && l.wit_package == link.wit_package
                    && l.target_id != link.target_id
                    && l.routed_interfaces().any(|i| link.routed_interfaces().any(|j| i == j))
            })
            .cloned()
    }

    /// Links that name the config `name`.
    pub fn links_using_config(&self, name: &str) -> Vec<Link> {
        let entries = self.read();
        entries
            .links
            .values()
            .filter_map(|v| v.value.as_ref())
            .filter(|l| l.source_config.iter().chain(&l.target_config).any(|c| c == name))
            .cloned()
            .collect()
    }

    /// The merged values of the configs `names`, in order (later names win).
    pub fn merged_config(&self, names: &[String]) -> ConfigValues {
        let entries = self.read();
        let mut merged = ConfigValues::new();
        for values in names.iter().filter_map(|n| entries.configs.get(n)).filter_map(|v| v.value.as_ref()) {
            merged.extend(values.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        merged
    }
}

/// Keep `view` current with `bucket` until `stop`: returns once the view holds everything the
/// bucket held at the call, then follows the bucket on a task of its own, watching again after
/// the watch ends or fails and whenever `reconnects` reports a new connection. Every change that
/// altered the view is sent to `changes`, when given.
///
/// # Errors
/// [`LatticeError::Nats`] when the first sync fails.
pub async fn follow(
    view: LatticeView,
    bucket: LatticeBucket,
    reconnects: Option<Reconnects>,
    changes: Option<mpsc::UnboundedSender<ViewChange>>,
    stop: CancellationToken,
) -> Result<tokio::task::JoinHandle<()>, LatticeError> {
    follow_scoped(Follower { view, bucket, changes, links_only: false }, reconnects, stop).await
}

/// [`follow`] for links alone: the view never holds config, and the watch reads only `link.`
/// keys ([`LatticeBucket::watch_prefix`]). What providers follow: config reaches them sealed,
/// from hosts, and their NATS users may not read it from the bucket.
///
/// # Errors
/// As [`follow`].
pub async fn follow_links(
    view: LatticeView,
    bucket: LatticeBucket,
    reconnects: Option<Reconnects>,
    changes: Option<mpsc::UnboundedSender<ViewChange>>,
    stop: CancellationToken,
) -> Result<tokio::task::JoinHandle<()>, LatticeError> {
    follow_scoped(Follower { view, bucket, changes, links_only: true }, reconnects, stop).await
}

async fn follow_scoped(
    follower: Follower,
    mut reconnects: Option<Reconnects>,
    stop: CancellationToken,
) -> Result<tokio::task::JoinHandle<()>, LatticeError> {
    if let Some(reconnects) = &mut reconnects {
        reconnects.mark_seen();
    }
    let mut watch = follower.sync().await?;
    Ok(tokio::spawn(async move {
        let mut backoff = MIN_BACKOFF;
        loop {
            let reconnected = async {
                match &mut reconnects {
                    Some(reconnects) => reconnects.next().await,
                    None => std::future::pending().await,
                }
            };
            let resync = tokio::select! {
                () = stop.cancelled() => return,
                () = reconnected => {
                    info!("connection back: resyncing links and config from the lattice bucket");
                    true
                }
                event = watch.next() => match event {
                    Some(Ok(event)) => {
                        follower.take(&event);
                        backoff = MIN_BACKOFF;
                        false
                    }
                    Some(Err(err)) => {
                        warn!(cause = %err, "lattice bucket watch failed: resyncing");
                        true
                    }
                    None => {
                        warn!("lattice bucket watch ended: resyncing");
                        true
                    }
                },
            };
            if !resync {
                continue;
            }
            loop {
                match follower.sync().await {
                    Ok(fresh) => {
                        watch = fresh;
                        break;
                    }
                    Err(err) => {
                        warn!(cause = %err, retry_in = ?backoff, "cannot resync from the lattice bucket");
                        tokio::select! {
                            () = stop.cancelled() => return,
                            () = tokio::time::sleep(backoff) => {}
                        }
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                }
            }
        }
    }))
}

type Watch = std::pin::Pin<Box<dyn futures::Stream<Item = Result<BucketEvent, LatticeError>> + Send>>;

struct Follower {
    view: LatticeView,
    bucket: LatticeBucket,
    changes: Option<mpsc::UnboundedSender<ViewChange>>,
    /// Watch `link.` keys only.
    links_only: bool,
}

impl Follower {
    /// Watch the bucket from its current state: every key's current entry is applied (and keys
    /// gone without a trace are pruned) before this returns the live watch.
    async fn sync(&self) -> Result<Watch, LatticeError> {
        let mark = self.bucket.mark().await?;
        let (mut watch, expected): (Watch, u64) = if self.links_only {
            let (pending, watch) = self.bucket.watch_prefix(state::LINK_PREFIX).await?;
            (Box::pin(watch), pending)
        } else {
            (Box::pin(self.bucket.watch().await?), mark.entries)
        };
        let mut seen = HashSet::new();
        if expected > 0 {
            loop {
                let event = tokio::time::timeout(SYNC_TIMEOUT, watch.next())
                    .await
                    .map_err(|_| {
                        LatticeError::Nats(format!(
                            "the lattice bucket did not deliver its entries within {SYNC_TIMEOUT:?}"
                        ))
                    })?
                    .ok_or_else(|| LatticeError::Nats("the lattice bucket watch ended during a sync".into()))??;
                seen.insert(event.key.clone());
                let done = event.caught_up || event.revision >= mark.last_revision;
                self.take(&event);
                if done {
                    break;
                }
            }
        }
        for change in self.view.prune(&seen, mark.last_revision) {
            self.send(change);
        }
        self.view.advance(mark.last_revision);
        debug!(revision = mark.last_revision, keys = seen.len(), "lattice view synced");
        Ok(watch)
    }

    fn take(&self, event: &BucketEvent) {
        if let Some(change) = &event.change
            && let Some(changed) = self.view.apply(event.revision, change)
        {
            self.send(changed);
        }
        self.view.advance(event.revision);
    }

    fn send(&self, change: ViewChange) {
        if let Some(changes) = &self.changes {
            let _ = changes.send(change);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(target: &str) -> Link {
        let mut link = Link::new("comp", target, "wasi", "keyvalue", vec!["store".into()]);
        link.target_config = vec!["cfg".into()];
        link
    }

    #[test]
    fn an_own_write_recorded_after_a_newer_delete_does_not_bring_the_link_back() {
        let view = LatticeView::default();
        let key = state::link_key(&link("kv")).unwrap();
        assert!(view.apply(10, &BucketChange::Link(link("kv"))).is_some());
        // The watch delivers another host's delete (11) before this host records its own put (10).
        assert!(view.apply(11, &BucketChange::LinkDeleted(key.clone())).is_some());
        assert!(view.apply(10, &BucketChange::Link(link("kv"))).is_none());
        assert!(view.resolve(&key).is_none());
        assert_eq!(view.deleted_at(&key), Some(11));
        assert!(!view.has_link("comp", "kv", "default", "wasi", "keyvalue", "store"));
        // A later put wins over the delete.
        assert!(view.apply(12, &BucketChange::Link(link("kv"))).is_some());
        assert_eq!(view.resolve(&key).unwrap().revision, 12);
        assert!(view.has_link("comp", "kv", "default", "wasi", "keyvalue", "store"));
        // Ids holding the separator cannot alias another link's key.
        assert!(!view.has_link("comp.kv", "wasi", "default", "keyvalue", "store", "store"));
        assert!(!view.has_link("comp", "kv", "default", "wasi", "keyvalue", "batch"));
    }

    #[test]
    fn a_resolved_link_orders_after_every_config_it_depends_on() {
        let view = LatticeView::default();
        let key = state::link_key(&link("kv")).unwrap();
        view.apply(5, &BucketChange::Link(link("kv")));
        assert_eq!(view.resolve(&key).unwrap().revision, 5);
        view.apply(9, &BucketChange::Config("cfg".into(), ConfigValues::from([("url".into(), "a".into())])));
        let put = view.resolve(&key).unwrap();
        assert_eq!((put.revision, put.target_config.get("url").map(String::as_str)), (9, Some("a")));
        view.apply(14, &BucketChange::ConfigDeleted("cfg".into()));
        let put = view.resolve(&key).unwrap();
        assert_eq!((put.revision, put.target_config.len()), (14, 0), "a config delete is a newer resolution");
        assert_eq!(view.links_using_config("cfg").len(), 1);
    }

    #[test]
    fn of_conflicting_links_the_oldest_is_in_force_whatever_the_order_they_arrive_in() {
        for order in [[("a", 3), ("b", 4)], [("b", 4), ("a", 3)]] {
            let view = LatticeView::default();
            for (target, revision) in order {
                view.apply(revision, &BucketChange::Link(link(target)));
            }
            let chosen = view.link_for("comp", "default", "wasi", "keyvalue", "store").unwrap();
            assert_eq!(chosen.target_id, "a");
            assert!(view.conflict_with(&link("c")).is_some());
            assert!(view.conflict_with(&link("a")).is_some_and(|l| l.target_id == "b"));
        }
    }

    #[test]
    fn a_route_follows_puts_deletes_and_prunes_of_its_callers_links() {
        let view = LatticeView::default();
        let route =
            |view: &LatticeView| view.link_for("comp", "default", "wasi", "keyvalue", "store").map(|l| l.target_id);
        view.apply(3, &BucketChange::Link(link("a")));
        view.apply(4, &BucketChange::Link(link("b")));
        let mut other = link("a");
        other.source_id = "other".into();
        view.apply(5, &BucketChange::Link(other));
        assert_eq!(route(&view).as_deref(), Some("a"));
        assert!(view.link_for("comp", "default", "wasi", "keyvalue", "batch").is_none());
        assert!(view.link_for("comp", "cache", "wasi", "keyvalue", "store").is_none());
        view.apply(6, &BucketChange::LinkDeleted(state::link_key(&link("a")).unwrap()));
        assert_eq!(route(&view).as_deref(), Some("b"), "the delete of the link in force hands over to the other");
        view.prune(&HashSet::new(), 7);
        assert_eq!(route(&view), None);
        assert!(view.link_for("other", "default", "wasi", "keyvalue", "store").is_none());
        view.apply(8, &BucketChange::Link(link("b")));
        assert_eq!(route(&view).as_deref(), Some("b"));
    }

    #[test]
    fn entries_gone_from_the_bucket_are_pruned_at_the_mark() {
        let view = LatticeView::default();
        let key = state::link_key(&link("kv")).unwrap();
        view.apply(3, &BucketChange::Link(link("kv")));
        view.apply(4, &BucketChange::Config("cfg".into(), ConfigValues::new()));
        let changes = view.prune(&HashSet::new(), 8);
        assert_eq!(changes.len(), 2);
        assert!(view.resolve(&key).is_none());
        // Something newer than the mark is not pruned.
        view.apply(9, &BucketChange::Link(link("kv")));
        assert!(view.prune(&HashSet::new(), 8).is_empty());
    }
}
