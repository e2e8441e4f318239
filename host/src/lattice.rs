//! The host's view of the lattice: links and config as the lattice bucket has them, in the
//! revision-ordered view hosts and providers share ([`ferry_lattice::view`]), kept current
//! by following the bucket (resynced after a lost connection), so nothing depends on having
//! seen a message while down, and a host's own writes never undo a newer change.

use ferry_lattice::{
    BucketChange, LatticeBucket,
    nats::Reconnects,
    view::{self, LatticeView as SharedView},
};
use ferry_proto::{
    link::{Link, LinkPut},
    state,
};
use tokio_util::sync::CancellationToken;

use crate::HostError;

/// Links and configs of one lattice, shared by every component of the host.
#[derive(Clone, Debug)]
pub(crate) struct LatticeView {
    bucket: LatticeBucket,
    view: SharedView,
    reconnects: Reconnects,
}

impl LatticeView {
    /// Open (creating if needed) the bucket; the view fills once [`LatticeView::watch`] runs.
    pub(crate) async fn open(
        nats: &async_nats::Client,
        lattice: &str,
        reconnects: Reconnects,
    ) -> Result<Self, HostError> {
        let bucket = LatticeBucket::open(nats, lattice, true).await?;
        Ok(Self { bucket, view: SharedView::default(), reconnects })
    }

    pub(crate) fn bucket(&self) -> &LatticeBucket {
        &self.bucket
    }

    /// Follow the bucket until `stop`; returns once the current state is loaded.
    pub(crate) async fn watch(&self, stop: CancellationToken) -> Result<tokio::task::JoinHandle<()>, HostError> {
        Ok(view::follow(self.view.clone(), self.bucket.clone(), Some(self.reconnects.clone()), None, stop).await?)
    }

    /// Record this host's own write of `link` at `revision`, so its commands see it before the
    /// watch delivers it; a newer entry already seen wins.
    pub(crate) fn record_link(&self, link: &Link, revision: u64) {
        self.view.apply(revision, &BucketChange::Link(link.clone()));
    }

    /// Record this host's own delete of `link` at `revision`.
    pub(crate) fn forget_link(&self, link: &Link, revision: u64) {
        if let Ok(key) = state::link_key(link) {
            self.view.apply(revision, &BucketChange::LinkDeleted(key));
        }
    }

    /// Record this host's own config write (or delete, with `None`) at `revision`.
    pub(crate) fn record_config(&self, name: &str, values: Option<state::ConfigValues>, revision: u64) {
        let change = match values {
            Some(values) => BucketChange::Config(name.to_owned(), values),
            None => BucketChange::ConfigDeleted(name.to_owned()),
        };
        self.view.apply(revision, &change);
    }

    /// `link` with its configs resolved as the view has them, and the revision of the newest
    /// entry it depends on; `None` when the view no longer holds it.
    pub(crate) fn resolve(&self, link: &Link) -> Option<LinkPut> {
        self.view.resolve(&state::link_key(link).ok()?)
    }

    /// Wait up to `timeout` until the view has reached bucket revision `revision`; whether it
    /// did.
    pub(crate) async fn caught_up_to(&self, revision: u64, timeout: std::time::Duration) -> bool {
        self.view.caught_up_to(revision, timeout).await
    }

    /// The newest bucket revision the view holds.
    pub(crate) fn high_water(&self) -> u64 {
        self.view.high_water()
    }

    /// A link `link` conflicts with (same source, name and interface, another target).
    pub(crate) fn conflict_with(&self, link: &Link) -> Option<Link> {
        self.view.conflict_with(link)
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
        self.view.target_for(source, name, namespace, package, interface)
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
        self.view.has_link(source, target, name, namespace, package, interface)
    }

    /// Every link the view holds.
    pub(crate) fn links(&self) -> Vec<Link> {
        self.view.links().into_iter().map(|(link, _)| link).collect()
    }

    /// Links that reference the config `name`.
    pub(crate) fn links_using_config(&self, name: &str) -> Vec<Link> {
        self.view.links_using_config(name)
    }

    /// The merged values of `names`, in order (later names win).
    pub(crate) fn merged_config(&self, names: &[String]) -> state::ConfigValues {
        self.view.merged_config(names)
    }
}
