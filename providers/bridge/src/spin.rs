//! Waiting for the foreign process's answer without falling asleep, when the bridge has
//! nothing else to do.
//!
//! At one call in flight, most of what the bridge adds is not work but wake-ups: the bridge
//! sleeps while the foreign process works and is woken by the answer, and on a virtual machine
//! each wake-up of an idle process costs tens of microseconds (docs/benchmarks.md, issue 12).
//! So a call that is the only one out, to a process that usually answers within the budget,
//! keeps polling for its answer — yielding to the runtime, which checks the sockets without
//! blocking each time — for at most the budget, then sleeps as any call does. Under load there
//! is always another call to run, and no call spins; a process that answers slowly (beyond the
//! budget, on the average of recent calls) is not spun for either.

use std::{
    sync::atomic::{AtomicU64, AtomicUsize, Ordering},
    task::Poll,
    time::{Duration, Instant},
};

/// Calls in flight and how long calls take, to decide whether a call may spin.
#[derive(Debug)]
pub(crate) struct Spin {
    budget: Duration,
    in_flight: AtomicUsize,
    /// Moving average of recent calls' durations, in nanoseconds.
    typical_ns: AtomicU64,
}

/// Counts a call out until it ends, however it ends.
struct Out<'a>(&'a AtomicUsize);

impl Drop for Out<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Spin {
    /// Spin for at most `budget` per call; zero never spins.
    pub(crate) fn new(budget: Duration) -> Self {
        Self { budget, in_flight: AtomicUsize::new(0), typical_ns: AtomicU64::new(0) }
    }

    /// Run `call` to its end, spinning for its answer when it is alone and answers are quick.
    pub(crate) async fn run<F: Future>(&self, call: F) -> F::Output {
        let alone = self.in_flight.fetch_add(1, Ordering::Relaxed) == 0;
        let _out = Out(&self.in_flight);
        let budget_ns = u64::try_from(self.budget.as_nanos()).unwrap_or(u64::MAX);
        let spin = alone && budget_ns > 0 && self.typical_ns.load(Ordering::Relaxed) <= budget_ns;
        let started = Instant::now();
        let output = if spin { spin_on(call, started + self.budget).await } else { call.await };
        let took = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        // An average over about the last eight calls: one slow answer does not stop spinning.
        let typical = self.typical_ns.load(Ordering::Relaxed);
        self.typical_ns.store(typical - typical / 8 + took / 8, Ordering::Relaxed);
        output
    }
}

/// Poll `call`, yielding to the runtime between polls, until it is done or `until` passes;
/// then wait for it as usual.
async fn spin_on<F: Future>(call: F, until: Instant) -> F::Output {
    let mut call = std::pin::pin!(call);
    loop {
        if let Poll::Ready(output) = std::future::poll_fn(|cx| Poll::Ready(call.as_mut().poll(cx))).await {
            return output;
        }
        if Instant::now() >= until {
            return call.await;
        }
        // The runtime runs what is ready, polls the sockets without blocking, and comes back.
        tokio::task::yield_now().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn a_lone_quick_call_spins_and_a_slow_one_stops_spinning_and_in_flight_is_counted_out() {
        let spin = Spin::new(Duration::from_millis(5));
        // A call that is answered by another task of the same runtime while it spins.
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move { tx.send(7).ok() });
        assert_eq!(spin.run(rx).await.ok(), Some(7));
        assert_eq!(spin.in_flight.load(Ordering::Relaxed), 0);
        // Calls that take far longer than the budget push the average over it.
        for _ in 0..40 {
            spin.run(tokio::time::sleep(Duration::from_millis(10))).await;
        }
        assert!(spin.typical_ns.load(Ordering::Relaxed) > 5_000_000);
        // A call dropped half way is counted out too.
        let pending = spin.run(std::future::pending::<()>());
        assert!(tokio::time::timeout(Duration::from_millis(1), pending).await.is_err());
        assert_eq!(spin.in_flight.load(Ordering::Relaxed), 0);
    }
}
