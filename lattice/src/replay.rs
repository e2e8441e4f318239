//! The lattice-wide replay record: state-changing invocations are claimed in a JetStream KV
//! bucket before they run, so a captured one replayed to another member of the queue group (or
//! to a process started since) finds its claim and is refused.
//!
//! A process's own [`ferry_proto::auth::ReplayGuard`] catches replays to itself for free; this
//! record costs one JetStream round trip, so only invocations that change state take it
//! ([`ferry_proto::is_read_only`] says which do not). Calls a component makes while serving an
//! invocation carry its id as their cause, so a replayed component call, run again on another
//! host, makes calls whose claims already exist.

use std::time::Duration;

use async_nats::jetstream::{
    self,
    kv::{self, CreateErrorKind},
};
use ferry_proto::{ErrorKind, RpcError, auth::DEFAULT_REPLAY_WINDOW_MS, delivery::REPLAYED, subject};
use sha2::{Digest as _, Sha256};
use tracing::{debug, warn};

use crate::backoff::Backoff;

/// How long a claim is kept: an invocation can pass the freshness check up to one window after
/// its issue time, and clocks may differ by up to another window.
pub const CLAIM_LIFETIME: Duration = Duration::from_millis(4 * DEFAULT_REPLAY_WINDOW_MS);

/// The record of one lattice, opened (or created) on first use. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct ReplayRecord {
    nats: async_nats::Client,
    lattice: String,
    store: std::sync::Mutex<Option<kv::Store>>,
}

impl ReplayRecord {
    /// The record of `lattice`, reached through `nats`.
    pub fn new(nats: async_nats::Client, lattice: &str) -> Self {
        Self { nats, lattice: lattice.to_owned(), store: std::sync::Mutex::new(None) }
    }

    /// Claim `key` (an invocation's [`replay_key`](ferry_proto::envelope::Invocation::replay_key))
    /// for the one run it may have.
    ///
    /// Each claim writes a token of its own, so an attempt whose write landed though its
    /// acknowledgement was lost (a cluster node died under it) is known as this claim's own when
    /// the next attempt finds the key taken, not mistaken for a replay.
    ///
    /// # Errors
    /// [`ErrorKind::Denied`] when it was claimed before (a replay), [`ErrorKind::Unavailable`]
    /// when JetStream cannot be reached: the invocation must then not run, since nothing could
    /// tell a replay from the original.
    pub async fn claim(&self, key: &str) -> Result<(), RpcError> {
        let (record, token) = (record_key(key), bytes::Bytes::from(uuid::Uuid::new_v4().simple().to_string()));
        let mut backoff = Backoff::through_election();
        let mut reopen = false;
        loop {
            let failed = match self.try_claim(&record, &token, reopen).await {
                Ok(true) => return Ok(()),
                Ok(false) => {
                    return Err(RpcError::new(
                        ErrorKind::Denied,
                        format!("{REPLAYED} {key} (already carried out on the lattice)"),
                    ));
                }
                Err(failed) => failed,
            };
            // The record lives in memory: a NATS server that restarted lost it, and the handle
            // is stale, so it is opened (or created) again; on a cluster, the record's stream
            // may be electing a new leader for a few seconds.
            if !reopen {
                debug!(cause = %failed, "claim failed; opening the record again");
                reopen = true;
            } else if let Some(wait) = backoff.next_wait() {
                debug!(cause = %failed, retry_in = ?wait, "claim failed; trying again");
                tokio::time::sleep(wait).await;
            } else {
                warn!(cause = %failed, "cannot record a state-changing invocation; refusing it");
                return Err(RpcError::new(
                    ErrorKind::Unavailable,
                    format!("the lattice's replay record is unavailable: {failed}"),
                ));
            }
        }
    }

    /// One attempt at claiming `record` with `token`: whether it is this claim's (`false`: another
    /// claim's), or why JetStream did not say.
    async fn try_claim(&self, record: &str, token: &bytes::Bytes, reopen: bool) -> Result<bool, String> {
        let store = self.store(reopen).await.map_err(|e| e.message)?;
        match store.create(record, token.clone()).await {
            Ok(_) => Ok(true),
            Err(err) if err.kind() == CreateErrorKind::AlreadyExists => match store.get(record).await {
                Ok(Some(held)) => Ok(held == *token),
                // Gone again (expired) since: the next attempt creates it.
                Ok(None) => Err("the claim vanished as it was read".to_owned()),
                Err(err) => Err(err.to_string()),
            },
            Err(err) => Err(err.to_string()),
        }
    }

    /// Open the record now (creating it when it does not exist), rather than on the first claim.
    ///
    /// # Errors
    /// [`ErrorKind::Unavailable`] when JetStream cannot be reached.
    pub async fn open(&self) -> Result<(), RpcError> {
        self.store(false).await.map(drop)
    }

    /// The record's bucket: the one opened before unless `fresh`, else opened (or created) now.
    async fn store(&self, fresh: bool) -> Result<kv::Store, RpcError> {
        if !fresh && let Some(store) = self.store.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone() {
            return Ok(store);
        }
        let name = subject::seen_bucket(&self.lattice).map_err(RpcError::from)?;
        let js = crate::nats::jetstream(&self.nats, None);
        let store = match js.get_key_value(&name).await {
            Ok(store) => store,
            Err(_) => {
                debug!(bucket = %name, "creating the lattice's replay record");
                js.create_key_value(kv::Config {
                    bucket: name.clone(),
                    description: format!("Ferry lattice {}: state-changing invocations carried out", self.lattice),
                    history: 1,
                    max_age: CLAIM_LIFETIME,
                    storage: jetstream::stream::StorageType::Memory,
                    ..Default::default()
                })
                .await
                .map_err(|e| {
                    RpcError::new(ErrorKind::Unavailable, format!("cannot create the replay record {name}: {e}"))
                })?
            }
        };
        *self.store.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(store.clone());
        Ok(store)
    }
}

/// A valid KV key for any replay key: as it is when it can be one (ids and causes are hex and
/// dots), else its SHA-256 in hex.
fn record_key(key: &str) -> String {
    let valid = !key.is_empty()
        && key.len() <= 200
        && !key.starts_with('.')
        && !key.ends_with('.')
        && !key.contains("..")
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_');
    if valid { key.to_owned() } else { Sha256::digest(key.as_bytes()).iter().map(|b| format!("{b:02x}")).collect() }
}

#[cfg(test)]
mod tests {
    #[test]
    fn record_keys_are_valid_kv_keys() {
        assert_eq!(super::record_key("0123abcd.3"), "0123abcd.3");
        for odd in ["a b", ".x", "x.", "a..b", "ä", "*", ">"] {
            let key = super::record_key(odd);
            assert_eq!(key.len(), 64, "{odd}");
            assert!(key.bytes().all(|b| b.is_ascii_hexdigit()));
        }
    }
}
