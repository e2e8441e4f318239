//! Auctions: which hosts could take a component or a provider. Every host whose labels hold
//! all the constraints, and that does not run that id already, bids; the others stay silent.
//! The caller picks one of the bids and sends its start to that host.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `component.auction`: which hosts could run `component_id`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComponentAuction {
    /// Echoed in the bids.
    #[serde(default)]
    pub request_id: String,
    /// The component to place.
    pub component_id: String,
    /// Labels a host must carry, with these values.
    #[serde(default)]
    pub constraints: BTreeMap<String, String>,
}

/// `provider.auction`: which hosts could supervise `provider_id`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderAuction {
    /// Echoed in the bids.
    #[serde(default)]
    pub request_id: String,
    /// The provider to place.
    pub provider_id: String,
    /// Labels a host must carry, with these values.
    #[serde(default)]
    pub constraints: BTreeMap<String, String>,
}

/// A host's bid in an auction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuctionBid {
    /// The bidding host.
    pub host_id: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
}

/// Whether `labels` hold every one of `constraints`.
pub fn satisfies(labels: &BTreeMap<String, String>, constraints: &BTreeMap<String, String>) -> bool {
    constraints.iter().all(|(key, value)| labels.get(key) == Some(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_constraint_must_hold() {
        let labels: BTreeMap<String, String> =
            [("zone".into(), "a".into()), ("gpu".into(), "yes".into())].into_iter().collect();
        assert!(satisfies(&labels, &BTreeMap::new()));
        assert!(satisfies(&labels, &[("zone".into(), "a".into())].into_iter().collect()));
        assert!(!satisfies(&labels, &[("zone".into(), "b".into())].into_iter().collect()));
        assert!(!satisfies(&labels, &[("arch".into(), "arm".into())].into_iter().collect()));
    }
}
