//! Byte budgets shared by many holders: the memory of every instance on a host, the blob data
//! every value of one component spools. Each holder keeps a [`Reservation`] that grows as it
//! takes more and gives everything back when dropped, so a budget never leaks what a trapped
//! or abandoned instance held.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

/// A number of bytes that all holders together may not exceed.
#[derive(Debug)]
pub(crate) struct Budget {
    used: AtomicU64,
    limit: u64,
}

impl Budget {
    pub(crate) fn new(limit: u64) -> Arc<Self> {
        Arc::new(Self { used: AtomicU64::new(0), limit })
    }

    /// The most all holders together may hold.
    pub(crate) fn limit(&self) -> u64 {
        self.limit
    }

    /// What all holders hold now.
    #[cfg(test)]
    pub(crate) fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }
}

/// Bytes one holder holds against a [`Budget`], given back when dropped.
#[derive(Debug)]
pub(crate) struct Reservation {
    budget: Arc<Budget>,
    held: u64,
}

impl Reservation {
    pub(crate) fn new(budget: Arc<Budget>) -> Self {
        Self { budget, held: 0 }
    }

    /// Hold `bytes` more; `false`, holding nothing more, when the budget has no room.
    pub(crate) fn grow(&mut self, bytes: u64) -> bool {
        let limit = self.budget.limit;
        let taken = self.budget.used.fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
            used.checked_add(bytes).filter(|next| *next <= limit)
        });
        if taken.is_ok() {
            self.held += bytes;
        }
        taken.is_ok()
    }

    /// What this holder holds.
    pub(crate) fn held(&self) -> u64 {
        self.held
    }

    /// The budget this reservation is against.
    pub(crate) fn budget(&self) -> &Budget {
        &self.budget
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.held, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holders_share_the_limit_and_give_back_on_drop() {
        let budget = Budget::new(100);
        let mut a = Reservation::new(budget.clone());
        let mut b = Reservation::new(budget.clone());
        assert!(a.grow(60));
        assert!(!b.grow(50), "60 + 50 is over 100");
        assert!(b.grow(40));
        assert_eq!((a.held(), b.held(), budget.used()), (60, 40, 100));
        drop(a);
        assert_eq!(budget.used(), 40);
        assert!(b.grow(60));
        drop(b);
        assert_eq!(budget.used(), 0);
    }
}
