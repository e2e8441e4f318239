//! Settings of the provider (its start-up config) and of each link (the link's source config).

use std::{collections::BTreeMap, net::SocketAddr, time::Duration};

/// Address of the shared listener when neither the link nor the provider names one.
pub(crate) const DEFAULT_ADDRESS: &str = "127.0.0.1:8000";
/// Time a request may take before the provider answers 504.
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest request body accepted before the provider answers 413.
pub(crate) const DEFAULT_MAX_BODY: u64 = 100 << 20;
/// Time in-flight requests get to finish when a listener closes or the provider stops.
pub(crate) const DEFAULT_DRAIN: Duration = Duration::from_secs(30);
/// Open connections the provider serves at once, across its listeners; more get a 503.
pub(crate) const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// Longest pause while a request body is being read before the provider answers 408.
pub(crate) const DEFAULT_BODY_IDLE: Duration = Duration::from_secs(30);

/// Provider-wide settings, from the start-up config (`address`, `timeout_ms`, `max_body_bytes`,
/// `drain_timeout_ms`, `max_connections`, `body_idle_timeout_ms`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Settings {
    pub(crate) address: SocketAddr,
    pub(crate) timeout: Duration,
    pub(crate) max_body: u64,
    pub(crate) drain: Duration,
    pub(crate) max_connections: usize,
    pub(crate) body_idle: Duration,
}

impl Settings {
    pub(crate) fn from_config(config: &BTreeMap<String, String>) -> Result<Self, String> {
        Ok(Self {
            address: parse_address(config.get("address").map_or(DEFAULT_ADDRESS, String::as_str))?,
            timeout: parse_ms(config, "timeout_ms")?.unwrap_or(DEFAULT_TIMEOUT),
            max_body: parse_u64(config, "max_body_bytes")?.unwrap_or(DEFAULT_MAX_BODY),
            drain: parse_ms(config, "drain_timeout_ms")?.unwrap_or(DEFAULT_DRAIN),
            max_connections: match parse_u64(config, "max_connections")? {
                Some(0) => return Err("`max_connections` must be at least 1".into()),
                Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
                None => DEFAULT_MAX_CONNECTIONS,
            },
            body_idle: parse_ms(config, "body_idle_timeout_ms")?.unwrap_or(DEFAULT_BODY_IDLE),
        })
    }
}

/// Where and how one link is served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RouteConfig {
    /// The listener: the link's `address`, else the provider's.
    pub(crate) address: SocketAddr,
    /// Only requests for this host name (lower case, no port), when set.
    pub(crate) host: Option<String>,
    /// Only requests under this path prefix (`/` matches everything).
    pub(crate) path: String,
    pub(crate) timeout: Duration,
    pub(crate) max_body: u64,
}

impl RouteConfig {
    /// Read a link's source config: `address`, `host`, `path`, `timeout_ms`, `max_body_bytes`.
    pub(crate) fn from_link(config: &BTreeMap<String, String>, defaults: &Settings) -> Result<Self, String> {
        let known = ["address", "host", "path", "timeout_ms", "max_body_bytes"];
        if let Some(unknown) = config.keys().find(|k| !known.contains(&k.as_str())) {
            return Err(format!("unknown link setting {unknown:?} (known: {})", known.join(", ")));
        }
        let address = match config.get("address") {
            Some(address) => parse_address(address)?,
            None => defaults.address,
        };
        let host = match config.get("host") {
            Some(host) => Some(normalize_host(host).ok_or_else(|| format!("invalid host {host:?}"))?),
            None => None,
        };
        let path = match config.get("path") {
            Some(path) => normalize_prefix(path)?,
            None => "/".to_owned(),
        };
        Ok(Self {
            address,
            host,
            path,
            timeout: parse_ms(config, "timeout_ms")?.unwrap_or(defaults.timeout),
            max_body: parse_u64(config, "max_body_bytes")?.unwrap_or(defaults.max_body),
        })
    }
}

fn parse_address(text: &str) -> Result<SocketAddr, String> {
    text.trim().parse().map_err(|e| format!("invalid address {text:?} (expected IP:PORT): {e}"))
}

fn parse_u64(config: &BTreeMap<String, String>, key: &str) -> Result<Option<u64>, String> {
    config.get(key).map(|v| v.trim().parse::<u64>().map_err(|e| format!("invalid {key} {v:?}: {e}"))).transpose()
}

fn parse_ms(config: &BTreeMap<String, String>, key: &str) -> Result<Option<Duration>, String> {
    match parse_u64(config, key)? {
        Some(0) => Err(format!("{key} must be more than 0")),
        Some(ms) => Ok(Some(Duration::from_millis(ms))),
        None => Ok(None),
    }
}

/// A host name as routes compare it: lower case, without a port; `None` if it is not a name.
pub(crate) fn normalize_host(text: &str) -> Option<String> {
    let text = text.trim();
    // An IPv6 literal keeps its brackets; anything else loses a `:port` suffix.
    let name = if text.starts_with('[') {
        text.split_once(']').map(|(h, _)| format!("{h}]"))?
    } else {
        text.split(':').next()?.to_owned()
    };
    let valid = !name.is_empty()
        && name.len() <= 253
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'[' | b']' | b':'));
    valid.then(|| name.to_ascii_lowercase())
}

/// A path prefix as routes compare it: starts with `/`, no trailing `/` (except `/` itself).
fn normalize_prefix(text: &str) -> Result<String, String> {
    let text = text.trim();
    if !text.starts_with('/') || text.contains(['?', '#']) || text.contains("//") {
        return Err(format!("invalid path prefix {text:?} (expected /a/b)"));
    }
    let trimmed = text.trim_end_matches('/');
    Ok(if trimmed.is_empty() { "/".to_owned() } else { trimmed.to_owned() })
}

/// Whether `path` lies under `prefix`, on a segment boundary (`/api` covers `/api` and
/// `/api/x`, not `/apix`).
pub(crate) fn under_prefix(path: &str, prefix: &str) -> bool {
    prefix == "/" || path.strip_prefix(prefix).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn link_settings_fall_back_to_the_provider_defaults() {
        let defaults = Settings::from_config(&cfg(&[("address", "0.0.0.0:9000"), ("timeout_ms", "5000")])).unwrap();
        let route = RouteConfig::from_link(&cfg(&[("path", "/api/")]), &defaults).unwrap();
        assert_eq!(route.address, "0.0.0.0:9000".parse().unwrap());
        assert_eq!(route.path, "/api");
        assert_eq!(route.timeout, Duration::from_secs(5));
        assert_eq!(route.max_body, DEFAULT_MAX_BODY);
        let route = RouteConfig::from_link(
            &cfg(&[("address", "127.0.0.1:1"), ("host", "Example.COM:8080"), ("max_body_bytes", "10")]),
            &defaults,
        )
        .unwrap();
        assert_eq!(route.address, "127.0.0.1:1".parse().unwrap());
        assert_eq!(route.host.as_deref(), Some("example.com"));
        assert_eq!(route.max_body, 10);
    }

    #[test]
    fn bad_settings_are_named() {
        let defaults = Settings::from_config(&BTreeMap::new()).unwrap();
        for (key, value) in [
            ("address", "nowhere"),
            ("path", "api"),
            ("path", "/a?b"),
            ("timeout_ms", "0"),
            ("timeout_ms", "soon"),
            ("max_body_bytes", "-1"),
            ("host", "a b"),
            ("colour", "blue"),
        ] {
            let err = RouteConfig::from_link(&cfg(&[(key, value)]), &defaults).unwrap_err();
            assert!(err.contains(key) || err.contains(value), "{err}");
        }
        assert!(Settings::from_config(&cfg(&[("address", "x")])).is_err());
    }

    #[test]
    fn prefixes_match_on_segment_boundaries() {
        assert!(under_prefix("/anything", "/"));
        assert!(under_prefix("/api", "/api"));
        assert!(under_prefix("/api/x/y", "/api"));
        assert!(!under_prefix("/apix", "/api"));
        assert!(!under_prefix("/", "/api"));
        assert_eq!(normalize_host("[::1]:80").as_deref(), Some("[::1]"));
        assert_eq!(normalize_host("LocalHost").as_deref(), Some("localhost"));
        assert_eq!(normalize_host(""), None);
    }
}
