//! Commands about named configs: put, get, del. Values never appear in replies to put or
//! del, nor in events.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

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

/// `config.get`: read a named config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigGetCommand {
    /// Echoed in the reply.
    #[serde(default)]
    pub request_id: String,
    /// Config name.
    pub name: String,
    /// The requester's ephemeral X25519 public key (base64url,
    /// [`crate::seal::reply::Opener`]): the values come back sealed for it. Without one they
    /// are withheld, since a reply crosses NATS where others may read it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_key: Option<String>,
}

impl ConfigGetCommand {
    /// What the sealed values of the reply are bound to: the request and the config.
    pub fn binding(&self) -> String {
        format!("{}\0{}", self.request_id, self.name)
    }
}

/// What `config.get` answers for each value when the request carries no reply key.
pub const WITHHELD: &str = "(withheld: ask with a reply key, as ferry ctl does)";

/// `config.del`: delete a named config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigDelCommand {
    /// Echoed in the reply and in events.
    #[serde(default)]
    pub request_id: String,
    /// Config name.
    pub name: String,
}

/// A link offered again because a config it names changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshedLink {
    /// The link's source.
    pub source_id: String,
    /// Its target.
    pub target_id: String,
    /// Its name.
    pub name: String,
    /// Whether its providers accepted it as it is now.
    pub accepted: bool,
}

/// The answer to `config.put` and `config.del`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigStored {
    /// Config name.
    pub name: String,
    /// The bucket revision of the put or delete.
    pub revision: u64,
    /// Links offered again.
    pub links: Vec<RefreshedLink>,
}
