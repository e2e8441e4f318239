//! The control interface: JSON requests on `ferry.ctl.v1.{lattice}.{resource}.{verb}[.{host}]`
//! and their replies. Documented in docs/control-interface.md.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::link::{Link, LinkKey};

/// `component.start`: load a component and serve it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComponentStart {
    /// Echoed in the reply and in the events this command causes.
    #[serde(default)]
    pub request_id: String,
    /// The id the component serves on.
    pub component_id: String,
    /// Where to load it from: a file path on the host.
    pub image: String,
    /// Upper bound of concurrently running instances on the host (default 100).
    #[serde(default)]
    pub max_instances: Option<u32>,
    /// Names of configs the component reads through `wasi:config`.
    #[serde(default)]
    pub config: Vec<String>,
}

/// `component.stop`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComponentStop {
    /// Echoed in the reply and in events.
    #[serde(default)]
    pub request_id: String,
    /// Which component.
    pub component_id: String,
}

/// `link.put`: create or update a link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkPutCommand {
    /// Echoed in the reply and in events.
    #[serde(default)]
    pub request_id: String,
    /// The link.
    pub link: Link,
}

/// `link.del`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkDelCommand {
    /// Echoed in the reply and in events.
    #[serde(default)]
    pub request_id: String,
    /// Which link.
    pub key: LinkKey,
}

/// `link.get`: list links, optionally those of one source or target.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkGetCommand {
    /// Echoed in the reply.
    #[serde(default)]
    pub request_id: String,
    /// Only links from or to this id.
    #[serde(default)]
    pub id: Option<String>,
}

/// `config.put`: create or replace a named config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigPutCommand {
    /// Echoed in the reply and in events.
    #[serde(default)]
    pub request_id: String,
    /// Config name.
    pub name: String,
    /// Its values.
    pub values: BTreeMap<String, String>,
}

/// `config.get` and `config.del`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigNameCommand {
    /// Echoed in the reply and in events.
    #[serde(default)]
    pub request_id: String,
    /// Config name.
    pub name: String,
}

/// The reply to every control command: what happened, not just "accepted".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CtlResponse {
    /// The command's request id.
    pub request_id: String,
    /// Whether the command took effect.
    pub success: bool,
    /// What happened, for people.
    pub message: String,
    /// Result data (a link list, a config, …), `null` when none.
    #[serde(default)]
    pub data: serde_json::Value,
}

impl CtlResponse {
    /// A success with data.
    pub fn ok(request_id: impl Into<String>, message: impl Into<String>, data: serde_json::Value) -> Self {
        Self { request_id: request_id.into(), success: true, message: message.into(), data }
    }

    /// A failure.
    pub fn fail(request_id: impl Into<String>, message: impl Into<String>) -> Self {
        Self { request_id: request_id.into(), success: false, message: message.into(), data: serde_json::Value::Null }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_round_trip_as_json() {
        let cmd = ComponentStart {
            request_id: "r1".into(),
            component_id: "c".into(),
            image: "/tmp/c.wasm".into(),
            max_instances: Some(4),
            config: vec!["cfg".into()],
        };
        let json = serde_json::to_vec(&cmd).unwrap();
        assert_eq!(serde_json::from_slice::<ComponentStart>(&json).unwrap(), cmd);
        let minimal: ComponentStop = serde_json::from_str(r#"{"component_id":"c"}"#).unwrap();
        assert_eq!(minimal.request_id, "");
        assert!(serde_json::from_slice::<LinkPutCommand>(b"\x00garbage").is_err());
        let resp = CtlResponse::ok("r1", "done", serde_json::json!({"a": 1}));
        assert_eq!(serde_json::from_slice::<CtlResponse>(&serde_json::to_vec(&resp).unwrap()).unwrap(), resp);
    }
}
