//! What the reconciler takes away: an undeployed application's creations, and what an earlier
//! version created that the deployed one no longer has — exactly what the application's
//! ownership record lists, nothing else.

use ferry_proto::{
    app::{self as records, AppOwned},
    ctl::{AppState, Command, ComponentStop, ConfigDelCommand, LinkDelCommand, ProviderStop},
    state,
};
use tracing::{info, warn};

use super::{
    Deployed,
    plan::HostState,
    reconciler::{Reconciler, request_id},
};

impl Reconciler {
    /// Remove an undeployed application's creations; the records go once nothing is left.
    pub(super) async fn remove(&self, deployed: &Deployed, hosts: &[HostState]) -> Result<(), String> {
        let name = &deployed.app.name;
        let (mut owned, _) = self.store.owned(name).await?;
        let mut all = owned.clone();
        self.tear_down(deployed, hosts, &mut all, &mut owned).await;
        if owned.is_empty() {
            let bucket = self.store.bucket();
            for key in [records::owned_key(name), records::status_key(name), records::deployment_key(name)] {
                bucket.delete(&key.map_err(|e| e.to_string())?).await.map_err(|e| e.to_string())?;
            }
            info!(app = %name, "application undeployed");
            self.announce(deployed, AppState::Undeployed, String::new()).await;
            return Ok(());
        }
        let left = owned.components.len() + owned.providers.len() + owned.links.len() + owned.configs.len();
        self.report(deployed, AppState::Undeploying, format!("{left} things left to remove"), Vec::new(), Vec::new())
            .await
    }

    /// Remove what `stale` lists (all of it owned), dropping from `owned` what is gone.
    pub(super) async fn tear_down(
        &self,
        deployed: &Deployed,
        hosts: &[HostState],
        stale: &mut AppOwned,
        owned: &mut AppOwned,
    ) {
        let request_id = request_id(deployed);
        for key in std::mem::take(&mut stale.links) {
            let Some(link_key) = state::parse_link_key(&key) else {
                owned.links.remove(&key);
                continue;
            };
            let cmd = LinkDelCommand { request_id: request_id.clone(), key: link_key };
            match self.send(&cmd, None).await {
                Ok(()) => {
                    owned.links.remove(&key);
                }
                Err(err) if err.contains("no link") || err.contains("not found") => {
                    owned.links.remove(&key);
                }
                Err(err) => warn!(%key, cause = %err, "could not delete an application's link"),
            }
        }
        for id in std::mem::take(&mut stale.components) {
            let running = hosts.iter().filter(|h| h.components.contains_key(&id));
            let stop = |_: &String| ComponentStop { request_id: request_id.clone(), component_id: id.clone() };
            if self.stop_on(running, stop, "component", &id).await {
                owned.components.remove(&id);
            }
        }
        for id in std::mem::take(&mut stale.providers) {
            let running = hosts.iter().filter(|h| h.providers.contains(&id));
            let stop = |_: &String| ProviderStop { request_id: request_id.clone(), provider_id: id.clone() };
            if self.stop_on(running, stop, "provider", &id).await {
                owned.providers.remove(&id);
            }
        }
        for name in std::mem::take(&mut stale.configs) {
            let cmd = ConfigDelCommand { request_id: request_id.clone(), name: name.clone() };
            match self.send(&cmd, None).await {
                Ok(()) => {
                    owned.configs.remove(&name);
                }
                Err(err) if err.contains("no config") || err.contains("not found") => {
                    owned.configs.remove(&name);
                }
                Err(err) => warn!(config = %name, cause = %err, "could not delete an application's config"),
            }
        }
        if let Err(err) = self.save_owned(&deployed.app.name, owned).await {
            warn!(app = %deployed.app.name, cause = %err, "could not record what is left of an application");
        }
    }

    /// Send `stop` to each of `hosts`; whether every one obeyed.
    async fn stop_on<'h, C: Command>(
        &self,
        hosts: impl Iterator<Item = &'h HostState>,
        stop: impl Fn(&String) -> C,
        kind: &str,
        id: &str,
    ) -> bool {
        let mut all = true;
        for host in hosts {
            if let Err(err) = self.send(&stop(&host.id), Some(&host.id)).await {
                warn!(kind, id, host = %host.id, cause = %err, "could not stop part of an application");
                all = false;
            }
        }
        all
    }
}
