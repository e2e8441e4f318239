//! The lattice's JetStream KV bucket, the source of truth for links and config. Hosts write
//! it; providers read their snapshot from it at start.

use std::collections::BTreeMap;

use async_nats::jetstream::{self, kv};
use ferry_proto::{
    link::{Link, LinkKey, LinkPut},
    state::{self, ConfigValues},
    subject,
};
use futures::StreamExt as _;

use crate::LatticeError;

/// How many times a revision-checked write is retried after losing a race.
const WRITE_ATTEMPTS: usize = 5;

/// A handle on `FERRY_{lattice}_DATA`.
#[derive(Clone, Debug)]
pub struct LatticeBucket {
    kv: kv::Store,
    js: jetstream::Context,
    nats: async_nats::Client,
    name: String,
}

impl LatticeBucket {
    /// Open the bucket, creating it when `create` is set and it does not exist.
    ///
    /// # Errors
    /// [`LatticeError::Nats`] when JetStream is unavailable or the bucket is missing.
    pub async fn open(nats: &async_nats::Client, lattice: &str, create: bool) -> Result<Self, LatticeError> {
        let js = crate::nats::jetstream(nats, None);
        let name = subject::data_bucket(lattice)?;
        let kv = match js.get_key_value(&name).await {
            Ok(kv) => kv,
            Err(err) if create => {
                tracing::debug!(bucket = %name, cause = %err, "creating lattice bucket");
                js.create_key_value(kv::Config {
                    bucket: name.clone(),
                    description: format!("Ferry lattice {lattice}: links, config, components"),
                    history: 5,
                    storage: jetstream::stream::StorageType::File,
                    ..Default::default()
                })
                .await
                .map_err(|e| LatticeError::Nats(format!("cannot create bucket {name}: {e}")))?
            }
            Err(err) => return Err(LatticeError::Nats(format!("cannot open bucket {name}: {err}"))),
        };
        Ok(Self { kv, js, nats: nats.clone(), name })
    }

    /// Every link in the bucket with its revision.
    ///
    /// # Errors
    /// [`LatticeError::Nats`] when the bucket cannot be read.
    pub async fn links(&self) -> Result<Vec<(Link, u64)>, LatticeError> {
        let mut keys = self.kv.keys().await.map_err(LatticeError::nats)?;
        let mut names = Vec::new();
        while let Some(key) = keys.next().await {
            let key = key.map_err(LatticeError::nats)?;
            if key.starts_with(state::LINK_PREFIX) {
                names.push(key);
            }
        }
        let mut links = Vec::with_capacity(names.len());
        for key in names {
            if let Some(entry) = self.kv.entry(&key).await.map_err(LatticeError::nats)? {
                if entry.operation != kv::Operation::Put {
                    continue;
                }
                match serde_json::from_slice::<Link>(&entry.value) {
                    Ok(link) => links.push((link, entry.revision)),
                    Err(err) => tracing::warn!(key, cause = %err, "skipping unreadable link entry"),
                }
            }
        }
        Ok(links)
    }

    /// Store `link`, creating or replacing it with a revision check; returns the new revision.
    ///
    /// # Errors
    /// [`LatticeError::Nats`] when the write fails or keeps losing races.
    pub async fn put_link(&self, link: &Link) -> Result<u64, LatticeError> {
        let key = state::link_key(link)?;
        let value = serde_json::to_vec(link).map_err(|e| LatticeError::Invalid(e.to_string()))?;
        self.put_checked(&key, value).await
    }

    /// Delete a link; returns the link and the revision of the delete itself (not whatever the
    /// key holds by the time the delete is done), or `None` if there was no such link.
    ///
    /// # Errors
    /// [`LatticeError::Nats`] when the write fails or a concurrent write changed the link first.
    pub async fn del_link(&self, key: &LinkKey) -> Result<Option<(Link, u64)>, LatticeError> {
        let bucket_key = state::link_key_of(key)?;
        let Some(entry) = self.kv.entry(&bucket_key).await.map_err(LatticeError::nats)? else { return Ok(None) };
        if entry.operation != kv::Operation::Put {
            return Ok(None);
        }
        let old: Link = serde_json::from_slice(&entry.value)
            .map_err(|e| LatticeError::Nats(format!("unreadable link entry: {e}")))?;
        let revision = self.delete_at(&bucket_key, Some(entry.revision)).await?;
        Ok(Some((old, revision)))
    }

    /// Write a delete marker for `key`, expecting `expected` as its current revision when
    /// given; returns the marker's revision from the server's acknowledgement.
    async fn delete_at(&self, key: &str, expected: Option<u64>) -> Result<u64, LatticeError> {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("KV-Operation", "DEL");
        if let Some(revision) = expected {
            headers.insert("Nats-Expected-Last-Subject-Sequence", revision.to_string().as_str());
        }
        let subject = format!("$KV.{}.{key}", self.name);
        let ack = self
            .js
            .publish_with_headers(subject, headers, bytes::Bytes::new())
            .await
            .map_err(LatticeError::nats)?
            .await
            .map_err(LatticeError::nats)?;
        Ok(ack.sequence)
    }

    /// The named config, if present.
    ///
    /// # Errors
    /// [`LatticeError::Nats`] when the bucket cannot be read.
    pub async fn config(&self, name: &str) -> Result<Option<ConfigValues>, LatticeError> {
        let key = state::config_key(name)?;
        match self.kv.entry(&key).await.map_err(LatticeError::nats)? {
            Some(entry) if entry.operation == kv::Operation::Put => serde_json::from_slice(&entry.value)
                .map(Some)
                .map_err(|e| LatticeError::Nats(format!("unreadable config {name}: {e}"))),
            _ => Ok(None),
        }
    }

    /// Store a named config; returns its revision.
    ///
    /// # Errors
    /// [`LatticeError::Nats`] when the write fails.
    pub async fn put_config(&self, name: &str, values: &ConfigValues) -> Result<u64, LatticeError> {
        let key = state::config_key(name)?;
        let value = serde_json::to_vec(values).map_err(|e| LatticeError::Invalid(e.to_string()))?;
        self.put_checked(&key, value).await
    }

    /// Delete a named config; returns the revision of the delete, or `None` if there was no
    /// such config.
    ///
    /// # Errors
    /// [`LatticeError::Nats`] when the write fails.
    pub async fn del_config(&self, name: &str) -> Result<Option<u64>, LatticeError> {
        let key = state::config_key(name)?;
        match self.kv.entry(&key).await.map_err(LatticeError::nats)? {
            Some(entry) if entry.operation == kv::Operation::Put => {
                self.delete_at(&key, Some(entry.revision)).await.map(Some)
            }
            _ => Ok(None),
        }
    }

    /// Merge the named configs in order (later names win); missing names are reported.
    ///
    /// # Errors
    /// [`LatticeError::Nats`] when the bucket cannot be read.
    pub async fn resolve(&self, names: &[String]) -> Result<(BTreeMap<String, String>, Vec<String>), LatticeError> {
        let mut merged = BTreeMap::new();
        let mut missing = Vec::new();
        for name in names {
            match self.config(name).await? {
                Some(values) => merged.extend(values),
                None => missing.push(name.clone()),
            }
        }
        Ok((merged, missing))
    }

    /// A link with its configs resolved, as providers receive it.
    ///
    /// # Errors
    /// [`LatticeError::Nats`] when the bucket cannot be read.
    pub async fn link_put(&self, link: Link, revision: u64) -> Result<LinkPut, LatticeError> {
        let (source_config, _) = self.resolve(&link.source_config).await?;
        let (target_config, _) = self.resolve(&link.target_config).await?;
        Ok(LinkPut { link, source_config, target_config, revision })
    }

    /// Store a JSON document under `key`.
    ///
    /// # Errors
    /// [`LatticeError::Nats`] when the write fails.
    pub async fn put_json(&self, key: &str, value: &serde_json::Value) -> Result<u64, LatticeError> {
        self.put_checked(key, serde_json::to_vec(value).map_err(|e| LatticeError::Invalid(e.to_string()))?).await
    }

    /// Delete `key`.
    ///
    /// # Errors
    /// [`LatticeError::Nats`] when the write fails.
    pub async fn delete(&self, key: &str) -> Result<(), LatticeError> {
        self.kv.delete(key).await.map_err(LatticeError::nats)
    }

    async fn put_checked(&self, key: &str, value: Vec<u8>) -> Result<u64, LatticeError> {
        let value = bytes::Bytes::from(value);
        let mut last_err = String::new();
        for _ in 0..WRITE_ATTEMPTS {
            let current = self.kv.entry(key).await.map_err(LatticeError::nats)?;
            let result = match current {
                Some(entry) => self.kv.update(key, value.clone(), entry.revision).await.map_err(|e| e.to_string()),
                None => self.kv.create(key, value.clone()).await.map_err(|e| e.to_string()),
            };
            match result {
                Ok(revision) => return Ok(revision),
                Err(err) => {
                    tracing::debug!(key, cause = %err, "revision-checked write lost a race; retrying");
                    last_err = err;
                }
            }
        }
        Err(LatticeError::Nats(format!("cannot write {key} after {WRITE_ATTEMPTS} attempts: {last_err}")))
    }
}

/// What one bucket entry says about links or config. Its `Debug` output names config keys but
/// never shows their values (they may be secrets).
#[derive(Clone, PartialEq, Eq)]
pub enum BucketChange {
    /// A link was put (created or updated).
    Link(Link),
    /// The link under this bucket key was deleted.
    LinkDeleted(String),
    /// A config was put.
    Config(String, ConfigValues),
    /// A config was deleted.
    ConfigDeleted(String),
}

impl std::fmt::Debug for BucketChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BucketChange::Link(link) => f.debug_tuple("Link").field(&link.key()).finish(),
            BucketChange::LinkDeleted(key) => f.debug_tuple("LinkDeleted").field(key).finish(),
            BucketChange::Config(name, values) => {
                f.debug_tuple("Config").field(name).field(&values.keys().collect::<Vec<_>>()).finish()
            }
            BucketChange::ConfigDeleted(name) => f.debug_tuple("ConfigDeleted").field(name).finish(),
        }
    }
}

/// One entry seen while watching the bucket: the current entry of every key first, then every
/// write as it happens, in revision order.
#[derive(Debug, Clone)]
pub struct BucketEvent {
    /// The bucket key.
    pub key: String,
    /// The entry's revision: the bucket's sequence number, shared by all keys.
    pub revision: u64,
    /// What it says about links or config; `None` for other keys and unreadable entries.
    pub change: Option<BucketChange>,
    /// Every entry that existed when the watch started has now been delivered.
    pub caught_up: bool,
}

/// Where the bucket stands: its last revision and how many entries it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BucketMark {
    /// The revision of the last write.
    pub last_revision: u64,
    /// Entries held (each key's retained history counts).
    pub entries: u64,
}

impl LatticeBucket {
    /// Where the bucket stands now, read from the server.
    ///
    /// # Errors
    /// [`LatticeError::Nats`] when the server does not answer.
    pub async fn mark(&self) -> Result<BucketMark, LatticeError> {
        let mut stream = self.kv.stream.clone();
        let info = stream.info().await.map_err(LatticeError::nats)?;
        Ok(BucketMark { last_revision: info.state.last_sequence, entries: info.state.messages })
    }

    /// Watch every key: first the current entry of each, then changes as they happen. An error
    /// item means the watch is no longer reliable: start a new one.
    ///
    /// # Errors
    /// [`LatticeError::Nats`] when the watch cannot be created.
    pub async fn watch(
        &self,
    ) -> Result<impl futures::Stream<Item = Result<BucketEvent, LatticeError>> + Send + use<>, LatticeError> {
        let watch = self.kv.watch_with_history(">").await.map_err(LatticeError::nats)?;
        Ok(watch.map(|entry| {
            let entry = entry.map_err(LatticeError::nats)?;
            let change = change_of(&entry);
            Ok(BucketEvent { caught_up: entry.delta == 0, key: entry.key, revision: entry.revision, change })
        }))
    }

    /// Watch the keys that start with `prefix` (`link.`) and no others: the current entry of
    /// each first, then changes as they happen; with the number of entries the watch found at
    /// its start (0: nothing to wait for). The consumer is named, so its filter is part of the
    /// JetStream API subject and a NATS account can allow exactly this read
    /// ([`ferry_proto::permissions`]): a provider follows links without being able to read config.
    /// An error item means the watch is no longer reliable: start a new one.
    ///
    /// # Errors
    /// [`LatticeError::Nats`] when the watch cannot be created.
    pub async fn watch_prefix(
        &self,
        prefix: &str,
    ) -> Result<(u64, impl futures::Stream<Item = Result<BucketEvent, LatticeError>> + Send + use<>), LatticeError>
    {
        let inbox = self.nats.new_inbox();
        let name = format!("ferry_watch_{}", inbox.rsplit('.').next().unwrap_or_default());
        let consumer = self
            .kv
            .stream
            .create_consumer(jetstream::consumer::push::OrderedConfig {
                name: Some(name),
                deliver_subject: inbox,
                description: Some(format!("Ferry: watch of {prefix}* keys")),
                filter_subject: format!("{}{prefix}>", self.kv.prefix),
                replay_policy: jetstream::consumer::ReplayPolicy::Instant,
                deliver_policy: jetstream::consumer::DeliverPolicy::LastPerSubject,
                ..Default::default()
            })
            .await
            .map_err(LatticeError::nats)?;
        let pending = consumer.cached_info().num_pending;
        let messages = consumer.messages().await.map_err(LatticeError::nats)?;
        let (bucket, key_prefix) = (self.name.clone(), self.kv.prefix.clone());
        Ok((
            pending,
            messages.map(move |message| {
                let message = message.map_err(LatticeError::nats)?;
                let info = message.info().map_err(LatticeError::nats)?;
                let (revision, delta, created) = (info.stream_sequence, info.pending, info.published);
                let operation = match message.headers.as_ref().and_then(|h| h.get("KV-Operation")).map(|v| v.as_str()) {
                    Some("DEL") => kv::Operation::Delete,
                    Some("PURGE") => kv::Operation::Purge,
                    _ => kv::Operation::Put,
                };
                let key = message.subject.strip_prefix(key_prefix.as_str()).unwrap_or(&message.subject).to_owned();
                let entry = kv::Entry {
                    bucket: bucket.clone(),
                    key,
                    value: message.payload.clone(),
                    revision,
                    delta,
                    created,
                    operation,
                    seen_current: delta == 0,
                };
                let change = change_of(&entry);
                Ok(BucketEvent { caught_up: delta == 0, key: entry.key, revision, change })
            }),
        ))
    }

    /// The JSON document under `key` with its revision; `None` when absent or deleted.
    ///
    /// # Errors
    /// [`LatticeError::Nats`] when the bucket cannot be read, [`LatticeError::Invalid`] when
    /// the entry is not a `T`.
    pub async fn get_json<T: serde::de::DeserializeOwned>(&self, key: &str) -> Result<Option<(T, u64)>, LatticeError> {
        match self.kv.entry(key).await.map_err(LatticeError::nats)? {
            Some(entry) if entry.operation == kv::Operation::Put => serde_json::from_slice(&entry.value)
                .map(|value| Some((value, entry.revision)))
                .map_err(|e| LatticeError::Invalid(format!("unreadable entry {key}: {e}"))),
            _ => Ok(None),
        }
    }

    /// Write `value` under `key` only if the key is at `revision` (`None`: absent or
    /// deleted); the new revision, or `None` when another write came first.
    ///
    /// # Errors
    /// [`LatticeError::Nats`] when the bucket cannot be written for another reason.
    pub async fn swap_json<T: serde::Serialize>(
        &self,
        key: &str,
        value: &T,
        revision: Option<u64>,
    ) -> Result<Option<u64>, LatticeError> {
        let bytes: bytes::Bytes = serde_json::to_vec(value).map_err(|e| LatticeError::Invalid(e.to_string()))?.into();
        let result = match revision {
            Some(revision) => self
                .kv
                .update(key, bytes, revision)
                .await
                .map_err(|e| (e.kind() == kv::UpdateErrorKind::WrongLastRevision, e.to_string())),
            None => self
                .kv
                .create(key, bytes)
                .await
                .map_err(|e| (e.kind() == kv::CreateErrorKind::AlreadyExists, e.to_string())),
        };
        match result {
            Ok(revision) => Ok(Some(revision)),
            Err((true, _)) => Ok(None),
            Err((false, err)) => Err(LatticeError::Nats(format!("cannot write {key}: {err}"))),
        }
    }

    /// Watch the keys matching `filter` (NATS wildcards): the current entry of each first, then
    /// every change, as (key, whether it is a put). An error item means the watch is no longer
    /// reliable: start a new one.
    ///
    /// # Errors
    /// [`LatticeError::Nats`] when the watch cannot be created.
    pub async fn watch_keys(
        &self,
        filter: &str,
    ) -> Result<impl futures::Stream<Item = Result<(String, bool), LatticeError>> + Send + use<>, LatticeError> {
        let watch = self.kv.watch_with_history(filter).await.map_err(LatticeError::nats)?;
        Ok(watch.map(|entry| {
            let entry = entry.map_err(LatticeError::nats)?;
            Ok((entry.key, entry.operation == kv::Operation::Put))
        }))
    }

    /// Every key that starts with `prefix`, sorted.
    ///
    /// # Errors
    /// [`LatticeError::Nats`] when the bucket cannot be read.
    pub async fn keys_with_prefix(&self, prefix: &str) -> Result<Vec<String>, LatticeError> {
        let mut keys = self.kv.keys().await.map_err(LatticeError::nats)?;
        let mut found = Vec::new();
        while let Some(key) = keys.next().await {
            let key = key.map_err(LatticeError::nats)?;
            if key.starts_with(prefix) {
                found.push(key);
            }
        }
        found.sort();
        Ok(found)
    }

    /// Every named config.
    ///
    /// # Errors
    /// [`LatticeError::Nats`] when the bucket cannot be read.
    pub async fn config_names(&self) -> Result<Vec<String>, LatticeError> {
        let mut keys = self.kv.keys().await.map_err(LatticeError::nats)?;
        let mut names = Vec::new();
        while let Some(key) = keys.next().await {
            if let Some(name) = key.map_err(LatticeError::nats)?.strip_prefix(state::CONFIG_PREFIX) {
                names.push(name.to_owned());
            }
        }
        Ok(names)
    }
}

/// What a bucket entry says about links or config.
fn change_of(entry: &kv::Entry) -> Option<BucketChange> {
    let put = entry.operation == kv::Operation::Put;
    if let Some(name) = entry.key.strip_prefix(state::CONFIG_PREFIX) {
        if !put {
            return Some(BucketChange::ConfigDeleted(name.to_owned()));
        }
        return match serde_json::from_slice(&entry.value) {
            Ok(values) => Some(BucketChange::Config(name.to_owned(), values)),
            Err(err) => {
                tracing::warn!(key = %entry.key, cause = %err, "unreadable config entry");
                None
            }
        };
    }
    if entry.key.starts_with(state::LINK_PREFIX) {
        if !put {
            return Some(BucketChange::LinkDeleted(entry.key.clone()));
        }
        return match serde_json::from_slice::<Link>(&entry.value) {
            Ok(link) if state::link_key(&link).is_ok_and(|k| k == entry.key) => Some(BucketChange::Link(link)),
            Ok(_) => {
                tracing::warn!(key = %entry.key, "link entry does not match its key; ignored");
                None
            }
            Err(err) => {
                tracing::warn!(key = %entry.key, cause = %err, "unreadable link entry");
                None
            }
        };
    }
    None
}
