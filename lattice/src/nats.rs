//! NATS connections as Ferry makes them, and knowing when NATS has taken our subscriptions in.
//!
//! Every connection is made from [`NatsOptions`]: async-nats's own request timeout (10 s)
//! is off, because every Ferry request carries its own deadline and must be able to wait for
//! exactly that long, shorter or longer. JetStream contexts are made by [`jetstream`], which
//! bounds each JetStream request by [`JETSTREAM_TIMEOUT`] instead.
//!
//! A client's `flush` only empties its socket buffer; the server may not have processed the
//! subscriptions yet, and a request sent on another connection in that moment meets "no
//! responders". A process that announces it is ready (a host's component start, a provider's
//! "ready") first makes one round trip through the server on the same connection: the server
//! handles one connection's operations in order, so once the round trip returns, every earlier
//! subscription is live.

use std::{fmt, time::Duration};

use futures::StreamExt as _;

use crate::LatticeError;

/// How a process reaches NATS. Every Ferry process — host, provider, control client, a
/// provider's own backend connection — connects from one of these, so they all behave alike:
/// async-nats's own request timeout is off, reconnects are reported, credentials come from one
/// place and never reach a log.
#[derive(Clone, Default)]
#[non_exhaustive]
pub struct NatsOptions {
    /// Server URLs, tried in turn (a cluster's nodes).
    pub servers: Vec<String>,
    /// The connection's name, shown by the server's monitoring.
    pub name: String,
    /// How the connection authenticates.
    pub auth: NatsAuth,
    /// Messages a subscription buffers before the server counts it as slow (async-nats's
    /// default when `None`).
    pub subscription_capacity: Option<usize>,
    /// A PEM file of certificate authorities to trust for the server's TLS certificate, on top
    /// of the system's.
    pub tls_ca_file: Option<std::path::PathBuf>,
    /// The prefix of the connection's reply subjects (`_INBOX` when `None`), for accounts that
    /// allow only their own.
    pub inbox_prefix: Option<String>,
    /// A client certificate and its key (PEM files), for servers that verify clients (mTLS).
    pub tls_client: Option<(std::path::PathBuf, std::path::PathBuf)>,
}

/// How a process proves who it is to NATS and secures its connection, beyond the URL: what
/// hosts, providers and `ferry ctl` read from the same environment variables
/// ([`NatsSecurity::from_env`]), so one deployment's settings fit every process.
#[derive(Clone, Debug, Default)]
pub struct NatsSecurity {
    /// Credentials (none: the URL's, if any).
    pub auth: NatsAuth,
    /// Certificate authorities to trust for the server's certificate (PEM file).
    pub tls_ca_file: Option<std::path::PathBuf>,
    /// A client certificate and its key (PEM files), for mTLS.
    pub tls_client: Option<(std::path::PathBuf, std::path::PathBuf)>,
}

impl NatsSecurity {
    /// Read `FERRY_NATS_CREDS` (a `.creds` file), `FERRY_NATS_NKEY_FILE` (a user nkey seed in a
    /// file) or `FERRY_NATS_NKEY`, `FERRY_NATS_USER` with `FERRY_NATS_PASSWORD`,
    /// `FERRY_NATS_TOKEN`; `FERRY_NATS_TLS_CA`, and `FERRY_NATS_TLS_CERT` with
    /// `FERRY_NATS_TLS_KEY` (mTLS). Unset or empty variables count as absent.
    ///
    /// # Errors
    /// [`LatticeError::Invalid`] for two kinds of credentials at once, half a pair, or a seed
    /// file that cannot be read.
    pub fn from_env() -> Result<Self, LatticeError> {
        Self::from_lookup(|name| std::env::var(name).ok().filter(|v| !v.trim().is_empty()))
    }

    /// [`NatsSecurity::from_env`] over any source of variables.
    ///
    /// # Errors
    /// As [`NatsSecurity::from_env`].
    pub fn from_lookup(var: impl Fn(&str) -> Option<String>) -> Result<Self, LatticeError> {
        let invalid = |m: &str| LatticeError::Invalid(m.to_owned());
        let mut kinds = Vec::new();
        if let Some(path) = var("FERRY_NATS_CREDS") {
            kinds.push(NatsAuth::CredsFile(path.into()));
        }
        if let Some(path) = var("FERRY_NATS_NKEY_FILE") {
            let seed = std::fs::read_to_string(&path)
                .map_err(|e| LatticeError::Invalid(format!("cannot read FERRY_NATS_NKEY_FILE {path}: {e}")))?;
            kinds.push(NatsAuth::NkeySeed(seed.trim().to_owned()));
        } else if let Some(seed) = var("FERRY_NATS_NKEY") {
            kinds.push(NatsAuth::NkeySeed(seed.trim().to_owned()));
        }
        match (var("FERRY_NATS_USER"), var("FERRY_NATS_PASSWORD")) {
            (Some(user), Some(password)) => kinds.push(NatsAuth::UserPassword { user, password }),
            (None, None) => {}
            _ => return Err(invalid("FERRY_NATS_USER and FERRY_NATS_PASSWORD go together")),
        }
        if let Some(token) = var("FERRY_NATS_TOKEN") {
            kinds.push(NatsAuth::Token(token));
        }
        if kinds.len() > 1 {
            return Err(invalid("give one kind of NATS credentials: creds file, nkey, user and password, or token"));
        }
        let tls_client = match (var("FERRY_NATS_TLS_CERT"), var("FERRY_NATS_TLS_KEY")) {
            (Some(cert), Some(key)) => Some((cert.into(), key.into())),
            (None, None) => None,
            _ => return Err(invalid("FERRY_NATS_TLS_CERT and FERRY_NATS_TLS_KEY go together")),
        };
        Ok(Self {
            auth: kinds.pop().unwrap_or_default(),
            tls_ca_file: var("FERRY_NATS_TLS_CA").map(Into::into),
            tls_client,
        })
    }
}

/// The identity a provider keeps its components' data in JetStream with, when its lattice
/// identity may not use JetStream for that: `FERRY_STORE_NATS_CREDS` (a `.creds` file) or
/// `FERRY_STORE_NATS_NKEY_FILE` (an nkey seed file). `ferry nats-config` puts such users in an
/// account of their own, so component data and the lattice's buckets never share a JetStream.
///
/// # Errors
/// [`LatticeError::Invalid`] for both at once, or a seed file that cannot be read.
pub fn store_auth_from_env() -> Result<Option<NatsAuth>, LatticeError> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    match (var("FERRY_STORE_NATS_CREDS"), var("FERRY_STORE_NATS_NKEY_FILE")) {
        (Some(_), Some(_)) => {
            Err(LatticeError::Invalid("give FERRY_STORE_NATS_CREDS or FERRY_STORE_NATS_NKEY_FILE, not both".into()))
        }
        (Some(path), None) => Ok(Some(NatsAuth::CredsFile(path.into()))),
        (None, Some(path)) => {
            let seed = std::fs::read_to_string(&path)
                .map_err(|e| LatticeError::Invalid(format!("cannot read FERRY_STORE_NATS_NKEY_FILE {path}: {e}")))?;
            Ok(Some(NatsAuth::NkeySeed(seed.trim().to_owned())))
        }
        (None, None) => Ok(None),
    }
}

/// How a connection authenticates to NATS.
#[derive(Clone, Default)]
#[non_exhaustive]
pub enum NatsAuth {
    /// No credentials.
    #[default]
    None,
    /// A server token.
    Token(String),
    /// A user name and password.
    UserPassword {
        /// The user.
        user: String,
        /// The password.
        password: String,
    },
    /// An nkey seed (`SU…`), signing the server's nonce.
    NkeySeed(String),
    /// A `.creds` file (user JWT and seed), as `nsc` writes them.
    CredsFile(std::path::PathBuf),
    /// A user JWT and the seed that signs the server's nonce for it (a `.creds` file's two
    /// parts given apart).
    Jwt {
        /// The user JWT.
        jwt: String,
        /// The user's nkey seed (`SU…`).
        seed: String,
    },
}

impl fmt::Debug for NatsAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the secret itself: this ends up in logs.
        f.write_str(match self {
            NatsAuth::None => "none",
            NatsAuth::Token(_) => "token",
            NatsAuth::UserPassword { .. } => "user/password",
            NatsAuth::NkeySeed(_) => "nkey",
            NatsAuth::CredsFile(_) => "creds file",
            NatsAuth::Jwt { .. } => "jwt",
        })
    }
}

impl fmt::Debug for NatsOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let servers: Vec<String> = self.servers.iter().map(|s| ferry_proto::redact::url(s)).collect();
        f.debug_struct("NatsOptions")
            .field("servers", &servers)
            .field("name", &self.name)
            .field("auth", &self.auth)
            .field("subscription_capacity", &self.subscription_capacity)
            .field("tls_ca_file", &self.tls_ca_file)
            .field("inbox_prefix", &self.inbox_prefix)
            .field("tls_client", &self.tls_client)
            .finish()
    }
}

/// `url` without its credentials, and the credentials.
fn split_credentials(url: &str) -> (String, Option<NatsAuth>) {
    let (scheme, rest) = match url.find("://") {
        Some(i) => url.split_at(i + 3),
        None => ("", url),
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let Some(at) = rest[..end].rfind('@') else { return (url.to_owned(), None) };
    let auth = match rest[..at].split_once(':') {
        Some((user, password)) => NatsAuth::UserPassword { user: user.to_owned(), password: password.to_owned() },
        None => NatsAuth::Token(rest[..at].to_owned()),
    };
    (format!("{scheme}{}", &rest[at + 1..]), Some(auth))
}

/// How long one JetStream API request (a stream's info, a direct get, a bucket's creation) or a
/// publish's acknowledgement is waited for.
///
/// Ferry's connections have no request timeout of their own, so a JetStream context without one
/// would wait forever for a request that is never answered — one that reached a cluster node as
/// it died, or a stream leader's subscription in the moment it went away. Callers that retry
/// through an election ([`crate::backoff::Backoff::through_election`]) retry after this.
pub const JETSTREAM_TIMEOUT: Duration = Duration::from_secs(5);

/// A JetStream context on `client` (in JetStream domain `domain` when given) whose requests give
/// up after [`JETSTREAM_TIMEOUT`]. Every JetStream context Ferry uses is made here.
pub fn jetstream(client: &async_nats::Client, domain: Option<&str>) -> async_nats::jetstream::Context {
    let builder = async_nats::jetstream::context::ContextBuilder::new();
    match domain {
        Some(domain) => builder.domain(domain).timeout(JETSTREAM_TIMEOUT).build(client.clone()),
        None => builder.timeout(JETSTREAM_TIMEOUT).build(client.clone()),
    }
}

/// A connection and the handle that reports when it is established again.
#[derive(Debug, Clone)]
pub struct Connection {
    /// The client.
    pub client: async_nats::Client,
    /// Reports each reconnect, so what a process keeps in step with the server (its view of
    /// the lattice bucket) can resync.
    pub reconnects: Reconnects,
}

impl NatsOptions {
    /// Options for `servers` (one URL, or several separated by commas), named `name`.
    /// Credentials in a URL — `nats://user:password@host` or `nats://token@host` — become the
    /// connection's [`NatsAuth`] (async-nats itself ignores them) and are left out of the
    /// server list, so they reach no log.
    pub fn new(servers: &str, name: impl Into<String>) -> Self {
        let mut auth = NatsAuth::None;
        let servers = servers
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|url| {
                let (url, found) = split_credentials(url);
                if let (NatsAuth::None, Some(found)) = (&auth, found) {
                    auth = found;
                }
                url
            })
            .collect();
        Self { servers, name: name.into(), auth, ..Self::default() }
    }

    /// The same options under another connection name.
    #[must_use]
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The same options authenticating with `auth`.
    #[must_use]
    pub fn with_auth(mut self, auth: NatsAuth) -> Self {
        self.auth = auth;
        self
    }

    /// The same options secured by `security`: its credentials (when it has any) replace those
    /// of the URL, its TLS settings are added.
    #[must_use]
    pub fn secured(mut self, security: &NatsSecurity) -> Self {
        if !matches!(security.auth, NatsAuth::None) {
            self.auth = security.auth.clone();
        }
        if security.tls_ca_file.is_some() {
            self.tls_ca_file.clone_from(&security.tls_ca_file);
        }
        if security.tls_client.is_some() {
            self.tls_client.clone_from(&security.tls_client);
        }
        self
    }

    /// Reply subjects under `prefix` instead of `_INBOX` ([`ferry_proto::subject::inbox_prefix`]):
    /// a scoped NATS user may read its own replies only.
    #[must_use]
    pub fn with_inbox_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.inbox_prefix = Some(prefix.into());
        self
    }

    /// The same options with subscriptions buffering `capacity` messages.
    #[must_use]
    pub fn with_subscription_capacity(mut self, capacity: usize) -> Self {
        self.subscription_capacity = Some(capacity);
        self
    }

    /// The servers, secrets left out, for messages.
    pub fn display_servers(&self) -> String {
        self.servers.iter().map(|s| ferry_proto::redact::url(s)).collect::<Vec<_>>().join(",")
    }

    /// Connect.
    ///
    /// # Errors
    /// [`LatticeError::Nats`] when no server is given, the credentials cannot be read, or no
    /// server can be reached.
    pub async fn connect(&self) -> Result<Connection, LatticeError> {
        if self.servers.is_empty() {
            return Err(LatticeError::Invalid("no NATS server given".into()));
        }
        let (tx, rx) = tokio::sync::watch::channel(0u64);
        let mut options = async_nats::ConnectOptions::new().name(self.name.clone()).request_timeout(None);
        if let Some(capacity) = self.subscription_capacity {
            options = options.subscription_capacity(capacity);
        }
        options = match &self.auth {
            NatsAuth::None => options,
            NatsAuth::Token(token) => options.token(token.clone()),
            NatsAuth::UserPassword { user, password } => options.user_and_password(user.clone(), password.clone()),
            NatsAuth::NkeySeed(seed) => options.nkey(seed.clone()),
            NatsAuth::CredsFile(path) => options
                .credentials_file(path)
                .await
                .map_err(|e| LatticeError::Invalid(format!("cannot read NATS credentials {}: {e}", path.display())))?,
            NatsAuth::Jwt { jwt, seed } => {
                let key = std::sync::Arc::new(
                    nkeys::KeyPair::from_seed(seed)
                        .map_err(|e| LatticeError::Invalid(format!("invalid NATS user seed: {e}")))?,
                );
                options.jwt(jwt.clone(), move |nonce| {
                    let key = key.clone();
                    async move { key.sign(&nonce).map_err(async_nats::AuthError::new) }
                })
            }
        };
        if let Some(path) = &self.tls_ca_file {
            options = options.add_root_certificates(path.clone()).require_tls(true);
        }
        if let Some((cert, key)) = &self.tls_client {
            options = options.add_client_certificate(cert.clone(), key.clone()).require_tls(true);
        }
        if let Some(prefix) = &self.inbox_prefix {
            options = options.custom_inbox_prefix(prefix);
        }
        let options = options.event_callback(move |event| {
            let tx = tx.clone();
            async move {
                match event {
                    async_nats::Event::Connected => {
                        tx.send_modify(|n| *n += 1);
                    }
                    async_nats::Event::Disconnected => tracing::warn!("NATS connection lost; reconnecting"),
                    _ => {}
                }
            }
        });
        let client = options
            .connect(self.servers.as_slice())
            .await
            .map_err(|e| LatticeError::Nats(format!("cannot connect to {}: {e}", self.display_servers())))?;
        let mut reconnects = Reconnects { rx };
        reconnects.mark_seen();
        Ok(Connection { client, reconnects })
    }
}

/// Reports connections established since it last looked. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Reconnects {
    rx: tokio::sync::watch::Receiver<u64>,
}

impl Reconnects {
    /// Forget connections made so far (the first one, typically).
    pub fn mark_seen(&mut self) {
        self.rx.borrow_and_update();
    }

    /// Wait for the next connection; never returns once the connection is gone for good.
    pub async fn next(&mut self) {
        if self.rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Longest wait for the round trip.
const ROUND_TRIP_TIMEOUT: Duration = Duration::from_secs(10);

/// Return once the server has processed every subscription `client` made before this call.
///
/// # Errors
/// [`LatticeError::Nats`] when the connection fails or the server does not answer within 10 s.
pub async fn sync_subscriptions(client: &async_nats::Client) -> Result<(), LatticeError> {
    let inbox = client.new_inbox();
    let mut echo = client.subscribe(inbox.clone()).await.map_err(LatticeError::nats)?;
    client.publish(inbox, bytes::Bytes::new()).await.map_err(LatticeError::nats)?;
    client.flush().await.map_err(LatticeError::nats)?;
    let answered = tokio::time::timeout(ROUND_TRIP_TIMEOUT, echo.next()).await;
    let _ = echo.unsubscribe().await;
    match answered {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(LatticeError::Nats("the connection closed during a round trip to the server".into())),
        Err(_) => Err(LatticeError::Nats(format!("no round trip through the server within {ROUND_TRIP_TIMEOUT:?}"))),
    }
}

/// End a connection on the way out of a process: send what was published (async-nats's
/// `drain` only queues the drain and returns, so a process that exits right after it can lose
/// its last messages — a host's `host_stopped`, a provider's last replies), then drain it.
///
/// # Errors
/// [`LatticeError::Nats`] when the connection cannot be flushed within 5 s or drained.
pub async fn close(client: &async_nats::Client) -> Result<(), LatticeError> {
    let flushed = tokio::time::timeout(Duration::from_secs(5), client.flush()).await;
    let drained = client.drain().await.map_err(LatticeError::nats);
    match flushed {
        Ok(Ok(())) => drained,
        Ok(Err(err)) => Err(LatticeError::nats(err)),
        Err(_) => Err(LatticeError::Nats("could not send what was published within 5 s".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn security(vars: &[(&str, &str)]) -> Result<NatsSecurity, LatticeError> {
        NatsSecurity::from_lookup(|name| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| (*v).to_owned()))
    }

    #[test]
    fn security_takes_one_kind_of_credentials_and_whole_pairs() {
        assert!(matches!(security(&[]).unwrap().auth, NatsAuth::None));
        let user = security(&[("FERRY_NATS_USER", "u"), ("FERRY_NATS_PASSWORD", "p")]).unwrap();
        assert!(matches!(user.auth, NatsAuth::UserPassword { .. }));
        assert!(security(&[("FERRY_NATS_USER", "u")]).is_err());
        assert!(security(&[("FERRY_NATS_TOKEN", "t"), ("FERRY_NATS_CREDS", "/x.creds")]).is_err());
        assert!(security(&[("FERRY_NATS_TLS_CERT", "c.pem")]).is_err());
        let mtls = security(&[
            ("FERRY_NATS_TLS_CERT", "c.pem"),
            ("FERRY_NATS_TLS_KEY", "k.pem"),
            ("FERRY_NATS_TLS_CA", "ca.pem"),
        ])
        .unwrap();
        let options = NatsOptions::new("nats://user:pw@h:4222", "t").secured(&mtls);
        assert!(matches!(options.auth, NatsAuth::UserPassword { .. }), "the URL's credentials stay");
        assert!(options.tls_client.is_some() && options.tls_ca_file.is_some());
        let token =
            NatsOptions::new("nats://user:pw@h:4222", "t").secured(&security(&[("FERRY_NATS_TOKEN", "t")]).unwrap());
        assert!(matches!(token.auth, NatsAuth::Token(_)), "given credentials replace the URL's");
        assert!(!format!("{:?}", security(&[("FERRY_NATS_TOKEN", "sekrit")]).unwrap()).contains("sekrit"));
    }

    #[test]
    fn credentials_in_urls_become_the_connections_auth_and_leave_the_server_list() {
        let options = NatsOptions::new("nats://ferry:s3cret@10.0.0.1:4222, nats://10.0.0.2:4222", "t");
        assert_eq!(options.servers, ["nats://10.0.0.1:4222", "nats://10.0.0.2:4222"]);
        assert!(
            matches!(&options.auth, NatsAuth::UserPassword { user, password } if user == "ferry" && password == "s3cret")
        );
        let options = NatsOptions::new("nats://tok3n@127.0.0.1:4222", "t");
        assert_eq!(options.servers, ["nats://127.0.0.1:4222"]);
        assert!(matches!(&options.auth, NatsAuth::Token(t) if t == "tok3n"));
        assert!(!format!("{options:?}").contains("tok3n"));
        let options = NatsOptions::new("127.0.0.1:4222", "t");
        assert_eq!(options.servers, ["127.0.0.1:4222"]);
        assert!(matches!(options.auth, NatsAuth::None));
    }
}
