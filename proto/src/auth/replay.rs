//! Replay protection inside one receiver: issue times within the window, each id once, nothing
//! issued before the receiver started. The lattice-wide half (state-changing invocations
//! claimed in JetStream) is the SDK's `replay` module.

use std::{
    collections::{BTreeMap, HashSet},
    sync::Mutex,
};

use sha2::{Digest, Sha256};

use super::{AuthError, DEFAULT_REPLAY_WINDOW_MS};
use crate::time;

/// Rejects stale and replayed messages: issue time within the window, each id once.
///
/// Ids are remembered by the window their message was issued in, and only as long as such a
/// message could still pass [`ReplayGuard::check_fresh`]; each takes 16 bytes. At 10,000
/// messages a second and the default 30 s window that is about 10 MB at most.
#[derive(Debug)]
pub struct ReplayGuard {
    window_ms: u64,
    /// When the guard was made: messages issued earlier were meant for a process before this
    /// one, whose seen ids this guard does not have.
    started_ms: u64,
    seen: Mutex<BTreeMap<u64, HashSet<u128>>>,
}

impl ReplayGuard {
    /// A guard with a window of `window_ms` either side of now, refusing messages issued
    /// before it was made. Make it before subscribing.
    pub fn new(window_ms: u64) -> Self {
        Self { window_ms: window_ms.max(1), started_ms: time::now_ms(), seen: Mutex::new(BTreeMap::new()) }
    }

    /// Check that `issued_at_ms` is within the window of now and not before the guard started.
    ///
    /// # Errors
    /// [`AuthError::OutsideWindow`], [`AuthError::IssuedBeforeStart`].
    pub fn check_fresh(&self, issued_at_ms: u64) -> Result<(), AuthError> {
        let skew_ms = time::now_ms().abs_diff(issued_at_ms);
        if skew_ms > self.window_ms {
            return Err(AuthError::OutsideWindow { skew_ms, window_ms: self.window_ms });
        }
        if issued_at_ms < self.started_ms {
            return Err(AuthError::IssuedBeforeStart { early_ms: self.started_ms - issued_at_ms });
        }
        Ok(())
    }

    /// Record `id` of a message issued at `issued_at_ms`, failing if it was seen before. Call
    /// after the MAC checked out (the MAC covers both), so forged messages cannot fill the
    /// cache.
    ///
    /// # Errors
    /// [`AuthError::Replayed`].
    pub fn record(&self, id: &str, issued_at_ms: u64) -> Result<(), AuthError> {
        let generation = issued_at_ms / self.window_ms;
        // Messages issued before `now - window` fail check_fresh, so their ids can go.
        let oldest = time::now_ms().saturating_sub(self.window_ms) / self.window_ms;
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(entry) = seen.first_entry() {
            if *entry.key() >= oldest {
                break;
            }
            entry.remove();
        }
        if !seen.entry(generation).or_default().insert(compact_id(id)) {
            return Err(AuthError::Replayed(id.to_owned()));
        }
        Ok(())
    }
}

/// An id as 128 bits: a 32-digit hex id (a UUID, as Ferry makes them) as is, anything else
/// hashed.
fn compact_id(id: &str) -> u128 {
    if id.len() == 32
        && let Ok(value) = u128::from_str_radix(id, 16)
    {
        return value;
    }
    let digest = Sha256::digest(id.as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    u128::from_be_bytes(bytes)
}

impl Default for ReplayGuard {
    fn default() -> Self {
        Self::new(DEFAULT_REPLAY_WINDOW_MS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_guard_rejects_repeats_and_stale_messages() {
        let now = time::now_ms();
        let guard = ReplayGuard::new(1_000);
        guard.record("a", now).unwrap();
        assert_eq!(guard.record("a", now), Err(AuthError::Replayed("a".into())));
        let uuid = "0123456789abcdef0123456789abcdef";
        guard.record(uuid, now).unwrap();
        assert_eq!(guard.record(uuid, now), Err(AuthError::Replayed(uuid.into())));
        // Ids of messages too old to pass check_fresh are forgotten.
        guard.record("old", now - 5_000).unwrap();
        assert!(matches!(guard.check_fresh(now - 500), Err(AuthError::IssuedBeforeStart { .. })));
        guard.record("b", now).unwrap();
        assert!(guard.seen.lock().unwrap().keys().all(|g| *g >= (now - 1_000) / 1_000));
        assert!(guard.check_fresh(time::now_ms()).is_ok());
        assert!(matches!(guard.check_fresh(time::now_ms() - 5_000), Err(AuthError::OutsideWindow { .. })));
        assert!(matches!(guard.check_fresh(time::now_ms() + 5_000), Err(AuthError::OutsideWindow { .. })));
    }
}
