//! How an invocation is delivered, and when a caller may send it again.
//!
//! NATS delivers an invocation to one member of the target's queue group at most once, and a
//! receiver may die with it unanswered. So that a caller can tell "never ran" (safe to send
//! again, to another member) from "may have run" (not safe: an HTTP POST, a key-value set), a
//! receiver **takes up** an invocation only within [`TAKE_UP_WINDOW`] of its issue time, and
//! acknowledges it at the latest [`ACK_WITHIN`] after: a progress message
//! ([`crate::envelope::InvocationResponse::progress`]), repeated every [`PROGRESS_EVERY`] while
//! the work runs. A host acknowledges a component's invocation before any of its work (a repeat
//! would run the component again); a provider, whose repeats cannot run a call twice (reads are
//! harmless twice, writes are claimed first), only when the work outlasts [`ACK_WITHIN`], so a
//! fast call is answered with one message.
//!
//! A caller that hears nothing for [`PATIENCE`] after sending knows the invocation was not taken
//! up, and will not be: it sends it again under a new id with the same replay key
//! ([`crate::envelope::Invocation::reissue`]). A caller that heard progress and then nothing for
//! [`PATIENCE`] knows the receiver stopped mid-call: it reports [`crate::ErrorKind::Interrupted`]
//! and does not send it again, unless the operation is read-only ([`crate::is_read_only`]),
//! which is safe to run twice.

use std::time::Duration;

/// A receiver takes up an invocation only this soon after its issue time (by the receiver's
/// clock); later, it drops it unrun, because its caller may already have sent it elsewhere.
pub const TAKE_UP_WINDOW: Duration = Duration::from_secs(2);

/// A receiver acknowledges an invocation at the latest this long after taking it up, even
/// while it still prepares it (a provider's claim in the replay record waiting on JetStream).
pub const ACK_WITHIN: Duration = Duration::from_millis(500);

/// A receiver repeats its progress message this often while the invocation runs.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// How long a caller waits for the first sign of an invocation (acknowledgement or answer)
/// after sending it, and for each next sign after that. Longer than [`TAKE_UP_WINDOW`] plus
/// [`ACK_WITHIN`] and than [`PROGRESS_EVERY`], with room for scheduling and transit.
pub const PATIENCE: Duration = Duration::from_secs(3);

/// The start of the message of the [`crate::ErrorKind::Denied`] refusal a provider sends for an
/// invocation whose replay key the lattice has already carried out: to a caller that sent the
/// call again, a sign that an earlier attempt ran.
pub const REPLAYED: &str = "replayed invocation";

/// Whether an invocation issued at `issued_at_ms` is too old to be taken up at `now_ms`.
pub fn too_late_to_take_up(issued_at_ms: u64, now_ms: u64) -> bool {
    now_ms.saturating_sub(issued_at_ms) > u64::try_from(TAKE_UP_WINDOW.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_caller_waits_past_every_sign_a_receiver_owes_it() {
        assert!(PATIENCE > TAKE_UP_WINDOW + ACK_WITHIN);
        assert!(PATIENCE > PROGRESS_EVERY * 2);
    }

    #[test]
    fn take_up_ends_with_the_window() {
        assert!(!too_late_to_take_up(1_000, 1_000));
        assert!(!too_late_to_take_up(1_000, 3_000));
        assert!(too_late_to_take_up(1_000, 3_001));
        // A clock behind the caller's is not "too late".
        assert!(!too_late_to_take_up(5_000, 1_000));
    }
}
