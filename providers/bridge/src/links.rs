//! What the bridge keeps per link (held by the SDK as the link's state): the foreign
//! provider's verdict on it, which can change when the process restarts and gets the link
//! again.

use std::sync::Mutex;

use ferry_provider_sdk::{ErrorKind, RpcError};

/// The foreign provider's answer to a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Taken: calls over the link go through.
    Accepted,
    /// Refused, with its reason: calls over the link fail with `not_linked`.
    Rejected(String),
    /// Not delivered: the process was unreachable. It gets the link when it is back.
    Pending,
}

/// A link's state in the bridge.
#[derive(Debug)]
pub(crate) struct BridgeLink {
    verdict: Mutex<Verdict>,
}

impl BridgeLink {
    pub(crate) fn new(verdict: Verdict) -> Self {
        Self { verdict: Mutex::new(verdict) }
    }

    pub(crate) fn set(&self, verdict: Verdict) {
        *self.verdict.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = verdict;
    }

    /// Whether a call over this link may go to the foreign provider.
    pub(crate) fn check(&self) -> Result<(), RpcError> {
        match &*self.verdict.lock().unwrap_or_else(std::sync::PoisonError::into_inner) {
            Verdict::Accepted => Ok(()),
            Verdict::Rejected(why) => {
                Err(RpcError::new(ErrorKind::NotLinked, format!("the bridged provider rejected this link: {why}")))
            }
            Verdict::Pending => Err(RpcError::new(
                ErrorKind::Unavailable,
                "the bridged provider has not taken this link yet (it was unreachable)",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_follow_the_latest_verdict() {
        let link = BridgeLink::new(Verdict::Pending);
        assert_eq!(link.check().unwrap_err().kind, ErrorKind::Unavailable);
        link.set(Verdict::Accepted);
        assert!(link.check().is_ok());
        link.set(Verdict::Rejected("no such database".into()));
        let err = link.check().unwrap_err();
        assert_eq!(err.kind, ErrorKind::NotLinked);
        assert!(err.message.contains("no such database"), "{err}");
    }
}
