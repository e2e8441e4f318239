//! Reading a link's config the way users coming from wasmCloud write it: keys matched in any
//! case (`ROOT`, `URL`), keys nobody knows refused with the list of the known ones, and the NATS
//! connection settings every NATS-backed wasmCloud provider reads (`cluster_uri(s)`,
//! `js_domain`, `client_jwt` + `client_seed`, `tls_ca` / `tls_ca_file`, `custom_inbox_prefix`),
//! parsed once here so each provider accepts them alike.

use std::{collections::BTreeMap, fmt, io::Write as _, path::PathBuf};

use ferry_lattice::{NatsAuth, NatsOptions, async_nats};

use crate::ProviderContext;

/// A link's config with its keys in lower case, every key checked against a known list.
#[derive(Clone, PartialEq, Eq)]
pub struct LinkConfig {
    values: BTreeMap<String, String>,
}

impl fmt::Debug for LinkConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Keys only: values can be credentials.
        f.debug_set().entries(self.values.keys()).finish()
    }
}

impl LinkConfig {
    /// Read `config`, refusing any key (in any case) that is not in `known`, and two keys that
    /// differ only in case.
    ///
    /// # Errors
    /// A reason naming the key and the keys that are known.
    pub fn parse(config: &BTreeMap<String, String>, known: &[&str]) -> Result<Self, String> {
        let mut values = BTreeMap::new();
        for (key, value) in config {
            let lower = key.to_ascii_lowercase();
            if !known.contains(&lower.as_str()) {
                let mut known = known.to_vec();
                known.sort_unstable();
                return Err(format!("unknown link setting {key:?} (known: {})", known.join(", ")));
            }
            if values.insert(lower, value.clone()).is_some() {
                return Err(format!("link setting {key:?} is given twice, in different cases"));
            }
        }
        Ok(Self { values })
    }

    /// The value of `key` (lower case), trimmed; `None` when absent or empty.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(|v| v.trim()).filter(|v| !v.is_empty())
    }

    /// The value of the first of `keys` that is set: one setting known under several names.
    pub fn first(&self, keys: &[&str]) -> Option<&str> {
        keys.iter().find_map(|key| self.get(key))
    }

    /// Whether `key` is set to a value that is not empty.
    pub fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// Whether `key` is given at all, even empty (an empty prefix asked for on purpose).
    pub fn is_given(&self, key: &str) -> bool {
        self.values.contains_key(key)
    }

    /// `key` read as a boolean (`true`/`false`, `yes`/`no`, `1`/`0`, any case); `default` when
    /// absent.
    ///
    /// # Errors
    /// When the value is none of those.
    pub fn flag(&self, key: &str, default: bool) -> Result<bool, String> {
        match self.get(key).map(str::to_ascii_lowercase).as_deref() {
            None => Ok(default),
            Some("true" | "yes" | "1") => Ok(true),
            Some("false" | "no" | "0") => Ok(false),
            Some(other) => Err(format!("invalid {key} {other:?} (true or false)")),
        }
    }
}

/// The keys [`LinkNats`] reads, to add to a provider's known keys.
pub const LINK_NATS_KEYS: &[&str] =
    &["js_domain", "client_jwt", "client_seed", "tls_ca", "tls_ca_file", "custom_inbox_prefix"];

/// Where a link's NATS-backed capability lives: the lattice's own NATS, or another NATS (or
/// account) the link names, with its own credentials and JetStream domain.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct LinkNats {
    /// Servers (comma-separated URLs) the link names; `None` for the lattice's.
    pub servers: Option<String>,
    /// The JetStream domain to use (a leaf node's hub, for example).
    pub js_domain: Option<String>,
    /// A user JWT and its seed.
    jwt: Option<(String, String)>,
    tls_ca: Option<TlsCa>,
    inbox_prefix: Option<String>,
}

#[derive(Clone, PartialEq, Eq)]
enum TlsCa {
    File(PathBuf),
    Pem(String),
}

impl fmt::Debug for LinkNats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LinkNats")
            .field("servers", &self.servers.as_deref().map(ferry_proto::redact::url))
            .field("js_domain", &self.js_domain)
            .field("jwt", &self.jwt.as_ref().map(|_| "set"))
            .field("tls_ca", &self.tls_ca.as_ref().map(|_| "set"))
            .field("inbox_prefix", &self.inbox_prefix)
            .finish()
    }
}

impl LinkNats {
    /// Read the NATS settings of `config`; the servers come from the first of `server_keys`
    /// that is set (`nats_url`, `cluster_uri`, …).
    ///
    /// # Errors
    /// A JWT without its seed (or the other way round), or an empty setting.
    pub fn from_config(config: &LinkConfig, server_keys: &[&str]) -> Result<Self, String> {
        let jwt = match (config.get("client_jwt"), config.get("client_seed")) {
            (Some(jwt), Some(seed)) => Some((jwt.to_owned(), seed.to_owned())),
            (None, None) => None,
            _ => return Err("client_jwt and client_seed go together: set both or neither".into()),
        };
        let tls_ca = match (config.get("tls_ca"), config.get("tls_ca_file")) {
            (Some(pem), _) => Some(TlsCa::Pem(pem.to_owned())),
            (None, Some(file)) => Some(TlsCa::File(PathBuf::from(file))),
            (None, None) => None,
        };
        Ok(Self {
            servers: config.first(server_keys).map(str::to_owned),
            js_domain: config.get("js_domain").map(str::to_owned),
            jwt,
            tls_ca,
            inbox_prefix: config.get("custom_inbox_prefix").map(str::to_owned),
        })
    }

    /// Whether the link needs a connection of its own (other servers, credentials, TLS roots
    /// or inbox prefix) rather than the lattice's.
    pub fn needs_own_connection(&self) -> bool {
        self.servers.is_some() || self.jwt.is_some() || self.tls_ca.is_some() || self.inbox_prefix.is_some()
    }

    /// The connection the link's capability uses: the lattice's, or a new one named `name` to
    /// the link's servers (the lattice's when it names none) with its settings.
    ///
    /// # Errors
    /// A reason for the link's rejection: the CA cannot be written or read, the seed is
    /// invalid, or no server answers.
    pub async fn connect(&self, ctx: &ProviderContext, name: &str) -> Result<LinkConnection, String> {
        if !self.needs_own_connection() {
            return Ok(LinkConnection { client: ctx.nats().clone(), js_domain: self.js_domain.clone(), _ca: None });
        }
        self.connect_own(ctx, name, None).await
    }

    /// The connection a link keeps its component's data in JetStream with: one of its own
    /// when the link has settings of its own ([`LinkNats::connect`]); otherwise the provider's
    /// store connection ([`ProviderContext::store_nats`]).
    ///
    /// # Errors
    /// As [`LinkNats::connect`].
    pub async fn connect_store(&self, ctx: &ProviderContext, name: &str) -> Result<LinkConnection, String> {
        if self.needs_own_connection() {
            return self.connect_own(ctx, name, None).await;
        }
        Ok(LinkConnection { client: ctx.store_nats().await?, js_domain: self.js_domain.clone(), _ca: None })
    }

    /// A new connection named `name` with the link's settings, to its servers or the
    /// lattice's, whose subscriptions buffer `capacity` messages (async-nats's default when
    /// `None`): for a link whose subscriptions should not share the lattice connection's
    /// buffer.
    ///
    /// # Errors
    /// As [`LinkNats::connect`].
    pub async fn connect_own(
        &self,
        ctx: &ProviderContext,
        name: &str,
        capacity: Option<usize>,
    ) -> Result<LinkConnection, String> {
        let servers = self.servers.as_deref().unwrap_or_else(|| ctx.nats_url());
        let mut options = NatsOptions::new(servers, name);
        if self.servers.is_none() {
            // The lattice's own NATS: as the provider itself connects there, with its
            // credentials, TLS settings and reply subjects.
            let security = ferry_lattice::NatsSecurity::from_env().map_err(|e| e.to_string())?;
            options = options.secured(&security);
            options.inbox_prefix = ferry_proto::subject::inbox_prefix(ctx.lattice(), ctx.provider_id()).ok();
        }
        options.subscription_capacity = capacity;
        if let Some((jwt, seed)) = &self.jwt {
            options = options.with_auth(NatsAuth::Jwt { jwt: jwt.clone(), seed: seed.clone() });
        }
        let mut ca_file = None;
        options.tls_ca_file = match &self.tls_ca {
            Some(TlsCa::File(path)) => Some(path.clone()),
            Some(TlsCa::Pem(pem)) => {
                // async-nats reads roots from a file, on every (re)connect: the file lives as
                // long as the connection.
                let mut file = tempfile::NamedTempFile::new().map_err(|e| format!("cannot write tls_ca: {e}"))?;
                file.write_all(pem.as_bytes()).map_err(|e| format!("cannot write tls_ca: {e}"))?;
                let path = file.path().to_path_buf();
                ca_file = Some(file);
                Some(path)
            }
            None => options.tls_ca_file.take(),
        };
        if self.inbox_prefix.is_some() {
            options.inbox_prefix.clone_from(&self.inbox_prefix);
        }
        let connection = options
            .connect()
            .await
            .map_err(|e| format!("cannot connect to NATS at {}: {e}", ferry_proto::redact::url(servers)))?;
        Ok(LinkConnection { client: connection.client, js_domain: self.js_domain.clone(), _ca: ca_file })
    }
}

/// A link's NATS connection ([`LinkNats::connect`]), with the JetStream domain it uses.
#[derive(Debug)]
pub struct LinkConnection {
    /// The client.
    pub client: async_nats::Client,
    js_domain: Option<String>,
    _ca: Option<tempfile::NamedTempFile>,
}

impl LinkConnection {
    /// A JetStream context on the link's domain, whose requests give up after
    /// [`JETSTREAM_TIMEOUT`](ferry_lattice::nats::JETSTREAM_TIMEOUT) unless set otherwise.
    pub fn jetstream(&self) -> async_nats::jetstream::Context {
        ferry_lattice::nats::jetstream(&self.client, self.js_domain.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn keys_are_matched_in_any_case_and_unknown_ones_refused() {
        let config = LinkConfig::parse(&cfg(&[("ROOT", "/data"), ("Flag", "yes")]), &["root", "flag"]).unwrap();
        assert_eq!(config.get("root"), Some("/data"));
        assert_eq!(config.flag("flag", false), Ok(true));
        assert_eq!(config.flag("other", false), Ok(false));
        let err = LinkConfig::parse(&cfg(&[("rooot", "/data")]), &["root", "flag"]).unwrap_err();
        assert!(err.contains("\"rooot\"") && err.contains("flag, root"), "{err}");
        assert!(LinkConfig::parse(&cfg(&[("root", "a"), ("ROOT", "b")]), &["root"]).is_err());
        let config = LinkConfig::parse(&cfg(&[("flag", "maybe")]), &["flag"]).unwrap();
        assert!(config.flag("flag", false).is_err());
    }

    #[test]
    fn nats_settings_are_read_as_wasmcloud_writes_them() {
        let known: Vec<&str> = ["cluster_uri"].iter().chain(LINK_NATS_KEYS).copied().collect();
        let config = LinkConfig::parse(&cfg(&[("js_domain", "hub")]), &known).unwrap();
        let nats = LinkNats::from_config(&config, &["cluster_uri"]).unwrap();
        assert!(!nats.needs_own_connection());
        assert_eq!(nats.js_domain.as_deref(), Some("hub"));
        let config = LinkConfig::parse(&cfg(&[("cluster_uri", "nats://other:4222")]), &known).unwrap();
        assert!(LinkNats::from_config(&config, &["cluster_uri"]).unwrap().needs_own_connection());
        let config = LinkConfig::parse(&cfg(&[("client_jwt", "eyJ")]), &known).unwrap();
        assert!(LinkNats::from_config(&config, &["cluster_uri"]).is_err());
        let config = LinkConfig::parse(&cfg(&[("client_jwt", "eyJ"), ("client_seed", "SUA")]), &known).unwrap();
        let nats = LinkNats::from_config(&config, &["cluster_uri"]).unwrap();
        assert!(nats.needs_own_connection());
        assert!(!format!("{nats:?}").contains("SUA"), "the seed reached Debug");
    }
}
