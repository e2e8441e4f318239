//! Keys and values of the lattice's KV bucket ([`crate::subject::data_bucket`]).
//!
//! Links live under `link.{source}.{target}.{namespace}.{package}.{name}`, named config under
//! `config.{name}` and component references under `component.{id}`; values are JSON so an
//! operator can read them with the `nats` CLI.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{
    ProtoError,
    link::{Link, LinkKey},
    subject::validate_id,
};

/// Key prefix of link entries.
pub const LINK_PREFIX: &str = "link.";
/// Key prefix of config entries.
pub const CONFIG_PREFIX: &str = "config.";
/// Key prefix of component entries.
pub const COMPONENT_PREFIX: &str = "component.";

/// The bucket key of `link`.
///
/// # Errors
/// [`ProtoError::InvalidId`] if a part of the link's identity is invalid.
pub fn link_key(link: &Link) -> Result<String, ProtoError> {
    link.validate()?;
    Ok(format!(
        "{LINK_PREFIX}{}.{}.{}.{}.{}",
        link.source_id, link.target_id, link.wit_namespace, link.wit_package, link.name
    ))
}

/// The bucket key of the link identified by `key`.
///
/// # Errors
/// [`ProtoError::InvalidId`] if a part of the identity is invalid.
pub fn link_key_of(key: &LinkKey) -> Result<String, ProtoError> {
    for (what, value) in [
        ("source id", &key.source_id),
        ("target id", &key.target_id),
        ("link name", &key.name),
        ("wit namespace", &key.wit_namespace),
        ("wit package", &key.wit_package),
    ] {
        validate_id(what, value)?;
    }
    Ok(format!(
        "{LINK_PREFIX}{}.{}.{}.{}.{}",
        key.source_id, key.target_id, key.wit_namespace, key.wit_package, key.name
    ))
}

/// The link identity a bucket key names, if it is a link key.
pub fn parse_link_key(key: &str) -> Option<LinkKey> {
    let mut parts = key.strip_prefix(LINK_PREFIX)?.split('.');
    let mut next = || parts.next().map(str::to_owned);
    let parsed =
        LinkKey { source_id: next()?, target_id: next()?, wit_namespace: next()?, wit_package: next()?, name: next()? };
    (parts.next().is_none() && link_key_of(&parsed).is_ok_and(|k| k == key)).then_some(parsed)
}

/// The bucket key of the config named `name`.
///
/// # Errors
/// [`ProtoError::InvalidId`] if the name is invalid.
pub fn config_key(name: &str) -> Result<String, ProtoError> {
    validate_id("config name", name)?;
    Ok(format!("{CONFIG_PREFIX}{name}"))
}

/// The bucket key of the component `id`.
///
/// # Errors
/// [`ProtoError::InvalidId`] if the id is invalid.
pub fn component_key(id: &str) -> Result<String, ProtoError> {
    validate_id("component id", id)?;
    Ok(format!("{COMPONENT_PREFIX}{id}"))
}

/// A named config: a map of strings referenced by links and components.
pub type ConfigValues = BTreeMap<String, String>;

/// What the bucket records about a started component, so a restarted host or an operator can
/// see what runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComponentRecord {
    /// The component id (the subject it serves on).
    pub component_id: String,
    /// Where the component was loaded from.
    pub image: String,
    /// Upper bound of concurrently running instances on one host.
    pub max_instances: u32,
    /// Names of the configs the component reads through `wasi:config`.
    pub config: Vec<String>,
    /// Hosts running it.
    pub hosts: Vec<String>,
    /// The verified claims it carries, if it is signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claims: Option<crate::claims::ComponentClaims>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_readable_and_validated() {
        let link = Link::new("comp", "kv", "wasi", "keyvalue", vec!["store".into()]);
        assert_eq!(link_key(&link).unwrap(), "link.comp.kv.wasi.keyvalue.default");
        assert_eq!(config_key("redis").unwrap(), "config.redis");
        assert!(config_key("a.b").is_err());
        assert!(component_key("").is_err());
        assert_eq!(parse_link_key("link.comp.kv.wasi.keyvalue.default"), Some(link.key()));
        for bad in ["link.comp.kv.wasi.keyvalue", "link.a.b.c.d.e.f", "config.x", "link.a.b.c.d.e f"] {
            assert_eq!(parse_link_key(bad), None, "{bad}");
        }
    }
}
