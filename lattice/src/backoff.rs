//! Waiting between tries of an operation JetStream cannot take for a moment — a stream electing
//! a new leader after a cluster node died, a server that restarted — so that callers wait it out
//! instead of failing. One definition for the replay record's claims and the providers' writes.

use std::time::Duration;

use tokio::time::Instant;

/// Doubling waits, up to a cap, within a time limit.
#[derive(Debug)]
pub struct Backoff {
    start: Instant,
    wait: Duration,
    max_wait: Duration,
    limit: Duration,
}

impl Backoff {
    /// Waits of 50 ms, doubling up to 1 s, for up to 8 s: longer than a NATS cluster takes to
    /// elect a stream's new leader.
    pub fn through_election() -> Self {
        Self::new(Duration::from_millis(50), Duration::from_secs(1), Duration::from_secs(8))
    }

    /// Waits of `first`, doubling up to `max_wait`, for up to `limit` from now.
    pub fn new(first: Duration, max_wait: Duration, limit: Duration) -> Self {
        Self { start: Instant::now(), wait: first, max_wait, limit }
    }

    /// The wait before the next try; `None` when it would end past the limit (give up).
    pub fn next_wait(&mut self) -> Option<Duration> {
        if self.start.elapsed() + self.wait >= self.limit {
            return None;
        }
        let wait = self.wait;
        self.wait = (wait * 2).min(self.max_wait);
        Some(wait)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_up_to_the_cap_and_stop_at_the_limit() {
        let mut backoff = Backoff::new(Duration::from_millis(10), Duration::from_millis(40), Duration::from_millis(75));
        let waits: Vec<_> = std::iter::from_fn(|| backoff.next_wait()).take(10).collect();
        assert_eq!(waits[..3], [Duration::from_millis(10), Duration::from_millis(20), Duration::from_millis(40)]);
        // No time passes here, so the cap repeats until a wait alone would cross the limit.
        assert!(waits.iter().all(|w| *w <= Duration::from_millis(40)));
        let mut none = Backoff::new(Duration::from_millis(10), Duration::from_millis(40), Duration::ZERO);
        assert_eq!(none.next_wait(), None);
    }
}
