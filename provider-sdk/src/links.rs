//! The links a provider instance holds: a snapshot from the lattice bucket at start, then
//! put/del notifications, ordered by bucket revision so stale news never wins.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
};

use ferry_proto::link::{LinkKey, LinkPut};

/// Links involving this provider, keyed by identity, with the revision each was last seen at.
#[derive(Debug, Clone, Default)]
pub struct LinkStore {
    inner: Arc<RwLock<HashMap<LinkKey, Entry>>>,
}

#[derive(Debug, Clone)]
struct Entry {
    revision: u64,
    link: Option<Arc<LinkPut>>,
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
        let links = self.inner.read().unwrap_or_else(|p| p.into_inner());
        let key = LinkKey {
            source_id: source.to_owned(),
            target_id: target.to_owned(),
            wit_namespace: namespace.to_owned(),
            wit_package: package.to_owned(),
            name: name.to_owned(),
        };
        links.get(&key).and_then(|e| e.link.clone()).filter(|l| l.link.covers(namespace, package, interface))
    }

    /// Every link currently held.
    pub fn all(&self) -> Vec<Arc<LinkPut>> {
        let links = self.inner.read().unwrap_or_else(|p| p.into_inner());
        links.values().filter_map(|e| e.link.clone()).collect()
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
            Some(Entry { link: Some(held), .. })
                if held.link == put.link
                    && held.source_config == put.source_config
                    && held.target_config == put.target_config =>
            {
                Applied::Unchanged
            }
            _ => Applied::Changed,
        }
    }

    /// Store an accepted put (or, with `accepted == false`, remember only its revision).
    pub(crate) fn store_put(&self, put: LinkPut, accepted: bool) {
        let mut links = self.inner.write().unwrap_or_else(|p| p.into_inner());
        let key = put.link.key();
        if links.get(&key).is_some_and(|e| e.revision > put.revision) {
            return;
        }
        let revision = put.revision;
        links.insert(key, Entry { revision, link: accepted.then(|| Arc::new(put)) });
    }

    /// Apply a delete; returns the link that was held, if any.
    pub(crate) fn apply_del(&self, key: &LinkKey, revision: u64) -> Option<Arc<LinkPut>> {
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

    #[test]
    fn newer_revisions_win_and_stale_ones_are_ignored() {
        let store = LinkStore::default();
        assert_eq!(store.check_put(&put(5, "a")), Applied::Changed);
        store.store_put(put(5, "a"), true);
        assert_eq!(store.check_put(&put(5, "a")), Applied::Unchanged);
        assert_eq!(store.check_put(&put(4, "b")), Applied::Stale);
        assert_eq!(store.check_put(&put(6, "b")), Applied::Changed);
        assert!(store.find("comp", "kv", "default", "wasi", "keyvalue", "store").is_some());
        assert!(store.find("comp", "kv", "default", "wasi", "keyvalue", "batch").is_none());
        let key = put(0, "").link.key();
        assert!(store.apply_del(&key, 3).is_none(), "stale delete must not remove a newer link");
        assert!(store.apply_del(&key, 7).is_some());
        assert!(store.is_empty());
        store.store_put(put(6, "late"), true);
        assert!(store.is_empty(), "a put older than the delete must not resurrect the link");
    }
}
