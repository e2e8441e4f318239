//! Health checks and shutdown requests: every provider instance answers with its own id.

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

/// The payload of [`crate::subject::OP_SHUTDOWN`]: which instance should stop. The MAC covers
/// it, so a shutdown meant for one instance cannot be republished to stop the others.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ShutdownRequest {
    /// The instance to stop; `None` stops every instance of the provider.
    #[serde(default)]
    pub instance_id: Option<String>,
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
        let stop = ShutdownRequest { instance_id: Some("i".into()) };
        assert_eq!(decode::<ShutdownRequest>(&encode(&stop).unwrap()).unwrap(), stop);
        assert!(decode::<ShutdownRequest>(b"\x01\x02\x03").is_err());
    }
}
