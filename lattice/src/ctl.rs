//! A client for the control interface, used by `ferry ctl` and by programs that drive a
//! lattice.

use std::time::Duration;

use ferry_proto::{ctl::CtlResponse, subject};
use serde::Serialize;

use crate::LatticeError;

/// Sends control commands to the hosts of one lattice.
#[derive(Clone, Debug)]
pub struct CtlClient {
    nats: async_nats::Client,
    lattice: String,
    timeout: Duration,
}

impl CtlClient {
    /// A client for `lattice` on an existing connection; commands wait `timeout` for a reply.
    pub fn new(nats: async_nats::Client, lattice: impl Into<String>, timeout: Duration) -> Self {
        Self { nats, lattice: lattice.into(), timeout }
    }

    /// Send `command` as `{resource}.{verb}`, to `host` or to any host, and return the reply.
    ///
    /// # Errors
    /// [`LatticeError::Nats`] when no host answers in time, [`LatticeError::Invalid`] for a reply
    /// that is not a control response.
    pub async fn request<T: Serialize>(
        &self,
        resource: &str,
        verb: &str,
        host: Option<&str>,
        command: &T,
    ) -> Result<CtlResponse, LatticeError> {
        let subject = subject::ctl(&self.lattice, resource, verb, host)?;
        let body = serde_json::to_vec(command).map_err(|e| LatticeError::Invalid(e.to_string()))?;
        // The request's own timeout, not the connection's default (10 s in async-nats), so
        // `--timeout-ms` holds whichever is longer.
        let request = async_nats::Request::new().payload(body.into()).timeout(Some(self.timeout));
        let reply = tokio::time::timeout(self.timeout, self.nats.send_request(subject.clone(), request))
            .await
            .map_err(|_| LatticeError::Nats(format!("no host answered {subject} within {:?}", self.timeout)))?
            .map_err(|e| LatticeError::Nats(format!("{subject}: {e}")))?;
        serde_json::from_slice(&reply.payload)
            .map_err(|e| LatticeError::Invalid(format!("malformed control reply: {e}")))
    }
}
