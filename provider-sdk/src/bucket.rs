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

use crate::SdkError;

/// How many times a revision-checked write is retried after losing a race.
const WRITE_ATTEMPTS: usize = 5;

/// A handle on `FERRY_{lattice}_DATA`.
#[derive(Clone, Debug)]
pub struct LatticeBucket {
    kv: kv::Store,
}

impl LatticeBucket {
    /// Open the bucket, creating it when `create` is set and it does not exist.
    ///
    /// # Errors
    /// [`SdkError::Nats`] when JetStream is unavailable or the bucket is missing.
    pub async fn open(nats: &async_nats::Client, lattice: &str, create: bool) -> Result<Self, SdkError> {
        let js = jetstream::new(nats.clone());
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
                .map_err(|e| SdkError::Nats(format!("cannot create bucket {name}: {e}")))?
            }
            Err(err) => return Err(SdkError::Nats(format!("cannot open bucket {name}: {err}"))),
        };
        Ok(Self { kv })
    }

    /// Every link in the bucket with its revision.
    ///
    /// # Errors
    /// [`SdkError::Nats`] when the bucket cannot be read.
    pub async fn links(&self) -> Result<Vec<(Link, u64)>, SdkError> {
        let mut keys = self.kv.keys().await.map_err(SdkError::nats)?;
        let mut names = Vec::new();
        while let Some(key) = keys.next().await {
            let key = key.map_err(SdkError::nats)?;
            if key.starts_with(state::LINK_PREFIX) {
                names.push(key);
            }
        }
        let mut links = Vec::with_capacity(names.len());
        for key in names {
            if let Some(entry) = self.kv.entry(&key).await.map_err(SdkError::nats)? {
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
    /// [`SdkError::Nats`] when the write fails or keeps losing races.
    pub async fn put_link(&self, link: &Link) -> Result<u64, SdkError> {
        let key = state::link_key(link)?;
        let value = serde_json::to_vec(link).map_err(|e| SdkError::Startup(e.to_string()))?;
        self.put_checked(&key, value).await
    }

    /// Delete a link; returns the revision of the delete, or `None` if there was no such link.
    ///
    /// # Errors
    /// [`SdkError::Nats`] when the write fails.
    pub async fn del_link(&self, key: &LinkKey) -> Result<Option<(Link, u64)>, SdkError> {
        let link = Link {
            source_id: key.source_id.clone(),
            target_id: key.target_id.clone(),
            name: key.name.clone(),
            wit_namespace: key.wit_namespace.clone(),
            wit_package: key.wit_package.clone(),
            interfaces: vec!["x".into()],
            source_config: Vec::new(),
            target_config: Vec::new(),
        };
        let bucket_key = state::link_key(&link)?;
        let Some(entry) = self.kv.entry(&bucket_key).await.map_err(SdkError::nats)? else { return Ok(None) };
        if entry.operation != kv::Operation::Put {
            return Ok(None);
        }
        let old: Link =
            serde_json::from_slice(&entry.value).map_err(|e| SdkError::Nats(format!("unreadable link entry: {e}")))?;
        self.kv.delete_expect_revision(&bucket_key, Some(entry.revision)).await.map_err(SdkError::nats)?;
        let revision =
            self.kv.entry(&bucket_key).await.map_err(SdkError::nats)?.map_or(entry.revision + 1, |e| e.revision);
        Ok(Some((old, revision)))
    }

    /// The named config, if present.
    ///
    /// # Errors
    /// [`SdkError::Nats`] when the bucket cannot be read.
    pub async fn config(&self, name: &str) -> Result<Option<ConfigValues>, SdkError> {
        let key = state::config_key(name)?;
        match self.kv.entry(&key).await.map_err(SdkError::nats)? {
            Some(entry) if entry.operation == kv::Operation::Put => serde_json::from_slice(&entry.value)
                .map(Some)
                .map_err(|e| SdkError::Nats(format!("unreadable config {name}: {e}"))),
            _ => Ok(None),
        }
    }

    /// Store a named config; returns its revision.
    ///
    /// # Errors
    /// [`SdkError::Nats`] when the write fails.
    pub async fn put_config(&self, name: &str, values: &ConfigValues) -> Result<u64, SdkError> {
        let key = state::config_key(name)?;
        let value = serde_json::to_vec(values).map_err(|e| SdkError::Startup(e.to_string()))?;
        self.put_checked(&key, value).await
    }

    /// Delete a named config; returns whether it existed.
    ///
    /// # Errors
    /// [`SdkError::Nats`] when the write fails.
    pub async fn del_config(&self, name: &str) -> Result<bool, SdkError> {
        let existed = self.config(name).await?.is_some();
        if existed {
            self.kv.delete(state::config_key(name)?).await.map_err(SdkError::nats)?;
        }
        Ok(existed)
    }

    /// Merge the named configs in order (later names win); missing names are reported.
    ///
    /// # Errors
    /// [`SdkError::Nats`] when the bucket cannot be read.
    pub async fn resolve(&self, names: &[String]) -> Result<(BTreeMap<String, String>, Vec<String>), SdkError> {
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
    /// [`SdkError::Nats`] when the bucket cannot be read.
    pub async fn link_put(&self, link: Link, revision: u64) -> Result<LinkPut, SdkError> {
        let (source_config, _) = self.resolve(&link.source_config).await?;
        let (target_config, _) = self.resolve(&link.target_config).await?;
        Ok(LinkPut { link, source_config, target_config, revision })
    }

    /// Store a JSON document under `key`.
    ///
    /// # Errors
    /// [`SdkError::Nats`] when the write fails.
    pub async fn put_json(&self, key: &str, value: &serde_json::Value) -> Result<u64, SdkError> {
        self.put_checked(key, serde_json::to_vec(value).map_err(|e| SdkError::Startup(e.to_string()))?).await
    }

    /// Delete `key`.
    ///
    /// # Errors
    /// [`SdkError::Nats`] when the write fails.
    pub async fn delete(&self, key: &str) -> Result<(), SdkError> {
        self.kv.delete(key).await.map_err(SdkError::nats)
    }

    async fn put_checked(&self, key: &str, value: Vec<u8>) -> Result<u64, SdkError> {
        let value = bytes::Bytes::from(value);
        let mut last_err = String::new();
        for _ in 0..WRITE_ATTEMPTS {
            let current = self.kv.entry(key).await.map_err(SdkError::nats)?;
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
        Err(SdkError::Nats(format!("cannot write {key} after {WRITE_ATTEMPTS} attempts: {last_err}")))
    }
}

/// A change seen while watching the bucket: the current state first, then every update. Its
/// `Debug` output names config keys but never shows their values (they may be secrets).
#[derive(Clone, PartialEq, Eq)]
pub enum BucketChange {
    /// A link was put (created or updated) at a revision.
    Link(Link, u64),
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
            BucketChange::Link(link, revision) => f.debug_tuple("Link").field(&link.key()).field(revision).finish(),
            BucketChange::LinkDeleted(key) => f.debug_tuple("LinkDeleted").field(key).finish(),
            BucketChange::Config(name, values) => {
                f.debug_tuple("Config").field(name).field(&values.keys().collect::<Vec<_>>()).finish()
            }
            BucketChange::ConfigDeleted(name) => f.debug_tuple("ConfigDeleted").field(name).finish(),
        }
    }
}

impl LatticeBucket {
    /// Watch every key: first the current value of each, then changes as they happen.
    ///
    /// # Errors
    /// [`SdkError::Nats`] when the watch cannot be created.
    pub async fn watch(&self) -> Result<impl futures::Stream<Item = BucketChange> + Send + use<>, SdkError> {
        let watch = self.kv.watch_with_history(">").await.map_err(SdkError::nats)?;
        Ok(watch.filter_map(|entry| async move {
            let entry = match entry {
                Ok(entry) => entry,
                Err(err) => {
                    tracing::warn!(cause = %err, "lattice bucket watch error");
                    return None;
                }
            };
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
                    return Some(BucketChange::LinkDeleted(entry.key));
                }
                return match serde_json::from_slice(&entry.value) {
                    Ok(link) => Some(BucketChange::Link(link, entry.revision)),
                    Err(err) => {
                        tracing::warn!(key = %entry.key, cause = %err, "unreadable link entry");
                        None
                    }
                };
            }
            None
        }))
    }

    /// Every named config.
    ///
    /// # Errors
    /// [`SdkError::Nats`] when the bucket cannot be read.
    pub async fn config_names(&self) -> Result<Vec<String>, SdkError> {
        let mut keys = self.kv.keys().await.map_err(SdkError::nats)?;
        let mut names = Vec::new();
        while let Some(key) = keys.next().await {
            if let Some(name) = key.map_err(SdkError::nats)?.strip_prefix(state::CONFIG_PREFIX) {
                names.push(name.to_owned());
            }
        }
        Ok(names)
    }
}
