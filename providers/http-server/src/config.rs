//! Settings of the provider (its start-up config) and of each link (the link's source config).

use std::{collections::BTreeMap, net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use ferry_provider_sdk::LinkConfig;
use http::HeaderValue;

use crate::cors::Cors;

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
    /// The listener: the link's `address` (or `port` on 127.0.0.1), else the provider's.
    pub(crate) address: SocketAddr,
    /// Only requests for this host name (lower case, no port), when set.
    pub(crate) host: Option<String>,
    /// Only requests under this path prefix (`/` matches everything).
    pub(crate) path: String,
    pub(crate) timeout: Duration,
    pub(crate) max_body: u64,
    /// Only `GET` and `HEAD` reach the component; others get 405 (`readonly_mode`).
    pub(crate) readonly: bool,
    /// Appended to every response (`cache_control`).
    pub(crate) cache_control: Option<HeaderValue>,
    /// Cross-origin policy, when the link sets any `cors_*` key.
    pub(crate) cors: Option<Arc<Cors>>,
    /// The listener serves HTTPS with this certificate and key (`tls_cert_file`,
    /// `tls_priv_key_file`).
    pub(crate) tls: Option<TlsFiles>,
}

/// A certificate chain and its private key, PEM files.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct TlsFiles {
    pub(crate) cert: PathBuf,
    pub(crate) key: PathBuf,
}

/// Every key a route takes: Ferry's routing keys and wasmCloud's http-server settings.
const ROUTE_KEYS: &[&str] = &[
    "address",
    "port",
    "host",
    "path",
    "timeout_ms",
    "max_body_bytes",
    "cache_control",
    "readonly_mode",
    "cors_allowed_origins",
    "cors_allowed_headers",
    "cors_allowed_methods",
    "cors_exposed_headers",
    "cors_max_age_secs",
    "tls_cert_file",
    "tls_priv_key_file",
    "config_json",
    "config_b64",
];

impl RouteConfig {
    /// Read a link's source config: `address` (or `port`), `host`, `path`, `timeout_ms`,
    /// `max_body_bytes`, and wasmCloud's `cache_control`, `readonly_mode`, `cors_*`,
    /// `tls_cert_file`/`tls_priv_key_file`, all of which may also come as `config_json` or
    /// `config_b64` (a JSON object, as wasmCloud takes it). Keys are matched in any case.
    pub(crate) fn from_link(config: &BTreeMap<String, String>, defaults: &Settings) -> Result<Self, String> {
        let config = LinkConfig::parse(&expand_json(config)?, ROUTE_KEYS)?;
        let address = match (config.get("address"), config.get("port")) {
            (Some(address), _) => parse_address(address)?,
            (None, Some(port)) => SocketAddr::from((
                std::net::Ipv4Addr::LOCALHOST,
                port.parse::<u16>().map_err(|_| format!("invalid port {port:?}"))?,
            )),
            (None, None) => defaults.address,
        };
        let host = match config.get("host") {
            Some(host) => Some(normalize_host(host).ok_or_else(|| format!("invalid host {host:?}"))?),
            None => None,
        };
        let path = match config.get("path") {
            Some(path) => normalize_prefix(path)?,
            None => "/".to_owned(),
        };
        let cache_control = match config.get("cache_control") {
            Some(value) => Some(HeaderValue::from_str(value).map_err(|_| format!("invalid cache_control {value:?}"))?),
            None => None,
        };
        let cors_keys = [
            "cors_allowed_origins",
            "cors_allowed_methods",
            "cors_allowed_headers",
            "cors_exposed_headers",
            "cors_max_age_secs",
        ];
        let cors = if cors_keys.iter().any(|k| config.has(k)) {
            let [origins, methods, headers, exposed, max_age] = cors_keys.map(|k| config.get(k));
            Some(Arc::new(Cors::from_values(origins, methods, headers, exposed, max_age)?))
        } else {
            None
        };
        let tls = match (config.get("tls_cert_file"), config.get("tls_priv_key_file")) {
            (Some(cert), Some(key)) => Some(TlsFiles { cert: cert.into(), key: key.into() }),
            (None, None) => None,
            _ => return Err("for TLS, set both tls_cert_file and tls_priv_key_file".into()),
        };
        Ok(Self {
            address,
            host,
            path,
            timeout: parse_ms(&config, "timeout_ms")?.unwrap_or(defaults.timeout),
            max_body: parse_u64(&config, "max_body_bytes")?.unwrap_or(defaults.max_body),
            readonly: config.flag("readonly_mode", false)?,
            cache_control,
            cors,
            tls,
        })
    }
}

/// `config_json` or `config_b64` (base64 of the same JSON) spread into keys, as wasmCloud's
/// http-server reads them: top-level fields by name, `tls` and `cors` objects as `tls_*` and
/// `cors_*`, lists as JSON text. Keys given directly win.
fn expand_json(config: &BTreeMap<String, String>) -> Result<BTreeMap<String, String>, String> {
    let find = |name: &str| config.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.trim());
    let text = match (find("config_b64"), find("config_json")) {
        (Some(b64), _) => {
            use base64::Engine as _;
            let engine = base64::engine::general_purpose::GeneralPurpose::new(
                &base64::alphabet::STANDARD,
                base64::engine::GeneralPurposeConfig::new()
                    .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
            );
            let bytes = engine.decode(b64).map_err(|e| format!("invalid config_b64: {e}"))?;
            String::from_utf8(bytes).map_err(|_| "config_b64 is not UTF-8 JSON".to_owned())?
        }
        (None, Some(json)) => json.to_owned(),
        (None, None) => return Ok(config.clone()),
    };
    let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| format!("invalid config_json: {e}"))?;
    let serde_json::Value::Object(fields) = value else { return Err("config_json must be a JSON object".into()) };
    let mut out: BTreeMap<String, String> = config
        .iter()
        .filter(|(k, _)| !matches!(k.to_ascii_lowercase().as_str(), "config_b64" | "config_json"))
        .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
        .collect();
    let text_of = |value: &serde_json::Value| match value {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Null => None,
        other => Some(other.to_string()),
    };
    for (key, value) in fields {
        match (key.as_str(), &value) {
            ("tls" | "cors", serde_json::Value::Object(inner)) => {
                for (name, value) in inner {
                    if let Some(text) = text_of(value) {
                        out.entry(format!("{key}_{name}")).or_insert(text);
                    }
                }
            }
            _ => {
                if let Some(text) = text_of(&value) {
                    out.entry(key.to_ascii_lowercase()).or_insert(text);
                }
            }
        }
    }
    Ok(out)
}

fn parse_address(text: &str) -> Result<SocketAddr, String> {
    text.trim().parse().map_err(|e| format!("invalid address {text:?} (expected IP:PORT): {e}"))
}

fn parse_u64(config: &impl Lookup, key: &str) -> Result<Option<u64>, String> {
    config.value(key).map(|v| v.trim().parse::<u64>().map_err(|e| format!("invalid {key} {v:?}: {e}"))).transpose()
}

/// A settings map the parsers read from: the provider's start-up config or a link's.
trait Lookup {
    fn value(&self, key: &str) -> Option<&str>;
}

impl Lookup for BTreeMap<String, String> {
    fn value(&self, key: &str) -> Option<&str> {
        self.get(key).map(String::as_str)
    }
}

impl Lookup for LinkConfig {
    fn value(&self, key: &str) -> Option<&str> {
        self.get(key)
    }
}

fn parse_ms(config: &impl Lookup, key: &str) -> Result<Option<Duration>, String> {
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
    fn wasmclouds_settings_keep_their_meaning() {
        let defaults = Settings::from_config(&BTreeMap::new()).unwrap();
        let route = RouteConfig::from_link(
            &cfg(&[("PORT", "8081"), ("readonly_mode", "true"), ("cache_control", "max-age=60")]),
            &defaults,
        )
        .unwrap();
        assert_eq!(route.address, "127.0.0.1:8081".parse().unwrap());
        assert!(route.readonly);
        assert_eq!(route.cache_control.as_ref().map(|v| v.to_str().unwrap()), Some("max-age=60"));
        assert!(route.cors.is_none(), "no cors_* key, no CORS");
        let json = r#"{"address": "0.0.0.0:9001", "timeout_ms": 2500, "cors": {"allowed_origins": ["https://a.example"]}, "tls": {"cert_file": "/c.pem", "priv_key_file": "/k.pem"}}"#;
        let route = RouteConfig::from_link(&cfg(&[("config_json", json), ("path", "/x")]), &defaults).unwrap();
        assert_eq!(route.address, "0.0.0.0:9001".parse().unwrap());
        assert_eq!(route.timeout, Duration::from_millis(2500));
        assert_eq!(route.path, "/x");
        assert!(route.cors.is_some());
        assert_eq!(route.tls, Some(TlsFiles { cert: "/c.pem".into(), key: "/k.pem".into() }));
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD_NO_PAD.encode(r#"{"readonly_mode": true}"#);
        assert!(RouteConfig::from_link(&cfg(&[("config_b64", &b64)]), &defaults).unwrap().readonly);
        for bad in [
            cfg(&[("tls_cert_file", "/c.pem")]),
            cfg(&[("config_json", "[1]")]),
            cfg(&[("config_b64", "%%%")]),
            cfg(&[("port", "http")]),
            cfg(&[("cors_allowed_origins", "ftp://x")]),
            cfg(&[("cache_control", "a\nb")]),
        ] {
            assert!(RouteConfig::from_link(&bad, &defaults).is_err(), "{bad:?} accepted");
        }
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
