//! Where each part of an application should run, given the hosts that answer now: the
//! scalers' arithmetic, kept apart from NATS so it can be tested alone. Placements are stable:
//! a host that runs a part and still qualifies keeps it, so a pass over a healthy lattice
//! changes nothing.

use std::collections::{BTreeMap, BTreeSet};

use super::manifest::{Scaler, Spread};

/// What one host runs now, as its inventory says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct HostState {
    /// The host id.
    pub(crate) id: String,
    /// Its labels.
    pub(crate) labels: BTreeMap<String, String>,
    /// Component id → concurrent instances allowed there.
    pub(crate) components: BTreeMap<String, u32>,
    /// Provider ids it supervises.
    pub(crate) providers: BTreeSet<String>,
    /// Whether it may start providers (it allows a directory of binaries).
    pub(crate) runs_providers: bool,
    /// Component id → SHA-256 (hex) of what it runs.
    pub(crate) digests: BTreeMap<String, String>,
    /// Provider id → digest of the config it was started with.
    pub(crate) provider_configs: BTreeMap<String, String>,
}

impl HostState {
    fn runs(&self, id: &str, provider: bool) -> bool {
        if provider { self.providers.contains(id) } else { self.components.contains_key(id) }
    }

    fn load(&self) -> usize {
        self.components.len() + self.providers.len()
    }

    fn qualifies(&self, spread: &Spread, provider: bool) -> bool {
        (!provider || self.runs_providers)
            && spread.requirements.iter().all(|(k, v)| self.labels.get(k).is_some_and(|have| have == v))
    }
}

/// Host id → instances there (for a provider always 1) for the part `id` under `scaler`.
///
/// # Errors
/// Why a spread cannot be placed (no host qualifies); what could be placed is not returned
/// then, and the caller leaves the part as it is.
pub(crate) fn place(
    id: &str,
    provider: bool,
    scaler: &Scaler,
    hosts: &[HostState],
) -> Result<BTreeMap<String, u32>, String> {
    let mut placement: BTreeMap<String, u32> = BTreeMap::new();
    let shares = shares(scaler);
    let mut problems = Vec::new();
    for (spread, share) in scaler.spreads.iter().zip(shares) {
        let eligible: Vec<&HostState> = hosts.iter().filter(|h| h.qualifies(spread, provider)).collect();
        if share == 0 {
            continue;
        }
        if eligible.is_empty() {
            let what = if provider { " and starts providers" } else { "" };
            problems.push(if spread.requirements.is_empty() {
                format!("spread {:?}: no host answers{what}", spread.name)
            } else {
                format!("spread {:?}: no host has labels {:?}{what}", spread.name, spread.requirements)
            });
            continue;
        }
        if scaler.daemon {
            for host in eligible {
                let count = if provider { 1 } else { share };
                let slot = placement.entry(host.id.clone()).or_default();
                *slot = (*slot).max(count);
            }
            continue;
        }
        // Hosts already running it first (stable), then the least loaded; a host another
        // spread took is a last resort for a provider (one process per host).
        let mut ranked = eligible;
        ranked.sort_by_key(|h| {
            (!h.runs(id, provider), provider && placement.contains_key(&h.id), h.load(), h.id.clone())
        });
        let hosts_used = usize::try_from(share).unwrap_or(usize::MAX).min(ranked.len());
        let chosen = &ranked[..hosts_used];
        for (i, host) in chosen.iter().enumerate() {
            let count = if provider {
                1
            } else {
                let n = u32::try_from(hosts_used).unwrap_or(u32::MAX);
                share / n + u32::from(u32::try_from(i).unwrap_or(u32::MAX) < share % n)
            };
            let slot = placement.entry(host.id.clone()).or_default();
            *slot = if provider { 1 } else { *slot + count };
        }
    }
    if problems.is_empty() { Ok(placement) } else { Err(problems.join("; ")) }
}

/// Each spread's share of the instances, by weight; what rounding leaves goes to the heaviest
/// spreads first. A daemonscaler's spreads each get all of them (per host).
fn shares(scaler: &Scaler) -> Vec<u32> {
    if scaler.daemon {
        return vec![scaler.instances; scaler.spreads.len()];
    }
    let total: u64 = scaler.spreads.iter().map(|s| u64::from(s.weight)).sum::<u64>().max(1);
    let mut shares: Vec<u32> = scaler
        .spreads
        .iter()
        .map(|s| u32::try_from(u64::from(scaler.instances) * u64::from(s.weight) / total).unwrap_or(u32::MAX))
        .collect();
    let mut left = scaler.instances.saturating_sub(shares.iter().sum());
    let mut order: Vec<usize> = (0..shares.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(scaler.spreads[i].weight));
    for i in order.into_iter().cycle() {
        if left == 0 {
            break;
        }
        shares[i] += 1;
        left -= 1;
    }
    shares
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(id: &str, labels: &[(&str, &str)]) -> HostState {
        HostState {
            id: id.into(),
            labels: labels.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect(),
            runs_providers: true,
            ..HostState::default()
        }
    }

    fn spread(name: &str, req: &[(&str, &str)], weight: u32) -> Spread {
        Spread {
            name: name.into(),
            requirements: req.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect(),
            weight,
        }
    }

    fn scaler(daemon: bool, instances: u32, spreads: Vec<Spread>) -> Scaler {
        Scaler { daemon, instances, spreads }
    }

    #[test]
    fn a_spread_splits_instances_by_weight_over_matching_hosts() {
        let hosts = [host("a", &[("zone", "east")]), host("b", &[("zone", "west")]), host("c", &[("zone", "west")])];
        let s = scaler(false, 10, vec![spread("e", &[("zone", "east")], 80), spread("w", &[("zone", "west")], 20)]);
        let placed = place("x", false, &s, &hosts).unwrap();
        assert_eq!(placed, BTreeMap::from([("a".into(), 8), ("b".into(), 1), ("c".into(), 1)]));
        assert_eq!(shares(&scaler(false, 3, vec![spread("a", &[], 1), spread("b", &[], 1)])).iter().sum::<u32>(), 3);
    }

    #[test]
    fn placements_are_stable_and_move_only_off_lost_hosts() {
        let mut hosts = vec![host("a", &[]), host("b", &[])];
        hosts[1].components.insert("x".into(), 1);
        let s = scaler(false, 1, vec![spread("d", &[], 100)]);
        assert_eq!(place("x", false, &s, &hosts).unwrap(), BTreeMap::from([("b".into(), 1)]));
        hosts.remove(1);
        assert_eq!(place("x", false, &s, &hosts).unwrap(), BTreeMap::from([("a".into(), 1)]));
    }

    #[test]
    fn a_daemon_runs_on_every_matching_host_and_providers_once_per_host() {
        let hosts = [host("a", &[("gpu", "yes")]), host("b", &[]), host("c", &[("gpu", "yes")])];
        let d = scaler(true, 5, vec![spread("g", &[("gpu", "yes")], 100)]);
        assert_eq!(place("x", false, &d, &hosts).unwrap(), BTreeMap::from([("a".into(), 5), ("c".into(), 5)]));
        assert_eq!(place("p", true, &d, &hosts).unwrap(), BTreeMap::from([("a".into(), 1), ("c".into(), 1)]));
        let s = scaler(false, 5, vec![spread("d", &[], 100)]);
        assert_eq!(place("p", true, &s, &hosts).unwrap().len(), 3, "one provider process per host at most");
    }

    #[test]
    fn a_spread_no_host_matches_is_an_error_and_providers_need_a_host_that_starts_them() {
        let mut hosts = [host("a", &[])];
        let s = scaler(false, 1, vec![spread("z", &[("zone", "mars")], 100)]);
        assert!(place("x", false, &s, &hosts).unwrap_err().contains("mars"));
        hosts[0].runs_providers = false;
        assert!(place("p", true, &scaler(false, 1, vec![spread("d", &[], 1)]), &hosts).is_err());
    }
}
