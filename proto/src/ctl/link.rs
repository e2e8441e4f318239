//! Commands about links: put, del, get.

use serde::{Deserialize, Serialize};

use crate::link::{Link, LinkKey};

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

/// What one side of a link said to a link notification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SideAnswer {
    /// The side (a component or provider id); empty when nothing was offered.
    #[serde(default)]
    pub id: String,
    /// Whether every instance that answered accepted.
    pub accepted: bool,
    /// What happened, for people.
    pub result: String,
}

/// The answer to `link.put` and `link.del`, and the data of `link_set`, `link_set_failed`
/// and `link_deleted`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkSet {
    /// The link.
    pub link: Link,
    /// The bucket revision of the put or delete.
    pub revision: u64,
    /// Each side's answer.
    pub providers: Vec<SideAnswer>,
}
