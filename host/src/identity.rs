//! Who a host is: its id, lattice, labels (changed by `label.put|del`) and start time, and the
//! small summary `host.ping` and heartbeats send.

use std::{collections::BTreeMap, sync::Mutex, time::Instant};

use ferry_proto::ctl::HostInfo;

/// The host's version, as it reports it.
pub(crate) const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Who a host is.
pub(crate) struct Identity {
    /// The host id: a fresh `N…` public key per start.
    pub(crate) id: String,
    pub(crate) lattice: String,
    labels: Mutex<BTreeMap<String, String>>,
    started: Instant,
    /// Whether it may start providers (it allows a directory of binaries).
    pub(crate) starts_providers: bool,
}

impl Identity {
    pub(crate) fn new(id: String, lattice: String, labels: BTreeMap<String, String>, starts_providers: bool) -> Self {
        Self { id, lattice, labels: Mutex::new(labels), started: Instant::now(), starts_providers }
    }

    /// The labels now.
    pub(crate) fn labels(&self) -> BTreeMap<String, String> {
        self.lock().clone()
    }

    /// Set one label; the labels after.
    pub(crate) fn put_label(&self, key: &str, value: &str) -> BTreeMap<String, String> {
        let mut labels = self.lock();
        labels.insert(key.to_owned(), value.to_owned());
        labels.clone()
    }

    /// Remove one label; the labels after, or `None` if it was not set.
    pub(crate) fn del_label(&self, key: &str) -> Option<BTreeMap<String, String>> {
        let mut labels = self.lock();
        labels.remove(key)?;
        Some(labels.clone())
    }

    /// The summary `host.ping` answers with.
    pub(crate) fn info(&self, components: usize, providers: usize) -> HostInfo {
        HostInfo {
            host_id: self.id.clone(),
            lattice: self.lattice.clone(),
            labels: self.labels(),
            version: VERSION.to_owned(),
            uptime_seconds: self.started.elapsed().as_secs(),
            components: u32::try_from(components).unwrap_or(u32::MAX),
            providers: u32::try_from(providers).unwrap_or(u32::MAX),
            starts_providers: self.starts_providers,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, String>> {
        self.labels.lock().unwrap_or_else(|p| p.into_inner())
    }
}
