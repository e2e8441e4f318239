//! Replay protection inside one receiver: issue times within the window, each id once, nothing
//! issued before the receiver started. The lattice-wide half (state-changing invocations
//! claimed in JetStream) is the lattice crate's `replay` module.

use std::{
    collections::{BTreeMap, HashSet},
    sync::Mutex,
};

use sha2::{Digest, Sha256};

use super::{AuthError, DEFAULT_REPLAY_WINDOW_MS};
use crate::{delivery::TAKE_UP_WINDOW, time};

/// How many slices the time an id is remembered is cut into: an id is kept until every message
/// of its slice is past that time, so a finer cut frees ids sooner (one slice after they may
/// go) and keeps fewer in the hash set of the slice still filling.
const SLICES_PER_MEMORY: u64 = 64;

/// Rejects stale and replayed messages: issue time within the window, each id once.
///
/// Ids are remembered by the slice of time (a 64th of how long they are remembered) their
/// message was issued in, and only as long as the receiver could still act on a message of
/// that slice: for [`ReplayGuard::new`], as long as it could pass [`ReplayGuard::check_fresh`]
/// (a window after its issue); for [`ReplayGuard::for_invocations`], as long as it could be
/// taken up ([`TAKE_UP_WINDOW`]), since a later one is dropped unrun whatever the guard says.
/// Each id is kept as 64 bits: in a hash set while its slice is current, then, once the slice
/// is past, in a sorted array (8 bytes an id; a message that arrives after its slice ended goes
/// to a small set beside it). At 10,000 messages a second that is about 2.5 MB at most for the
/// default 30 s window, and under 0.2 MB for invocations.
#[derive(Debug)]
pub struct ReplayGuard {
    window_ms: u64,
    /// How long after its issue time an id is kept.
    remember_ms: u64,
    slice_ms: u64,
    /// When the guard was made: messages issued earlier were meant for a process before this
    /// one, whose seen ids this guard does not have.
    started_ms: u64,
    seen: Mutex<Seen>,
}

/// The ids of messages that could still pass, by slice.
#[derive(Debug, Default)]
struct Seen {
    slices: BTreeMap<u64, Slice>,
    /// Every slice before this one is closed.
    closed_below: u64,
}

/// The ids of one slice.
#[derive(Debug)]
enum Slice {
    /// Its time is now (or ahead): ids as they come.
    Open(HashSet<u64>),
    /// Its time is past: the ids it had then, sorted, and those that came since.
    Closed { sorted: Box<[u64]>, late: HashSet<u64> },
}

impl Slice {
    /// Add `id`; false if it was there.
    fn insert(&mut self, id: u64) -> bool {
        match self {
            Self::Open(ids) => ids.insert(id),
            Self::Closed { sorted, late } => sorted.binary_search(&id).is_err() && late.insert(id),
        }
    }

    fn close(&mut self) {
        if let Self::Open(ids) = self {
            let mut sorted: Vec<u64> = ids.drain().collect();
            sorted.sort_unstable();
            *self = Self::Closed { sorted: sorted.into_boxed_slice(), late: HashSet::new() };
        }
    }
}

impl ReplayGuard {
    /// A guard with a window of `window_ms` either side of now, refusing messages issued
    /// before it was made, remembering ids as long as their messages pass the window. Make it
    /// before subscribing.
    pub fn new(window_ms: u64) -> Self {
        Self::remembering(window_ms, window_ms)
    }

    /// The guard for invocations on a receiver's rpc subject: the default window, ids
    /// remembered for [`TAKE_UP_WINDOW`] after their issue. A receiver takes an invocation up
    /// only that soon after its issue time (by its own clock, checked after this guard), so a
    /// replay that comes later is dropped unrun, whether or not its id is still here; keeping
    /// the ids a whole window longer would only cost memory (a busy host's largest item).
    pub fn for_invocations() -> Self {
        let take_up_ms = u64::try_from(TAKE_UP_WINDOW.as_millis()).unwrap_or(u64::MAX);
        Self::remembering(DEFAULT_REPLAY_WINDOW_MS, take_up_ms)
    }

    /// A guard with a window of `window_ms` either side of now that remembers an id for
    /// `remember_ms` after its message's issue time (at most the window): for messages the
    /// receiver acts on only that soon after their issue, and drops unacted later.
    pub fn remembering(window_ms: u64, remember_ms: u64) -> Self {
        let window_ms = window_ms.max(1);
        let remember_ms = remember_ms.clamp(1, window_ms);
        Self {
            window_ms,
            remember_ms,
            slice_ms: (remember_ms / SLICES_PER_MEMORY).max(1),
            started_ms: time::now_ms(),
            seen: Mutex::new(Seen::default()),
        }
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
        self.record_at(id, issued_at_ms, time::now_ms())
    }

    fn record_at(&self, id: &str, issued_at_ms: u64, now_ms: u64) -> Result<(), AuthError> {
        // A replay carries its original's issue time (the MAC covers it), so it lands in the
        // same slice: one set to look in.
        let slice = issued_at_ms / self.slice_ms;
        // Slices ending at or before `now - remember` hold only messages the receiver no
        // longer acts on (they fail check_fresh, or are too late to be taken up), so their
        // ids can go.
        let oldest = now_ms.saturating_sub(self.remember_ms) / self.slice_ms;
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(entry) = seen.slices.first_entry() {
            if *entry.key() >= oldest {
                break;
            }
            entry.remove();
        }
        // Slices before the current one are past: all but a few of their messages have come.
        let past = now_ms / self.slice_ms;
        if past > seen.closed_below {
            let closed_below = seen.closed_below;
            seen.slices.range_mut(closed_below..past).for_each(|(_, slice)| slice.close());
            seen.closed_below = past;
        }
        let ids = seen.slices.entry(slice).or_insert_with(|| Slice::Open(HashSet::new()));
        if !ids.insert(compact_id(id)) {
            return Err(AuthError::Replayed(id.to_owned()));
        }
        Ok(())
    }

    /// Bytes the remembered ids take, sets' spare room included.
    #[cfg(test)]
    fn footprint(&self) -> usize {
        // A set's slot is the id and one control byte; its buckets are a power of two above
        // its capacity (at most 7/8 full).
        let set = |ids: &HashSet<u64>| (ids.capacity() * 8 / 7).next_power_of_two() * 9;
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.slices
            .values()
            .map(|slice| match slice {
                Slice::Open(ids) => set(ids),
                Slice::Closed { sorted, late } => sorted.len() * 8 + set(late),
            })
            .sum()
    }

    /// How many ids are remembered.
    #[cfg(test)]
    fn len(&self) -> usize {
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.slices
            .values()
            .map(|slice| match slice {
                Slice::Open(ids) => ids.len(),
                Slice::Closed { sorted, late } => sorted.len() + late.len(),
            })
            .sum()
    }
}

/// An id as 64 bits: a 32-digit hex id (a UUID, as Ferry makes them, random in 122 of its
/// bits) folded in half, anything else hashed. Two different ids share 64 bits with a chance of
/// about one in 10^19 per pair, far below any other way a message is lost.
fn compact_id(id: &str) -> u64 {
    if id.len() == 32
        && let Ok(value) = u128::from_str_radix(id, 16)
    {
        return (value >> 64) as u64 ^ value as u64;
    }
    let digest = Sha256::digest(id.as_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(bytes)
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
        assert!(guard.seen.lock().unwrap().slices.keys().all(|s| *s >= (now - 1_000) / guard.slice_ms));
        assert!(guard.check_fresh(time::now_ms()).is_ok());
        assert!(matches!(guard.check_fresh(time::now_ms() - 5_000), Err(AuthError::OutsideWindow { .. })));
        assert!(matches!(guard.check_fresh(time::now_ms() + 5_000), Err(AuthError::OutsideWindow { .. })));
    }

    #[test]
    fn an_id_is_kept_while_its_message_could_pass_and_forgotten_a_slice_later() {
        let guard = ReplayGuard::new(64_000);
        let issued = 1_000_000;
        guard.record_at("x", issued, issued).unwrap();
        guard.record_at("late", issued + 500, issued + 500).unwrap();
        // Once its slice is past, an id is still found, and one arriving late is taken once.
        guard.record_at("now", issued + 5_000, issued + 5_000).unwrap();
        assert!(matches!(guard.seen.lock().unwrap().slices[&(issued / 1_000)], Slice::Closed { .. }));
        assert_eq!(guard.record_at("x", issued, issued + 6_000), Err(AuthError::Replayed("x".into())));
        guard.record_at("later", issued + 200, issued + 6_000).unwrap();
        assert_eq!(guard.record_at("later", issued + 200, issued + 7_000), Err(AuthError::Replayed("later".into())));
        // Still fresh a whole window later (check_fresh allows a skew of exactly the window).
        assert_eq!(guard.record_at("x", issued, issued + 64_000), Err(AuthError::Replayed("x".into())));
        // Its slice (1 s long) ends at issued + 1 s; a window after that, it is gone.
        guard.record_at("y", issued + 65_000, issued + 65_000).unwrap();
        assert!(!guard.seen.lock().unwrap().slices.contains_key(&(issued / 1_000)));
        assert_eq!(guard.len(), 2, "\"now\" and \"y\" are left");
    }

    #[test]
    fn invocation_ids_are_kept_while_they_could_be_taken_up() {
        let guard = ReplayGuard::for_invocations();
        let take_up_ms = u64::try_from(TAKE_UP_WINDOW.as_millis()).unwrap();
        let issued = 1_000_000_000;
        guard.record_at("x", issued, issued).unwrap();
        // Still fresh for a whole window, but remembered only while it could be taken up.
        assert_eq!(guard.window_ms, DEFAULT_REPLAY_WINDOW_MS);
        assert_eq!(guard.record_at("x", issued, issued + take_up_ms), Err(AuthError::Replayed("x".into())));
        assert!(!crate::delivery::too_late_to_take_up(issued, issued + take_up_ms));
        // Once it is too late to take up, its slice goes with the next message recorded.
        let later = issued + take_up_ms + guard.slice_ms + 1;
        assert!(crate::delivery::too_late_to_take_up(issued, later));
        guard.record_at("y", later, later).unwrap();
        assert_eq!(guard.len(), 1, "only \"y\" is left");
        // A message from a sender whose clock is ahead is kept until it is too late by ours.
        let ahead = later + 20_000;
        guard.record_at("z", ahead, later).unwrap();
        assert_eq!(guard.record_at("z", ahead, ahead + take_up_ms), Err(AuthError::Replayed("z".into())));
    }

    /// Record 10,000 new ids a second for `seconds`, as they arrive; the guard's largest
    /// footprint on the way and how many ids it keeps at the end. (Ferry ids are random; a
    /// counter spread over the bits stands for them.)
    fn ten_thousand_a_second(guard: &ReplayGuard, seconds: u64) -> (usize, usize) {
        let start = 1_000_000_000;
        let mut largest = 0;
        for n in 0u64..seconds * 10_000 {
            let at = start + n / 10;
            let id = format!("{:032x}", u128::from(n).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835));
            guard.record_at(&id, at, at).unwrap();
            if n % 1_000 == 0 {
                largest = largest.max(guard.footprint());
            }
        }
        (largest, guard.len())
    }

    #[test]
    fn ten_thousand_invocations_a_second_take_under_a_fifth_of_a_megabyte() {
        let (largest, kept) = ten_thousand_a_second(&ReplayGuard::for_invocations(), 20);
        assert!(largest < 200_000, "{largest} bytes");
        // Two seconds' worth and one slice more is kept, not less.
        assert!((20_000..=20_400).contains(&kept), "{kept} ids kept");
    }

    #[test]
    fn ten_thousand_messages_a_second_for_a_window_take_two_and_a_half_megabytes() {
        let (largest, kept) = ten_thousand_a_second(&ReplayGuard::default(), 40);
        assert!(largest < 2_700_000, "{largest} bytes");
        // A full window's worth and one slice more is kept, not less.
        assert!((300_000..=310_000).contains(&kept), "{kept} ids kept");
    }
}
