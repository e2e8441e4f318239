//! The host's view of the lattice: links and config, rebuilt from the KV bucket at start and
//! kept current by watching it, so nothing depends on having seen a message while down.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
};

use ferry_proto::{link::Link, state};
use ferry_provider_sdk::{BucketChange, LatticeBucket};
use futures::StreamExt as _;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::HostError;

/// Links and configs of one lattice, shared by every component of the host.
#[derive(Clone, Debug)]
pub(crate) struct LatticeView {
    bucket: LatticeBucket,
    inner: Arc<RwLock<Cache>>,
}

#[derive(Debug, Default)]
struct Cache {
    /// Links by bucket key.
    links: HashMap<String, Link>,
    configs: HashMap<String, state::ConfigValues>,
}

impl LatticeView {
    /// Open (creating if needed) the bucket; the cache fills once [`LatticeView::watch`] runs.
    pub(crate) async fn open(nats: &async_nats::Client, lattice: &str) -> Result<Self, HostError> {
        let bucket = LatticeBucket::open(nats, lattice, true).await?;
        Ok(Self { bucket, inner: Arc::default() })
    }

    pub(crate) fn bucket(&self) -> &LatticeBucket {
        &self.bucket
    }

    /// Follow the bucket until `stop`; returns once the current state is loaded.
    pub(crate) async fn watch(&self, stop: CancellationToken) -> Result<tokio::task::JoinHandle<()>, HostError> {
        // Load the current state synchronously first so the host starts with a full view.
        for (link, _) in self.bucket.links().await? {
            self.record_link(link);
        }
        for name in self.bucket.config_names().await? {
            if let Some(values) = self.bucket.config(&name).await? {
                self.record_config(&name, Some(values));
            }
        }
        let mut changes = Box::pin(self.bucket.watch().await?);
        let view = self.clone();
        Ok(tokio::spawn(async move {
            loop {
                let change = tokio::select! {
                    () = stop.cancelled() => break,
                    change = changes.next() => change,
                };
                let Some(change) = change else {
                    warn!("lattice bucket watch ended");
                    break;
                };
                debug!(?change, "lattice bucket change");
                match change {
                    BucketChange::Link(link, _) => view.record_link(link),
                    BucketChange::LinkDeleted(key) => {
                        view.write().links.remove(&key);
                    }
                    BucketChange::Config(name, values) => view.record_config(&name, Some(values)),
                    BucketChange::ConfigDeleted(name) => view.record_config(&name, None),
                }
            }
        }))
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Cache> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Cache> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Remember a link now (the command handler does this so its own host sees the link
    /// before the watch delivers it).
    pub(crate) fn record_link(&self, link: Link) {
        if let Ok(key) = state::link_key(&link) {
            self.write().links.insert(key, link);
        }
    }

    pub(crate) fn forget_link(&self, link: &Link) {
        if let Ok(key) = state::link_key(link) {
            self.write().links.remove(&key);
        }
    }

    pub(crate) fn record_config(&self, name: &str, values: Option<state::ConfigValues>) {
        let mut cache = self.write();
        match values {
            Some(values) => cache.configs.insert(name.to_owned(), values),
            None => cache.configs.remove(name),
        };
    }

    /// The target of `source`'s link named `name` covering `namespace:package/interface`.
    pub(crate) fn target_of(
        &self,
        source: &str,
        name: &str,
        namespace: &str,
        package: &str,
        interface: &str,
    ) -> Option<String> {
        let cache = self.read();
        let mut matches = cache
            .links
            .values()
            .filter(|l| l.source_id == source && l.name == name && l.covers(namespace, package, interface));
        let first = matches.next()?.target_id.clone();
        Some(first)
    }

    /// Whether `source` may call `target` over `namespace:package/interface` with link `name`.
    pub(crate) fn is_linked(
        &self,
        source: &str,
        target: &str,
        name: &str,
        namespace: &str,
        package: &str,
        interface: &str,
    ) -> bool {
        let cache = self.read();
        cache.links.values().any(|l| {
            l.source_id == source && l.target_id == target && l.name == name && l.covers(namespace, package, interface)
        })
    }

    /// Links that reference the config `name`.
    pub(crate) fn links_using_config(&self, name: &str) -> Vec<Link> {
        let cache = self.read();
        cache
            .links
            .values()
            .filter(|l| l.source_config.iter().chain(&l.target_config).any(|c| c == name))
            .cloned()
            .collect()
    }

    /// The merged values of `names`, in order (later names win).
    pub(crate) fn merged_config(&self, names: &[String]) -> state::ConfigValues {
        let cache = self.read();
        let mut merged = state::ConfigValues::new();
        for name in names {
            if let Some(values) = cache.configs.get(name) {
                merged.extend(values.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
        }
        merged
    }
}
