//! The links a provider instance holds, each with the state the provider's link hook built for
//! it: a snapshot from the lattice bucket at start, then put/del notifications, ordered by
//! bucket revision so stale news never wins.

use std::{
    any::Any,
    collections::HashMap,
    sync::{Arc, RwLock},
};

use ferry_proto::link::{LinkKey, LinkPut};

/// What a link hook built for one link, held for the provider (its `Provider::Link`).
pub(crate) type State = Arc<dyn Any + Send + Sync>;

/// Links involving this provider, keyed by identity, with the revision each was last seen at
/// and the provider's state for each accepted one.
#[derive(Clone, Default)]
pub struct LinkStore {
    inner: Arc<RwLock<HashMap<LinkKey, Entry>>>,
}

impl std::fmt::Debug for LinkStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkStore").field("links", &self.len()).finish()
    }
}

#[derive(Clone)]
struct Entry {
    revision: u64,
    link: Option<Held>,
}

/// An accepted link and its state.
#[derive(Clone)]
pub(crate) struct Held {
    pub(crate) put: Arc<LinkPut>,
    pub(crate) state: State,
}

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Held").field("put", &self.put).finish_non_exhaustive()
    }
}

/// What applying a notification changed.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Applied {
    /// A newer revision is already known; nothing changed.
    Stale,
    /// The same link with the same config is already held; only the revision moved.
    Unchanged,
    /// The link is new or changed.
    Changed,
}

impl LinkStore {
    /// The link `origin` → `target` named `name` that covers `namespace:package/interface`.
    pub fn find(
        &self,
        source: &str,
        target: &str,
        name: &str,
        namespace: &str,
        package: &str,
        interface: &str,
    ) -> Option<Arc<LinkPut>> {
        self.find_held(source, target, name, namespace, package, interface).map(|held| held.put)
    }

    /// [`LinkStore::find`], with the link's state.
    pub(crate) fn find_held(
        &self,
        source: &str,
        target: &str,
        name: &str,
        namespace: &str,
        package: &str,
        interface: &str,
    ) -> Option<Held> {
        let links = self.inner.read().unwrap_or_else(|p| p.into_inner());
        let key = LinkKey {
            source_id: source.to_owned(),
            target_id: target.to_owned(),
            wit_namespace: namespace.to_owned(),
            wit_package: package.to_owned(),
            name: name.to_owned(),
        };
        links.get(&key).and_then(|e| e.link.clone()).filter(|l| l.put.link.covers(namespace, package, interface))
    }

    /// Every link currently held.
    pub fn all(&self) -> Vec<Arc<LinkPut>> {
        let links = self.inner.read().unwrap_or_else(|p| p.into_inner());
        links.values().filter_map(|e| e.link.as_ref().map(|h| h.put.clone())).collect()
    }

    /// Every link currently held with the state the provider's link hook built for it (its
    /// `Provider::Link`): for health checks and shutdown across links.
    pub fn states<L: Send + Sync + 'static>(&self) -> Vec<(Arc<LinkPut>, Arc<L>)> {
        let links = self.inner.read().unwrap_or_else(|p| p.into_inner());
        links
            .values()
            .filter_map(|e| e.link.as_ref())
            .filter_map(|h| h.state.clone().downcast::<L>().ok().map(|state| (h.put.clone(), state)))
            .collect()
    }

    /// How many links are held.
    pub fn len(&self) -> usize {
        let links = self.inner.read().unwrap_or_else(|p| p.into_inner());
        links.values().filter(|e| e.link.is_some()).count()
    }

    /// Whether no link is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Compare a put with what is held, without storing it.
    pub(crate) fn check_put(&self, put: &LinkPut) -> Applied {
        let links = self.inner.read().unwrap_or_else(|p| p.into_inner());
        match links.get(&put.link.key()) {
            Some(e) if e.revision > put.revision => Applied::Stale,
            Some(Entry { link: Some(Held { put: held, .. }), .. })
                if held.link == put.link
                    && held.source_config == put.source_config
                    && held.target_config == put.target_config =>
            {
                Applied::Unchanged
            }
            _ => Applied::Changed,
        }
    }

    /// Store an accepted put with its state; returns what it replaced (to be released), or
    /// gives `state` back when a newer revision arrived meanwhile.
    pub(crate) fn accept(&self, put: LinkPut, state: State) -> Result<Option<Held>, Held> {
        let mut links = self.inner.write().unwrap_or_else(|p| p.into_inner());
        let key = put.link.key();
        let held = Held { put: Arc::new(put), state };
        if links.get(&key).is_some_and(|e| e.revision > held.put.revision) {
            return Err(held);
        }
        let entry = Entry { revision: held.put.revision, link: Some(held) };
        Ok(links.insert(key, entry).and_then(|old| old.link))
    }

    /// A put identical to the held link: only its revision moves, the state stays.
    pub(crate) fn refresh(&self, put: LinkPut) {
        let mut links = self.inner.write().unwrap_or_else(|p| p.into_inner());
        if let Some(Entry { revision, link: Some(held) }) = links.get_mut(&put.link.key())
            && *revision <= put.revision
        {
            *revision = put.revision;
            held.put = Arc::new(put);
        }
    }

    /// Remember a rejected put's revision; returns the link it displaced (to be released).
    pub(crate) fn reject(&self, put: &LinkPut) -> Option<Held> {
        let mut links = self.inner.write().unwrap_or_else(|p| p.into_inner());
        let key = put.link.key();
        if links.get(&key).is_some_and(|e| e.revision > put.revision) {
            return None;
        }
        links.insert(key, Entry { revision: put.revision, link: None }).and_then(|old| old.link)
    }

    /// Apply a delete; returns the link that was held, if any.
    pub(crate) fn apply_del(&self, key: &LinkKey, revision: u64) -> Option<Held> {
        let mut links = self.inner.write().unwrap_or_else(|p| p.into_inner());
        match links.get_mut(key) {
            Some(e) if e.revision > revision => None,
            Some(e) => {
                e.revision = revision;
                e.link.take()
            }
            None => {
                links.insert(key.clone(), Entry { revision, link: None });
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use ferry_proto::link::Link;

    use super::*;

    fn put(revision: u64, url: &str) -> LinkPut {
        LinkPut {
            link: Link::new("comp", "kv", "wasi", "keyvalue", vec!["store".into()]),
            source_config: BTreeMap::new(),
            target_config: BTreeMap::from([("url".to_owned(), url.to_owned())]),
            revision,
        }
    }

    fn state(n: u32) -> State {
        Arc::new(n)
    }

    #[test]
    fn newer_revisions_win_and_stale_ones_are_ignored() {
        let store = LinkStore::default();
        assert_eq!(store.check_put(&put(5, "a")), Applied::Changed);
        assert!(store.accept(put(5, "a"), state(1)).is_ok_and(|old| old.is_none()));
        assert_eq!(store.check_put(&put(5, "a")), Applied::Unchanged);
        assert_eq!(store.check_put(&put(4, "b")), Applied::Stale);
        assert_eq!(store.check_put(&put(6, "b")), Applied::Changed);
        assert!(store.find("comp", "kv", "default", "wasi", "keyvalue", "store").is_some());
        assert!(store.find("comp", "kv", "default", "wasi", "keyvalue", "batch").is_none());
        let key = put(0, "").link.key();
        assert!(store.apply_del(&key, 3).is_none(), "stale delete must not remove a newer link");
        assert!(store.apply_del(&key, 7).is_some());
        assert!(store.is_empty());
        assert!(
            store.accept(put(6, "late"), state(2)).is_err(),
            "a put older than the delete must not resurrect the link"
        );
        assert!(store.is_empty());
    }

    #[test]
    fn each_link_keeps_its_state_until_replaced_or_rejected() {
        let store = LinkStore::default();
        assert!(store.accept(put(1, "a"), state(1)).is_ok());
        store.refresh(put(2, "a"));
        assert_eq!(
            store.states::<u32>().iter().map(|(_, s)| **s).collect::<Vec<_>>(),
            [1],
            "a refresh keeps the state"
        );
        let replaced = store.accept(put(3, "b"), state(2)).expect("newer").expect("replaced the first");
        assert_eq!(replaced.state.downcast::<u32>().ok().map(|s| *s), Some(1));
        assert_eq!(store.states::<u32>()[0].1.as_ref(), &2);
        assert!(store.states::<String>().is_empty(), "states of another type are not there");
        let displaced = store.reject(&put(4, "c")).expect("displaced the second");
        assert_eq!(displaced.state.downcast::<u32>().ok().map(|s| *s), Some(2));
        assert!(store.find("comp", "kv", "default", "wasi", "keyvalue", "store").is_none());
    }
}
