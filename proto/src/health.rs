//! Health checks: every provider instance answers with its own id and status.

use serde::{Deserialize, Serialize};

/// A provider instance's health answer on [`crate::subject::health`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthAnswer {
    /// The provider id.
    pub provider_id: String,
    /// This instance's id (unique per process).
    pub instance_id: String,
    /// Whether the provider's own health hook reports it healthy.
    pub healthy: bool,
    /// Detail from the health hook.
    pub message: String,
    /// How many links the instance currently holds.
    pub links: u32,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{decode, encode};

    #[test]
    fn round_trip_and_garbage() {
        let a = HealthAnswer {
            provider_id: "kv".into(),
            instance_id: "i".into(),
            healthy: true,
            message: "ok".into(),
            links: 2,
        };
        assert_eq!(decode::<HealthAnswer>(&encode(&a).unwrap()).unwrap(), a);
        assert!(decode::<HealthAnswer>(b"\x01\x02\x03").is_err());
    }
}
