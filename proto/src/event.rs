//! Events: CloudEvents 1.0 in JSON on `ferry.evt.{lattice}.{event}`.

use serde::{Deserialize, Serialize};

use crate::time;

/// A CloudEvents 1.0 envelope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CloudEvent {
    /// Always `1.0`.
    pub specversion: String,
    /// Unique event id.
    pub id: String,
    /// The emitting host or provider id.
    pub source: String,
    /// `ferry.<event_name>`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// RFC 3339 time of emission.
    pub time: String,
    /// Always `application/json`.
    pub datacontenttype: String,
    /// The event's data.
    pub data: serde_json::Value,
}

impl CloudEvent {
    /// A new event named `name` (`link_set`) from `source`.
    pub fn new(source: impl Into<String>, name: &str, data: serde_json::Value) -> Self {
        Self {
            specversion: "1.0".into(),
            id: uuid::Uuid::new_v4().to_string(),
            source: source.into(),
            event_type: format!("ferry.{name}"),
            time: time::rfc3339(time::now_ms()),
            datacontenttype: "application/json".into(),
            data,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_carry_the_cloudevents_fields() {
        let ev = CloudEvent::new("NHOST", "link_set", serde_json::json!({"request_id": "r"}));
        let json: serde_json::Value = serde_json::to_value(&ev).unwrap();
        assert_eq!(json["specversion"], "1.0");
        assert_eq!(json["type"], "ferry.link_set");
        assert_eq!(json["datacontenttype"], "application/json");
        let back: CloudEvent = serde_json::from_value(json).unwrap();
        assert_eq!(back, ev);
    }
}
