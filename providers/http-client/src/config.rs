//! Settings: the provider's own (its start-up config: which certificate authorities it trusts)
//! and each link's (its target config: where the component may send requests, and how long
//! each step may take).

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use ferry_provider_sdk::LinkConfig;

/// Time to establish a connection when neither the link nor the component says.
pub(crate) const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Time until the response head arrives when neither the link nor the component says.
pub(crate) const DEFAULT_FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest pause between two parts of a response body when neither says.
pub(crate) const DEFAULT_BETWEEN_BYTES_TIMEOUT: Duration = Duration::from_secs(30);
/// How long an idle pooled connection is kept.
pub(crate) const POOL_IDLE: Duration = Duration::from_secs(90);

/// Which certificate authorities the provider trusts for `https`, from its start-up config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TlsSettings {
    /// The system's roots (`load_native_certs`, default true).
    pub(crate) native: bool,
    /// More roots from a PEM file (`ssl_certs_file`).
    pub(crate) extra: Option<PathBuf>,
}

impl TlsSettings {
    /// Read the provider's config: `load_native_certs`, `ssl_certs_file` (wasmCloud's keys).
    pub(crate) fn from_config(config: &BTreeMap<String, String>) -> Result<Self, String> {
        // The provider's config may carry other settings; only these two are its own.
        let own: BTreeMap<String, String> = config
            .iter()
            .filter(|(k, _)| {
                let k = k.to_ascii_lowercase();
                k == "load_native_certs" || k == "ssl_certs_file" || k == "load_webpki_certs"
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let config = LinkConfig::parse(&own, &["load_native_certs", "ssl_certs_file", "load_webpki_certs"])?;
        if config.flag("load_webpki_certs", false)? {
            return Err("load_webpki_certs: no bundled roots here; the system's are used (load_native_certs), and ssl_certs_file adds more".into());
        }
        let settings = Self {
            native: config.flag("load_native_certs", true)?,
            extra: config.get("ssl_certs_file").map(PathBuf::from),
        };
        if !settings.native && settings.extra.is_none() {
            return Err(
                "load_native_certs=false needs ssl_certs_file: with no roots, no https request could succeed".into()
            );
        }
        Ok(settings)
    }
}

/// One link's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LinkSettings {
    /// Destinations the component may reach; `None` for any.
    pub(crate) allowed: Option<Vec<HostPattern>>,
    pub(crate) connect_timeout: Duration,
    pub(crate) first_byte_timeout: Duration,
    pub(crate) between_bytes_timeout: Duration,
}

impl LinkSettings {
    /// Read a link's target config: `allowed_hosts`, `connect_timeout_ms`,
    /// `first_byte_timeout_ms`, `between_bytes_timeout_ms`.
    pub(crate) fn from_link(config: &BTreeMap<String, String>) -> Result<Self, String> {
        let known = ["allowed_hosts", "connect_timeout_ms", "first_byte_timeout_ms", "between_bytes_timeout_ms"];
        let config = LinkConfig::parse(config, &known)?;
        let allowed = match config.get("allowed_hosts") {
            None | Some("*") => None,
            Some(list) => Some(
                list.split(',')
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                    .map(HostPattern::parse)
                    .collect::<Result<Vec<_>, _>>()?,
            ),
        };
        Ok(Self {
            allowed,
            connect_timeout: millis(&config, "connect_timeout_ms")?.unwrap_or(DEFAULT_CONNECT_TIMEOUT),
            first_byte_timeout: millis(&config, "first_byte_timeout_ms")?.unwrap_or(DEFAULT_FIRST_BYTE_TIMEOUT),
            between_bytes_timeout: millis(&config, "between_bytes_timeout_ms")?
                .unwrap_or(DEFAULT_BETWEEN_BYTES_TIMEOUT),
        })
    }

    /// Whether the link lets a request reach `host` on `port`.
    pub(crate) fn allows(&self, host: &str, port: u16) -> bool {
        self.allowed.as_ref().is_none_or(|patterns| patterns.iter().any(|p| p.matches(host, port)))
    }
}

/// One entry of `allowed_hosts`: `example.com`, `*.example.com` (any subdomain), an IP address,
/// each optionally with `:port` (any port when absent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HostPattern {
    host: String,
    subdomains: bool,
    port: Option<u16>,
}

impl HostPattern {
    fn parse(text: &str) -> Result<Self, String> {
        let invalid = || format!("invalid allowed_hosts entry {text:?} (host, *.domain or IP, optionally :port)");
        let (host, port) = if let Some(rest) = text.strip_prefix('[') {
            // [v6]:port
            let (host, after) = rest.split_once(']').ok_or_else(invalid)?;
            let port = match after.strip_prefix(':') {
                Some(port) => Some(port.parse::<u16>().map_err(|_| invalid())?),
                None if after.is_empty() => None,
                None => return Err(invalid()),
            };
            (host.to_owned(), port)
        } else {
            match text.rsplit_once(':') {
                Some((host, port)) if !host.contains(':') => {
                    (host.to_owned(), Some(port.parse::<u16>().map_err(|_| invalid())?))
                }
                _ => (text.to_owned(), None),
            }
        };
        let (host, subdomains) = match host.strip_prefix("*.") {
            Some(domain) => (domain.to_owned(), true),
            None => (host, false),
        };
        let valid = !host.is_empty()
            && host.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':'));
        if !valid {
            return Err(invalid());
        }
        Ok(Self { host: host.to_ascii_lowercase(), subdomains, port })
    }

    fn matches(&self, host: &str, port: u16) -> bool {
        let host = host.trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
        let host_ok = if self.subdomains {
            host.strip_suffix(&self.host).is_some_and(|prefix| prefix.ends_with('.') && prefix.len() > 1)
        } else {
            host == self.host
        };
        host_ok && self.port.is_none_or(|p| p == port)
    }
}

fn millis(config: &LinkConfig, key: &str) -> Result<Option<Duration>, String> {
    match config.get(key) {
        None => Ok(None),
        Some(v) => match v.parse::<u64>() {
            Ok(ms) if ms > 0 => Ok(Some(Duration::from_millis(ms))),
            _ => Err(format!("invalid {key} {v:?} (milliseconds above 0)")),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn allowed_hosts_match_names_subdomains_ips_and_ports() {
        let link = LinkSettings::from_link(&cfg(&[(
            "allowed_hosts",
            "api.example.com, *.internal.test, 127.0.0.1:8080, [::1]:9000",
        )]))
        .unwrap();
        assert!(link.allows("api.example.com", 443));
        assert!(link.allows("API.example.com", 80));
        assert!(!link.allows("example.com", 443));
        assert!(!link.allows("evil-api.example.com", 443));
        assert!(link.allows("a.internal.test", 443));
        assert!(link.allows("a.b.internal.test", 443));
        assert!(!link.allows("internal.test", 443));
        assert!(!link.allows("xinternal.test", 443));
        assert!(link.allows("127.0.0.1", 8080));
        assert!(!link.allows("127.0.0.1", 8081));
        assert!(link.allows("[::1]", 9000));
        assert!(LinkSettings::from_link(&cfg(&[])).unwrap().allows("anything.example", 1));
        assert!(LinkSettings::from_link(&cfg(&[("allowed_hosts", "*")])).unwrap().allows("x", 1));
        for bad in ["a b", "host:port", "*.", "[::1"] {
            assert!(LinkSettings::from_link(&cfg(&[("allowed_hosts", bad)])).is_err(), "{bad}");
        }
    }

    #[test]
    fn timeouts_and_unknown_keys() {
        let link =
            LinkSettings::from_link(&cfg(&[("connect_timeout_ms", "250"), ("FIRST_BYTE_TIMEOUT_MS", "1000")])).unwrap();
        assert_eq!(link.connect_timeout, Duration::from_millis(250));
        assert_eq!(link.first_byte_timeout, Duration::from_secs(1));
        assert_eq!(link.between_bytes_timeout, DEFAULT_BETWEEN_BYTES_TIMEOUT);
        assert!(LinkSettings::from_link(&cfg(&[("connect_timeout_ms", "0")])).is_err());
        assert!(LinkSettings::from_link(&cfg(&[("timeout", "1")])).unwrap_err().contains("timeout"));
    }

    #[test]
    fn tls_settings_take_wasmclouds_keys() {
        assert_eq!(TlsSettings::from_config(&cfg(&[])).unwrap(), TlsSettings { native: true, extra: None });
        let own = TlsSettings::from_config(&cfg(&[("ssl_certs_file", "/etc/ca.pem"), ("load_native_certs", "false")]));
        assert_eq!(own.unwrap(), TlsSettings { native: false, extra: Some("/etc/ca.pem".into()) });
        assert!(TlsSettings::from_config(&cfg(&[("load_native_certs", "false")])).is_err());
        assert!(TlsSettings::from_config(&cfg(&[("load_webpki_certs", "true")])).is_err());
    }
}
