//! JetStream KV backend: one JetStream KV bucket per key-value bucket identifier, created on
//! first use. Keys NATS cannot hold verbatim are stored hex-encoded behind a `=` prefix.

use std::{collections::HashMap, sync::Mutex, time::Duration};

use async_nats::jetstream::{
    self,
    consumer::{AckPolicy, DeliverPolicy, pull},
    context::{GetStreamError, GetStreamErrorKind, KeyValueError, KeyValueErrorKind},
    kv,
};
use ferry_provider_sdk::{
    Backoff, ComponentStoreNames, ErrorKind, LinkConnection, RpcError, async_nats, is_reserved_store_name,
};
use futures::StreamExt as _;
use tracing::warn;

use super::{Backend, Change, Changes, HEALTH_TIMEOUT, PAGE_SIZE, parse_counter};

/// A listing's consumer is removed after the page; should that fail, the server drops it after
/// this long unused.
const LISTING_CONSUMER_IDLE: Duration = Duration::from_secs(30);
/// How long a page waits for entries the stream has not delivered yet.
const LISTING_FETCH_WAIT: Duration = Duration::from_secs(1);

/// How many times a page of a listing is read before its failure is the listing's.
const LISTING_ATTEMPTS: u32 = 4;
/// How long the first read of a failed page waits; each next waits as much longer.
const LISTING_RETRY_AFTER: Duration = Duration::from_millis(250);

/// How often an increment retries after losing a race with another writer.
const INCREMENT_ATTEMPTS: usize = 100;

pub(crate) struct NatsBackend {
    /// The link's connection (the lattice's, or its own, which it keeps open).
    connection: LinkConnection,
    js: jetstream::Context,
    names: ComponentStoreNames,
    /// JetStream replicas of the buckets it creates.
    replicas: usize,
    /// Whether a missing bucket is created (else it is `no-such-store`).
    auto_create: bool,
    /// Opened buckets by bucket identifier, so each call does not look the bucket up again.
    stores: Mutex<HashMap<String, kv::Store>>,
}

impl NatsBackend {
    pub(crate) fn new(
        connection: LinkConnection,
        names: ComponentStoreNames,
        replicas: usize,
        auto_create: bool,
    ) -> Self {
        Self {
            js: connection.jetstream(),
            connection,
            names,
            replicas,
            auto_create,
            stores: Mutex::new(HashMap::new()),
        }
    }

    /// For a link that may not create its bucket: that the bucket every identifier maps to
    /// exists, so the link fails now rather than its first call (as wasmCloud's does).
    pub(crate) async fn check_bucket(&self) -> Result<(), String> {
        match (&self.names, self.auto_create) {
            (ComponentStoreNames::Fixed(name), false) => match self.store(name).await {
                Ok(_) => Ok(()),
                Err(err) => Err(err.message),
            },
            _ => Ok(()),
        }
    }

    /// The JetStream KV bucket behind `bucket`: the existing one (the primary name first, then
    /// the name from before lattice scoping), created under the primary name if neither exists.
    async fn store(&self, bucket: &str) -> Result<kv::Store, RpcError> {
        let bucket = if bucket.is_empty() { "default" } else { bucket };
        if let Some(store) = self.stores.lock().unwrap_or_else(|p| p.into_inner()).get(bucket) {
            return Ok(store.clone());
        }
        let name = self.checked_name(bucket, self.names.primary(bucket))?;
        let store = match self.existing(&name).await? {
            Some(store) => store,
            None => match self.legacy(bucket).await? {
                Some(store) => store,
                None if !self.auto_create => {
                    return Err(RpcError::new(
                        ErrorKind::NotFound,
                        format!(
                            "JetStream KV bucket {name} does not exist; create it, or set enable_bucket_auto_create=true on the link"
                        ),
                    ));
                }
                None => self
                    .js
                    .create_key_value(kv::Config {
                        bucket: name.clone(),
                        history: 1,
                        num_replicas: self.replicas,
                        ..Default::default()
                    })
                    .await
                    .map_err(|e| RpcError::provider(format!("cannot create JetStream KV bucket {name}: {e}")))?,
            },
        };
        self.stores.lock().unwrap_or_else(|p| p.into_inner()).insert(bucket.to_owned(), store.clone());
        Ok(store)
    }

    /// The bucket `bucket` had before buckets were scoped by lattice, if it exists.
    async fn legacy(&self, bucket: &str) -> Result<Option<kv::Store>, RpcError> {
        let Some(name) = self.names.legacy(bucket) else { return Ok(None) };
        let Ok(name) = self.checked_name(bucket, name) else { return Ok(None) };
        let store = self.existing(&name).await?;
        if store.is_some() {
            warn!(
                bucket,
                jetstream_bucket = %name,
                scoped = %self.names.primary(bucket),
                "using a key-value bucket from before buckets were scoped by lattice; move its keys to the scoped bucket, or set the link's bucket_prefix, to keep lattices apart"
            );
        }
        Ok(store)
    }

    /// The JetStream KV bucket `name`, or `None` when its stream does not exist.
    async fn existing(&self, name: &str) -> Result<Option<kv::Store>, RpcError> {
        match self.js.get_key_value(name).await {
            Ok(store) => Ok(Some(store)),
            Err(err) if stream_missing(&err) => Ok(None),
            Err(err) => {
                Err(RpcError::new(ErrorKind::Unavailable, format!("cannot open JetStream KV bucket {name}: {err}")))
            }
        }
    }

    /// `name`, the JetStream bucket for `bucket`, if NATS can hold it and it is not the lattice's.
    fn checked_name(&self, bucket: &str, name: String) -> Result<String, RpcError> {
        if name.len() > 200 || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            return Err(RpcError::bad_request(format!(
                "bucket {bucket:?}: JetStream bucket names may contain only letters, digits, '-' and '_'"
            )));
        }
        if is_reserved_store_name(&name) {
            warn!(bucket, jetstream_bucket = %name, "refused a reserved bucket name");
            return Err(RpcError::new(
                ErrorKind::Denied,
                format!("bucket {bucket:?} maps to {name:?}, a name reserved for the lattice and JetStream"),
            ));
        }
        Ok(name)
    }
}

/// Whether opening a bucket failed because its stream does not exist (and not for any other
/// reason, which must not lead to a new, empty bucket).
fn stream_missing(err: &KeyValueError) -> bool {
    err.kind() == KeyValueErrorKind::GetBucket
        && std::error::Error::source(err)
            .and_then(|source| source.downcast_ref::<GetStreamError>())
            .is_some_and(|e| matches!(e.kind(), GetStreamErrorKind::JetStream(j) if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND))
}

/// Encode a key for NATS: verbatim when it is a valid NATS KV key not starting with `=`.
fn encode_key(key: &str) -> String {
    let valid = !key.is_empty()
        && !key.starts_with(['.', '='])
        && !key.ends_with('.')
        && !key.contains("..")
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || b"-/_=.".contains(&b));
    if valid {
        key.to_owned()
    } else {
        let mut out = String::with_capacity(1 + key.len() * 2);
        out.push('=');
        for b in key.bytes() {
            out.push_str(&format!("{b:02x}"));
        }
        out
    }
}

fn decode_key(stored: &str) -> Option<String> {
    let Some(hex) = stored.strip_prefix('=') else { return Some(stored.to_owned()) };
    let bytes: Option<Vec<u8>> =
        (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok()).collect();
    String::from_utf8(bytes?).ok()
}

/// Run `write` (a put or a delete: doing it twice leaves what doing it once does) until it
/// succeeds, repeating it while it fails in a way `transient` accepts — the stream has no
/// leader for a moment (a cluster node died and its streams elect new ones), the request timed
/// out — for as long as [`Backoff::through_election`] allows. The invocation's deadline bounds it
/// too.
async fn repeated<T, E: std::fmt::Display, F: Future<Output = Result<T, E>>>(
    what: &str,
    mut write: impl FnMut() -> F,
    transient: impl Fn(&E) -> bool,
) -> Result<T, RpcError> {
    let mut backoff = Backoff::through_election();
    loop {
        match write().await {
            Ok(done) => return Ok(done),
            Err(err)
                if transient(&err)
                    && let Some(wait) = backoff.next_wait() =>
            {
                tracing::debug!(cause = %err, retry_in = ?wait, "JetStream KV {what} failed; repeating it");
                tokio::time::sleep(wait).await;
            }
            Err(err) => return Err(backend_err(what, err)),
        }
    }
}

fn backend_err(what: &str, err: impl std::fmt::Display) -> RpcError {
    RpcError::provider(format!("JetStream KV {what} failed: {err}"))
}

#[async_trait::async_trait]
impl Backend for NatsBackend {
    async fn watch(&self, bucket: &str, patterns: &[String]) -> Result<Changes, String> {
        let store = self.store(bucket).await.map_err(|e| e.message)?;
        // NATS key patterns: `*` one token, `>` the rest. Stored keys may be hex-escaped, so a
        // pattern matches keys NATS holds verbatim.
        let failed = |e: async_nats::jetstream::kv::WatchError| format!("cannot watch bucket {bucket:?}: {e}");
        let mut watches = Vec::new();
        if patterns.is_empty() {
            watches.push(store.watch_all().await.map_err(failed)?);
        }
        for pattern in patterns {
            watches.push(store.watch(pattern).await.map_err(failed)?);
        }
        let changes = futures::stream::select_all(watches).filter_map(|entry| async move {
            let entry = match entry {
                Ok(entry) => entry,
                Err(err) => return Some(Err(format!("watch ended: {err}"))),
            };
            // A key no component could have written (not valid hex after `=`) is not reported.
            let key = decode_key(&entry.key)?;
            Some(Ok(match entry.operation {
                kv::Operation::Put => Change { key, value: Some(entry.value.to_vec()) },
                kv::Operation::Delete | kv::Operation::Purge => Change { key, value: None },
            }))
        });
        Ok(changes.boxed())
    }

    async fn health(&self) -> Result<(), String> {
        match tokio::time::timeout(HEALTH_TIMEOUT, self.js.query_account()).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(err)) => Err(format!("JetStream does not answer: {err}")),
            Err(_) => Err(format!("JetStream did not answer within {HEALTH_TIMEOUT:?}")),
        }
    }

    async fn get(&self, bucket: &str, key: &str) -> Result<Option<Vec<u8>>, RpcError> {
        let store = self.store(bucket).await?;
        let value = store.get(encode_key(key)).await.map_err(|e| backend_err("get", e))?;
        Ok(value.map(|v| v.to_vec()))
    }

    async fn set(&self, bucket: &str, key: &str, value: Vec<u8>) -> Result<(), RpcError> {
        // A JetStream KV value is one message: the server's max payload is the backend's limit.
        let limit = self.connection.client.server_info().max_payload;
        if value.len() > limit {
            return Err(RpcError::new(
                ErrorKind::TooLarge,
                format!(
                    "a value of {} bytes exceeds the NATS server's max payload of {limit} bytes, the JetStream KV backend's limit per value",
                    value.len()
                ),
            ));
        }
        let store = self.store(bucket).await?;
        let (stored, value) = (encode_key(key), bytes::Bytes::from(value));
        repeated(
            "put",
            || store.put(&stored, value.clone()),
            |e: &kv::PutError| {
                // A stream without a leader answers the publish with "no responders" or an error in
                // its acknowledgement: both kinds are worth repeating; a bad key is not.
                e.kind() != kv::PutErrorKind::InvalidKey
            },
        )
        .await
        .map(drop)
    }

    async fn delete(&self, bucket: &str, key: &str) -> Result<(), RpcError> {
        let store = self.store(bucket).await?;
        let stored = encode_key(key);
        repeated(
            "delete",
            || store.delete(&stored),
            |e: &kv::DeleteError| matches!(e.kind(), kv::DeleteErrorKind::TimedOut | kv::DeleteErrorKind::Other),
        )
        .await
    }

    async fn exists(&self, bucket: &str, key: &str) -> Result<bool, RpcError> {
        Ok(self.get(bucket, key).await?.is_some())
    }

    async fn list_keys(&self, bucket: &str, cursor: Option<u64>) -> Result<(Vec<String>, Option<u64>), RpcError> {
        let store = self.store(bucket).await?;
        if store.status().await.map_err(|e| backend_err("status", e))?.history() != 1 {
            return list_keys_by_offset(&store, cursor).await;
        }
        list_keys_by_sequence(&store, cursor).await
    }

    async fn increment(&self, bucket: &str, key: &str, delta: u64) -> Result<u64, RpcError> {
        let store = self.store(bucket).await?;
        let stored = encode_key(key);
        for _ in 0..INCREMENT_ATTEMPTS {
            let entry = store.entry(&stored).await.map_err(|e| backend_err("get", e))?;
            let (current, revision) = match &entry {
                Some(e) if e.operation == kv::Operation::Put => (parse_counter(key, &e.value)?, Some(e.revision)),
                Some(e) => (0, Some(e.revision)),
                None => (0, None),
            };
            let next = current
                .checked_add(delta)
                .ok_or_else(|| RpcError::bad_request(format!("increment of {key:?} overflows u64")))?;
            let value = next.to_string().into_bytes().into();
            let written = match revision {
                Some(revision) => store.update(&stored, value, revision).await.is_ok(),
                None => store.create(&stored, value).await.is_ok(),
            };
            if written {
                return Ok(next);
            }
        }
        Err(RpcError::provider(format!("increment of {key:?} kept losing races after {INCREMENT_ATTEMPTS} attempts")))
    }
}

/// One page of a bucket that keeps one entry per key (as the provider creates them): the stream
/// holds exactly the current entry of each key, so a page is the next [`PAGE_SIZE`] entries from
/// the cursor's stream sequence, read headers only by a short-lived consumer. A key rewritten
/// while a listing runs moves forward and may be listed twice; none is missed.
///
/// A page whose consumer fails (the stream just moved to another leader after a cluster node
/// died, say) is read again, up to [`LISTING_ATTEMPTS`] times.
async fn list_keys_by_sequence(store: &kv::Store, cursor: Option<u64>) -> Result<(Vec<String>, Option<u64>), RpcError> {
    let mut attempt = 1;
    loop {
        match list_page_by_sequence(store, cursor).await {
            Err(err) if attempt < LISTING_ATTEMPTS => {
                warn!(bucket = %store.name, attempt, cause = %err, "listing a page failed; reading it again");
                tokio::time::sleep(LISTING_RETRY_AFTER * attempt).await;
                attempt += 1;
            }
            page => return page,
        }
    }
}

/// One attempt of [`list_keys_by_sequence`].
async fn list_page_by_sequence(store: &kv::Store, cursor: Option<u64>) -> Result<(Vec<String>, Option<u64>), RpcError> {
    let start_sequence = cursor.unwrap_or(1).max(1);
    let consumer = store
        .stream
        .create_consumer(pull::Config {
            deliver_policy: DeliverPolicy::ByStartSequence { start_sequence },
            filter_subject: format!("$KV.{}.>", store.name),
            headers_only: true,
            ack_policy: AckPolicy::None,
            inactive_threshold: LISTING_CONSUMER_IDLE,
            memory_storage: true,
            // Lives for one page: one copy, placed at once, with no election of its own.
            num_replicas: 1,
            ..Default::default()
        })
        .await
        .map_err(|e| backend_err("keys", e))?;
    let name = consumer.cached_info().name.clone();
    let page = read_page(&consumer).await;
    if let Err(err) = store.stream.delete_consumer(&name).await {
        tracing::debug!(consumer = %name, cause = %err, "listing consumer left to expire");
    }
    page
}

async fn read_page(consumer: &jetstream::consumer::PullConsumer) -> Result<(Vec<String>, Option<u64>), RpcError> {
    let mut messages = consumer
        .fetch()
        .max_messages(PAGE_SIZE)
        .expires(LISTING_FETCH_WAIT)
        .messages()
        .await
        .map_err(|e| backend_err("keys", e))?;
    let mut keys = Vec::new();
    let mut next = None;
    while let Some(message) = messages.next().await {
        let message = message.map_err(|e| backend_err("keys", e))?;
        let info = message.info().map_err(|e| backend_err("keys", e))?;
        next = (info.pending > 0).then_some(info.stream_sequence + 1);
        let deleted = message
            .headers
            .as_ref()
            .and_then(|h| h.get("KV-Operation"))
            .is_some_and(|op| op.as_str() == "DEL" || op.as_str() == "PURGE");
        if deleted {
            continue;
        }
        let stored = message.subject.split_once('.').and_then(|(_, rest)| rest.split_once('.')).map(|(_, key)| key);
        if let Some(key) = stored.and_then(decode_key) {
            keys.push(key);
        }
    }
    Ok((keys, next))
}

/// One page of a bucket that keeps history (created outside Ferry): every key, sorted, sliced
/// at the cursor's offset.
async fn list_keys_by_offset(store: &kv::Store, cursor: Option<u64>) -> Result<(Vec<String>, Option<u64>), RpcError> {
    let mut stream = store.keys().await.map_err(|e| backend_err("keys", e))?;
    let mut keys = Vec::new();
    while let Some(key) = stream.next().await {
        let key = key.map_err(|e| backend_err("keys", e))?;
        if let Some(key) = decode_key(&key) {
            keys.push(key);
        }
    }
    keys.sort_unstable();
    let start = usize::try_from(cursor.unwrap_or(0)).unwrap_or(usize::MAX).min(keys.len());
    let end = (start + PAGE_SIZE).min(keys.len());
    let next = (end < keys.len()).then_some(end as u64);
    Ok((keys.drain(start..end).collect(), next))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_through_the_nats_encoding() {
        for key in ["plain", "a/b.c-d_e=f", "with space", "ünïcode", "=leading", ".dot", "a..b", "trailing.", ""] {
            let stored = encode_key(key);
            assert!(stored.bytes().all(|b| b.is_ascii_alphanumeric() || b"-/_=.".contains(&b)), "{stored}");
            assert_eq!(decode_key(&stored).as_deref(), Some(key));
        }
        assert_eq!(encode_key("plain"), "plain");
    }
}
