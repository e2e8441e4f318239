//! The lattice's reconciler: every host runs one, and the one holding the lease in the lattice
//! bucket acts. Each pass reads the signed deployments, asks every host what it runs, and sends
//! the control commands that close the gap — configs, links, providers, components — signed
//! with the lattice operator key, as an operator's would be. What it creates is recorded for
//! its application before it is created, so undeploy removes exactly that (teardown.rs).

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use ferry_lattice::CtlClient;
use ferry_proto::{
    app::{self as records, AppOwned, LEASE_KEY, Lease},
    ctl::{
        AppState, AppStatus, Command, ComponentScale, ComponentStart, ComponentStop, ComponentUpdate, ConfigPutCommand,
        HostInventory, LinkPutCommand, LinkStatus, PartStatus, ProviderStart, ProviderStop,
    },
    event::{AppStatusChanged, Event},
    link::Link,
    state,
};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{
    AppStore, Deployed,
    manifest::{Part, PartKind},
    plan::{self, HostState},
};

/// How long a lease lasts without renewal: how long a lattice goes without a reconciler when
/// the holder dies.
const LEASE_TTL_MS: u64 = 3_000;
/// How often the lease is renewed (or sought) and a pass runs.
const TICK: Duration = Duration::from_millis(1_000);
/// How long a pass waits for hosts' inventories: a host that has not answered by then counts
/// as gone for this pass.
const INVENTORY_WAIT: Duration = Duration::from_millis(750);

/// A command to one host, under way.
type Action<'a> = std::pin::Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;

/// One host's reconciler.
pub(crate) struct Reconciler {
    pub(crate) host_id: String,
    pub(crate) store: AppStore,
    pub(crate) ctl: CtlClient,
    pub(crate) events: crate::events::Events,
}

impl Reconciler {
    /// Seek the lease and reconcile while holding it, until `stop`; then give the lease up so
    /// another host takes over at once.
    pub(crate) fn spawn(self, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
        let this = Arc::new(self);
        let leader = Arc::new(AtomicBool::new(false));
        let deployed = Arc::new(AtomicBool::new(false));
        let follow = tokio::spawn(this.clone().follow_deployments(deployed.clone(), stop.clone()));
        let lease = tokio::spawn(this.clone().keep_lease(leader.clone(), deployed, stop.clone()));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(TICK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = stop.cancelled() => break,
                    _ = tick.tick() => {}
                }
                if leader.load(Ordering::Acquire)
                    && let Err(err) = this.pass().await
                {
                    warn!(cause = %err, "reconciler pass failed; retrying");
                }
            }
            let _ = lease.await;
            let _ = follow.await;
        })
    }

    /// Keep `deployed` telling whether the lattice has any application deployment, from a
    /// watch of the deployment keys: an idle lattice costs no lease writes and no passes.
    async fn follow_deployments(self: Arc<Self>, deployed: Arc<AtomicBool>, stop: CancellationToken) {
        let filter = format!("{}*.deployment", records::APP_PREFIX);
        loop {
            let mut names = BTreeSet::new();
            match self.store.bucket().watch_keys(&filter).await {
                Ok(watch) => {
                    let mut watch = std::pin::pin!(watch);
                    loop {
                        let item = tokio::select! {
                            () = stop.cancelled() => return,
                            item = futures::StreamExt::next(&mut watch) => item,
                        };
                        match item {
                            Some(Ok((key, true))) => {
                                names.insert(key);
                            }
                            Some(Ok((key, false))) => {
                                names.remove(&key);
                            }
                            Some(Err(err)) => {
                                debug!(cause = %err, "the deployment watch failed; starting it again");
                                break;
                            }
                            None => break,
                        }
                        deployed.store(!names.is_empty(), Ordering::Release);
                    }
                }
                Err(err) => debug!(cause = %err, "cannot watch application deployments yet"),
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(TICK) => {}
            }
        }
    }

    async fn keep_lease(self: Arc<Self>, leader: Arc<AtomicBool>, deployed: Arc<AtomicBool>, stop: CancellationToken) {
        let mut tick = tokio::time::interval(Duration::from_millis(LEASE_TTL_MS / 3));
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                _ = tick.tick() => {}
            }
            // With nothing deployed nobody needs to reconcile: let the lease lapse.
            let held = deployed.load(Ordering::Acquire) && self.hold_lease().await;
            if !held && leader.load(Ordering::Acquire) {
                self.release_lease().await;
            }
            if held != leader.swap(held, Ordering::AcqRel) {
                if held {
                    info!("this host now reconciles the lattice's applications");
                } else {
                    info!("this host no longer reconciles the lattice's applications");
                }
            }
        }
        if leader.load(Ordering::Acquire) {
            self.release_lease().await;
        }
    }

    /// Take or renew the lease; whether this host holds it now.
    async fn hold_lease(&self) -> bool {
        let bucket = self.store.bucket();
        let now = ferry_proto::time::now_ms();
        let current = match bucket.get_json::<Lease>(LEASE_KEY).await {
            Ok(current) => current,
            Err(err) => {
                debug!(cause = %err, "cannot read the reconciler lease");
                return false;
            }
        };
        let revision = match current {
            Some((lease, revision)) if lease.holder == self.host_id || lease.until_ms < now => Some(revision),
            Some(_) => return false,
            None => None,
        };
        let lease = Lease { holder: self.host_id.clone(), until_ms: now + LEASE_TTL_MS };
        matches!(bucket.swap_json(LEASE_KEY, &lease, revision).await, Ok(Some(_)))
    }

    async fn release_lease(&self) {
        let bucket = self.store.bucket();
        if let Ok(Some((lease, revision))) = bucket.get_json::<Lease>(LEASE_KEY).await
            && lease.holder == self.host_id
        {
            let _ = bucket.swap_json(LEASE_KEY, &Lease { holder: lease.holder, until_ms: 0 }, Some(revision)).await;
        }
    }

    /// One pass over every application.
    async fn pass(&self) -> Result<(), String> {
        let deployments = self.store.deployments().await?;
        if deployments.is_empty() {
            return Ok(());
        }
        let hosts = self.inventory().await?;
        if hosts.is_empty() {
            // Not even this host answered: NATS is away. Nothing can be placed, and removing
            // now would forget what silent hosts still run.
            return Err("no host answered the inventory; waiting".into());
        }
        for deployed in &deployments {
            let name = &deployed.record.name;
            let result = if deployed.record.deployed {
                self.apply(deployed, &hosts).await
            } else {
                self.remove(deployed, &hosts).await
            };
            if let Err(err) = result {
                warn!(app = %name, cause = %err, "reconciling an application failed");
            }
        }
        Ok(())
    }

    /// What every host that answers runs now.
    async fn inventory(&self) -> Result<Vec<HostState>, String> {
        let replies = self.ctl.gather(&HostInventory::default(), INVENTORY_WAIT).await.map_err(|e| e.to_string())?;
        Ok(replies
            .into_iter()
            .filter_map(|r| r.data)
            .map(|inv| HostState {
                id: inv.host.host_id,
                labels: inv.host.labels,
                components: inv.components.iter().map(|c| (c.component_id.clone(), c.max_instances)).collect(),
                providers: inv.providers.iter().map(|p| p.provider_id.clone()).collect(),
                provider_configs: inv
                    .providers
                    .iter()
                    .map(|p| (p.provider_id.clone(), p.config_digest.clone()))
                    .collect(),
                runs_providers: inv.host.starts_providers,
                digests: inv.components.into_iter().map(|c| (c.component_id, c.digest)).collect(),
            })
            .collect())
    }

    /// Bring one deployed application to what its manifest says, and report.
    async fn apply(&self, deployed: &Deployed, hosts: &[HostState]) -> Result<(), String> {
        let app = &deployed.app;
        let (mut owned, _) = self.store.owned(&app.name).await?;
        let mut problems: Vec<String> = Vec::new();

        // Configs the manifest gives values for.
        for (name, values) in &app.configs {
            let current = self.store.bucket().config(name).await.map_err(|e| e.to_string())?;
            if current.as_ref() == Some(values) {
                continue;
            }
            if current.is_none() && owned.configs.insert(name.clone()) {
                self.save_owned(&app.name, &owned).await?;
            }
            let cmd = ConfigPutCommand { request_id: request_id(deployed), name: name.clone(), values: values.clone() };
            if let Err(err) = self.send(&cmd, None).await {
                problems.push(format!("config {name}: {err}"));
            }
        }

        // Links.
        let stored: BTreeMap<String, Link> = self
            .store
            .bucket()
            .links()
            .await
            .map_err(|e| e.to_string())?
            .into_iter()
            .filter_map(|(link, _)| state::link_key(&link).ok().map(|key| (key, link)))
            .collect();
        let mut link_status = Vec::new();
        for link in &app.links {
            let key = state::link_key(link).map_err(|e| e.to_string())?;
            let mut status = LinkStatus {
                source_id: link.source_id.clone(),
                target_id: link.target_id.clone(),
                package: format!("{}:{}", link.wit_namespace, link.wit_package),
                name: link.name.clone(),
                ready: true,
                message: String::new(),
            };
            if stored.get(&key) != Some(link) {
                if !stored.contains_key(&key) && owned.links.insert(key.clone()) {
                    self.save_owned(&app.name, &owned).await?;
                }
                let cmd = LinkPutCommand { request_id: request_id(deployed), link: link.clone() };
                if let Err(err) = self.send(&cmd, None).await {
                    status.ready = false;
                    status.message = err.clone();
                    problems.push(format!("link {key}: {err}"));
                }
            }
            link_status.push(status);
        }

        // Providers, then components.
        let mut parts = Vec::new();
        // What this pass places counts towards each host's load for the parts after it.
        let mut hosts = hosts.to_vec();
        for part in &app.parts {
            let status = self.place(deployed, part, &hosts, &mut owned).await?;
            for (host_id, n) in &status.running {
                if let Some(host) = hosts.iter_mut().find(|h| &h.id == host_id) {
                    if status.kind == "provider" {
                        host.providers.insert(part.id.clone());
                    } else {
                        host.components.insert(part.id.clone(), *n);
                    }
                }
            }
            if !status.ready {
                problems.push(format!("{} {}: {}", status.kind, status.name, status.message));
            }
            parts.push(status);
        }

        // What an earlier version created and this one no longer has.
        let wanted_ids: BTreeSet<&str> = app.parts.iter().map(|p| p.id.as_str()).collect();
        let wanted_links: BTreeSet<String> = app.links.iter().filter_map(|l| state::link_key(l).ok()).collect();
        let mut stale = AppOwned {
            components: owned.components.iter().filter(|id| !wanted_ids.contains(id.as_str())).cloned().collect(),
            providers: owned.providers.iter().filter(|id| !wanted_ids.contains(id.as_str())).cloned().collect(),
            links: owned.links.iter().filter(|k| !wanted_links.contains(*k)).cloned().collect(),
            configs: owned.configs.iter().filter(|c| !app.configs.contains_key(*c)).cloned().collect(),
        };
        if !stale.is_empty() {
            self.tear_down(deployed, &hosts, &mut stale, &mut owned).await;
        }

        let state = if problems.is_empty() { AppState::Deployed } else { AppState::Failed };
        self.report(deployed, state, problems.join("; "), parts, link_status).await
    }

    /// Start, scale, update or stop one part so it runs where its scaler says.
    async fn place(
        &self,
        deployed: &Deployed,
        part: &Part,
        hosts: &[HostState],
        owned: &mut AppOwned,
    ) -> Result<PartStatus, String> {
        let provider = matches!(part.kind, PartKind::Provider { .. });
        let running_on = |h: &HostState| {
            if provider { h.providers.contains(&part.id).then_some(1) } else { h.components.get(&part.id).copied() }
        };
        let mut status = PartStatus {
            name: part.name.clone(),
            kind: if provider { "provider" } else { "component" }.into(),
            id: part.id.clone(),
            desired: part.scaler.instances,
            running: BTreeMap::new(),
            ready: true,
            message: String::new(),
        };
        let target = match plan::place(&part.id, provider, &part.scaler, hosts) {
            Ok(target) => target,
            Err(err) => {
                status.ready = false;
                status.message = err;
                status.running = hosts.iter().filter_map(|h| running_on(h).map(|n| (h.id.clone(), n))).collect();
                return Ok(status);
            }
        };
        let newly_owned =
            if provider { owned.providers.insert(part.id.clone()) } else { owned.components.insert(part.id.clone()) };
        if newly_owned && hosts.iter().any(|h| target.contains_key(&h.id) && running_on(h).is_none()) {
            self.save_owned(&deployed.app.name, owned).await?;
        } else if newly_owned {
            // It runs already where it should (started by someone else): not ours to remove.
            if provider {
                owned.providers.remove(&part.id)
            } else {
                owned.components.remove(&part.id)
            };
        }
        let request_id = request_id(deployed);
        // A provider's start-up config: the table's defaults, the manifest's configs over them
        // (whatever the case of their keys).
        let provider_config = match &part.kind {
            PartKind::Provider { binary, .. } => {
                let mut config = binary.defaults.clone();
                let (values, missing) = self.store.bucket().resolve(&part.config).await.map_err(|e| e.to_string())?;
                if !missing.is_empty() {
                    status.message = format!("missing config {}", missing.join(", "));
                }
                for (key, value) in values {
                    config.retain(|default, _| !default.eq_ignore_ascii_case(&key));
                    config.insert(key, value);
                }
                config
            }
            PartKind::Component { .. } => BTreeMap::new(),
        };
        let config_digest = ferry_proto::ctl::config_digest(&provider_config);
        let mut restarting = false;
        let mut actions = Vec::new();
        for host in hosts {
            let want = target.get(&host.id).copied();
            let have = running_on(host);
            let host_id = host.id.clone();
            let request_id = request_id.clone();
            let action: Option<Action<'_>> = match (&part.kind, want, have) {
                (PartKind::Provider { binary, .. }, Some(_), None) => {
                    let cmd = ProviderStart {
                        request_id,
                        provider_id: part.id.clone(),
                        binary: binary.binary.clone(),
                        config: provider_config.clone(),
                    };
                    Some(Box::pin(async move { self.send(&cmd, Some(&host_id)).await }))
                }
                // Started with other config (a new version changed it): start it again with
                // what the manifest says now — one host per pass, so the others keep serving.
                (PartKind::Provider { binary, .. }, Some(_), Some(_))
                    if !restarting
                        && owned.providers.contains(&part.id)
                        && host
                            .provider_configs
                            .get(&part.id)
                            .is_some_and(|d| !d.is_empty() && *d != config_digest) =>
                {
                    restarting = true;
                    let stop = ProviderStop { request_id: request_id.clone(), provider_id: part.id.clone() };
                    let start = ProviderStart {
                        request_id,
                        provider_id: part.id.clone(),
                        binary: binary.binary.clone(),
                        config: provider_config.clone(),
                    };
                    Some(Box::pin(async move {
                        self.send(&stop, Some(&host_id)).await?;
                        self.send(&start, Some(&host_id)).await
                    }))
                }
                (PartKind::Provider { .. }, None, Some(_)) if owned.providers.contains(&part.id) => {
                    let cmd = ProviderStop { request_id, provider_id: part.id.clone() };
                    Some(Box::pin(async move { self.send(&cmd, Some(&host_id)).await }))
                }
                (PartKind::Component { .. }, Some(count), None) => {
                    let cmd = ComponentStart {
                        request_id,
                        component_id: part.id.clone(),
                        image: deployed.images.get(&part.name).cloned().unwrap_or_default(),
                        max_instances: Some(count),
                        config: part.config.clone(),
                    };
                    Some(Box::pin(async move { self.send(&cmd, Some(&host_id)).await }))
                }
                (PartKind::Component { .. }, Some(count), Some(now)) => {
                    let image = deployed.images.get(&part.name).cloned().unwrap_or_default();
                    let digest = host.digests.get(&part.id).map(String::as_str).unwrap_or_default();
                    if image.strip_prefix("sha256:").is_some_and(|d| d != digest) {
                        let cmd = ComponentUpdate { request_id, component_id: part.id.clone(), image };
                        Some(Box::pin(async move { self.send(&cmd, Some(&host_id)).await }))
                    } else if count != now {
                        let cmd = ComponentScale { request_id, component_id: part.id.clone(), max_instances: count };
                        Some(Box::pin(async move { self.send(&cmd, Some(&host_id)).await }))
                    } else {
                        None
                    }
                }
                (PartKind::Component { .. }, None, Some(_)) if owned.components.contains(&part.id) => {
                    let cmd = ComponentStop { request_id, component_id: part.id.clone() };
                    Some(Box::pin(async move { self.send(&cmd, Some(&host_id)).await }))
                }
                _ => None,
            };
            if let Some(action) = action {
                actions.push(async move { (host.id.clone(), action.await) });
            } else if let Some(n) = have.filter(|_| want.is_some()) {
                status.running.insert(host.id.clone(), n);
            }
        }
        for (host_id, result) in futures::future::join_all(actions).await {
            match result {
                Ok(()) => {
                    if let Some(n) = target.get(&host_id) {
                        status.running.insert(host_id, *n);
                    }
                }
                Err(err) => {
                    status.ready = false;
                    status.message = format!("host {host_id}: {err}");
                }
            }
        }
        if status.ready && !status.message.is_empty() {
            status.ready = false;
        }
        Ok(status)
    }

    pub(super) async fn save_owned(&self, name: &str, owned: &AppOwned) -> Result<(), String> {
        let key = records::owned_key(name).map_err(|e| e.to_string())?;
        let value = serde_json::to_value(owned).map_err(|e| e.to_string())?;
        self.store.bucket().put_json(&key, &value).await.map(|_| ()).map_err(|e| e.to_string())
    }

    pub(super) async fn report(
        &self,
        deployed: &Deployed,
        state: AppState,
        message: String,
        parts: Vec<PartStatus>,
        links: Vec<LinkStatus>,
    ) -> Result<(), String> {
        let status = AppStatus {
            name: deployed.app.name.clone(),
            version: deployed.record.version.clone(),
            state,
            message,
            reconciler: self.host_id.clone(),
            updated_at_ms: ferry_proto::time::now_ms(),
            parts,
            links,
        };
        let key = records::status_key(&status.name).map_err(|e| e.to_string())?;
        let previous = self.store.status(&status.name).await.ok().flatten();
        if previous
            .as_ref()
            .is_none_or(|p| p.state != status.state || p.message != status.message || p.version != status.version)
        {
            info!(app = %status.name, version = %status.version, state = ?status.state, message = %status.message, "application status");
            self.announce(deployed, status.state, status.message.clone()).await;
        }
        let value = serde_json::to_value(&status).map_err(|e| e.to_string())?;
        self.store.bucket().put_json(&key, &value).await.map(|_| ()).map_err(|e| e.to_string())
    }

    pub(super) async fn announce(&self, deployed: &Deployed, state: AppState, message: String) {
        let changed = AppStatusChanged {
            request_id: deployed.record.request_id.clone(),
            name: deployed.app.name.clone(),
            version: deployed.record.version.clone(),
            state,
            message,
        };
        self.events.emit(&Event::AppStatusChanged(changed)).await;
    }

    /// Send a command; a reply that says it failed is an error with the host's message.
    pub(super) async fn send<C: Command>(&self, cmd: &C, host: Option<&str>) -> Result<(), String> {
        let reply = self.ctl.send(cmd, host).await.map_err(|e| e.to_string())?;
        if reply.success { Ok(()) } else { Err(reply.message) }
    }
}

/// The request id of everything a pass does for a deployment: its own, so events show which
/// deploy caused them.
pub(super) fn request_id(deployed: &Deployed) -> String {
    if deployed.record.request_id.is_empty() {
        format!("app-{}-{}", deployed.app.name, deployed.record.version)
    } else {
        deployed.record.request_id.clone()
    }
}
