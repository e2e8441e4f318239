//! Provider health as one host sees it, and the host's heartbeat.
//!
//! Every interval the host asks each provider it supervises, and each provider its components
//! link to, for its health (a signed request on the provider's health subject). No answer
//! within the timeout, or an answer that says unhealthy, is a failure. A change is announced as
//! `health_check_passed` / `health_check_failed`, no change as `health_check_status`; a
//! supervised provider that fails `restart_after` checks in a row is restarted. The same task
//! announces `host_heartbeat` on its own interval.

use std::{
    collections::{BTreeSet, HashMap},
    sync::Arc,
    time::Duration,
};

use ferry_proto::{
    codec,
    envelope::Invocation,
    event::{Event, ProviderHealth},
    health::HealthAnswer,
    subject,
};
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::{
    components::Components, events::Events, identity::Identity, lattice::LatticeView, rpc::client::RpcClient,
    supervisor::Supervisor,
};

/// How often and how patiently a host checks, and when it gives up on a provider.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HealthConfig {
    /// Time between checks.
    pub(crate) interval: Duration,
    /// How long one check waits for an answer.
    pub(crate) timeout: Duration,
    /// Failed checks in a row after which a supervised provider is restarted (0: never).
    pub(crate) restart_after: u32,
    /// Time between `host_heartbeat` events.
    pub(crate) heartbeat: Duration,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(30),
            timeout: Duration::from_secs(5),
            restart_after: 3,
            heartbeat: Duration::from_secs(30),
        }
    }
}

/// What one provider's checks have shown so far.
#[derive(Debug, Default)]
struct Seen {
    healthy: Option<bool>,
    failures: u32,
}

/// The checking task's view of the host.
pub(crate) struct HealthMonitor {
    pub(crate) config: HealthConfig,
    pub(crate) identity: Arc<Identity>,
    pub(crate) rpc: RpcClient,
    pub(crate) view: LatticeView,
    pub(crate) components: Arc<Components>,
    pub(crate) providers: Arc<Supervisor>,
    pub(crate) events: Events,
}

impl HealthMonitor {
    /// Check and beat until `stop`.
    pub(crate) fn spawn(self, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut checks = tokio::time::interval(self.config.interval);
            checks.set_missed_tick_behavior(MissedTickBehavior::Delay);
            let mut beats = tokio::time::interval(self.config.heartbeat);
            beats.set_missed_tick_behavior(MissedTickBehavior::Delay);
            // The host has just announced host_started; the first beat comes one interval on.
            beats.reset();
            let mut seen = HashMap::new();
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    _ = checks.tick() => self.check_all(&mut seen).await,
                    _ = beats.tick() => self.beat().await,
                }
            }
        })
    }

    async fn beat(&self) {
        let info = self.identity.info(self.components.count(), self.providers.count());
        self.events.emit(&Event::HostHeartbeat(info)).await;
    }

    /// The providers to check: those supervised here and those this host's components link to.
    fn targets(&self) -> BTreeSet<String> {
        let components: BTreeSet<String> = self.components.list().into_iter().map(|c| c.component_id).collect();
        let mut targets: BTreeSet<String> = self.providers.list().into_iter().map(|p| p.provider_id).collect();
        for link in self.view.links() {
            if components.contains(&link.source_id) && !components.contains(&link.target_id) {
                targets.insert(link.target_id);
            }
        }
        targets
    }

    async fn check_all(&self, seen: &mut HashMap<String, Seen>) {
        let targets = self.targets();
        seen.retain(|id, _| targets.contains(id));
        let checks = targets.iter().map(|id| async move { (id, self.check(id).await) });
        let results = futures::future::join_all(checks).await;
        let managed: BTreeSet<String> = self.providers.list().into_iter().map(|p| p.provider_id).collect();
        for (id, result) in results {
            let entry = seen.entry(id.clone()).or_default();
            let (healthy, message) = match result {
                Ok(answer) => (answer.healthy, answer.message),
                Err(reason) => (false, reason),
            };
            entry.failures = if healthy { 0 } else { entry.failures.saturating_add(1) };
            ferry_lattice::metrics::set_gauge(
                ferry_lattice::metrics::PROVIDER_HEALTHY,
                &[("provider", id)],
                if healthy { 1.0 } else { 0.0 },
            );
            let changed = entry.healthy != Some(healthy);
            entry.healthy = Some(healthy);
            let report = ProviderHealth {
                host_id: self.identity.id.clone(),
                provider_id: id.clone(),
                healthy,
                message,
                failures: entry.failures,
            };
            let event = match (changed, healthy) {
                (true, true) => {
                    info!(provider = %id, "provider health check passed");
                    Event::HealthCheckPassed(report)
                }
                (true, false) => {
                    warn!(provider = %id, reason = %report.message, "provider health check failed");
                    Event::HealthCheckFailed(report)
                }
                (false, _) => {
                    debug!(provider = %id, healthy, failures = entry.failures, "provider health unchanged");
                    Event::HealthCheckStatus(report)
                }
            };
            self.events.emit(&event).await;
            let limit = self.config.restart_after;
            if limit > 0 && entry.failures >= limit && managed.contains(id) {
                warn!(provider = %id, failures = entry.failures, "restarting a supervised provider that stays unhealthy");
                let reason = format!("restarted by the host: {} health checks failed in a row", entry.failures);
                if self.providers.restart(id, reason) {
                    entry.failures = 0;
                }
            }
        }
    }

    /// One health request: the first instance's answer, or why there was none.
    async fn check(&self, provider: &str) -> Result<HealthAnswer, String> {
        let subject = subject::health(self.rpc.lattice(), provider).map_err(|e| e.to_string())?;
        let mut inv = Invocation::new(&self.identity.id, provider, "default", subject::OP_HEALTH, Vec::new());
        let timeout = self.config.timeout;
        let answer = tokio::time::timeout(timeout, self.rpc.send_on(subject, &mut inv, timeout))
            .await
            .map_err(|_| format!("no answer within {timeout:?}"))?
            .map_err(|e| e.to_string())?;
        codec::decode::<HealthAnswer>(&answer).map_err(|e| format!("unreadable health answer: {e}"))
    }
}
