//! A client for the control interface, used by `ferry ctl` and by programs that drive a
//! lattice. Commands are the typed ones of [`ferry_proto::ctl`]; their subjects and reply
//! types come from there. Given an operator key, the client signs every command
//! ([`ferry_proto::ctl::operator`]), as hosts that obey operators require.

use std::{sync::Arc, time::Duration};

use ferry_proto::ctl::{Command, CtlResponse, operator::OperatorKey};
use futures::StreamExt as _;

use crate::LatticeError;

/// Sends control commands to the hosts of one lattice.
#[derive(Clone, Debug)]
pub struct CtlClient {
    nats: async_nats::Client,
    lattice: String,
    timeout: Duration,
    operator: Option<Arc<OperatorKey>>,
}

impl CtlClient {
    /// A client for `lattice` on an existing connection; commands wait `timeout` for a reply.
    pub fn new(nats: async_nats::Client, lattice: impl Into<String>, timeout: Duration) -> Self {
        Self { nats, lattice: lattice.into(), timeout, operator: None }
    }

    /// The same client, signing every command with `operator`.
    #[must_use]
    pub fn with_operator(mut self, operator: OperatorKey) -> Self {
        self.operator = Some(Arc::new(operator));
        self
    }

    /// The signature headers for `body` on `subject`; none without an operator key.
    fn headers(&self, subject: &str, body: &[u8]) -> Result<async_nats::HeaderMap, LatticeError> {
        let mut headers = async_nats::HeaderMap::new();
        if let Some(operator) = &self.operator {
            for (name, value) in operator.sign(subject, body)? {
                headers.insert(name, value.as_str());
            }
        }
        Ok(headers)
    }

    /// The lattice.
    pub fn lattice(&self) -> &str {
        &self.lattice
    }

    /// Send `command` to `host`, or to whichever host its scope picks, and return the reply.
    ///
    /// # Errors
    /// [`LatticeError::Nats`] when no host answers in time, [`LatticeError::Invalid`] for a
    /// reply that is not the command's reply, or a command that must name a host and does not.
    pub async fn send<C: Command>(
        &self,
        command: &C,
        host: Option<&str>,
    ) -> Result<CtlResponse<C::Reply>, LatticeError> {
        let subject = C::subject(&self.lattice, host)?;
        let body = serde_json::to_vec(command).map_err(|e| LatticeError::Invalid(e.to_string()))?;
        let reply = self.request_raw(subject, body).await?;
        decode_reply::<C>(&reply)
    }

    /// `config.get` for config `name` (as request `request_id`; a fresh id when empty), its
    /// values sealed for this request and opened here: a reply that crosses NATS never shows
    /// them.
    ///
    /// # Errors
    /// As [`CtlClient::send`]; [`LatticeError::Invalid`] when the values cannot be opened.
    pub async fn config_get(
        &self,
        request_id: &str,
        name: &str,
        host: Option<&str>,
    ) -> Result<CtlResponse<std::collections::BTreeMap<String, String>>, LatticeError> {
        let opener = ferry_proto::seal::reply::Opener::new().map_err(|e| LatticeError::Invalid(e.to_string()))?;
        let command = ferry_proto::ctl::ConfigGetCommand {
            request_id: if request_id.is_empty() {
                uuid::Uuid::new_v4().simple().to_string()
            } else {
                request_id.to_owned()
            },
            name: name.to_owned(),
            reply_key: Some(opener.public_key()),
        };
        let mut reply = self.send(&command, host).await?;
        if let Some(sealed) = reply.data.take() {
            let opened = opener
                .open(&command.binding(), &sealed)
                .map_err(|e| LatticeError::Invalid(format!("cannot open the config's values: {e}")))?;
            reply.data = Some(opened);
        }
        Ok(reply)
    }

    /// Send `command` to every host and gather the replies that arrive within `wait`: for
    /// lattice-wide queries (`host.ping`) and auctions. No host answering is an empty list.
    ///
    /// # Errors
    /// [`LatticeError::Nats`] when the request cannot be sent.
    pub async fn gather<C: Command>(
        &self,
        command: &C,
        wait: Duration,
    ) -> Result<Vec<CtlResponse<C::Reply>>, LatticeError> {
        let subject = C::subject(&self.lattice, None)?;
        let body = serde_json::to_vec(command).map_err(|e| LatticeError::Invalid(e.to_string()))?;
        let inbox = self.nats.new_inbox();
        let mut replies = self.nats.subscribe(inbox.clone()).await.map_err(LatticeError::nats)?;
        let headers = self.headers(&subject, &body)?;
        self.nats
            .publish_with_reply_and_headers(subject, inbox, headers, body.into())
            .await
            .map_err(LatticeError::nats)?;
        self.nats.flush().await.map_err(LatticeError::nats)?;
        let deadline = tokio::time::Instant::now() + wait;
        let mut answers = Vec::new();
        while let Ok(Some(msg)) = tokio::time::timeout_at(deadline, replies.next()).await {
            match decode_reply::<C>(&msg.payload) {
                Ok(answer) => answers.push(answer),
                Err(err) => tracing::warn!(cause = %err, "ignored a malformed control reply"),
            }
        }
        let _ = replies.unsubscribe().await;
        Ok(answers)
    }

    /// Send `body` as it is on `subject` (signed, with an operator key) and return the raw
    /// reply: for tools that relay commands, and for testing how hosts treat bad input.
    ///
    /// # Errors
    /// [`LatticeError::Nats`] when no host answers in time.
    pub async fn request_raw(&self, subject: String, body: Vec<u8>) -> Result<bytes::Bytes, LatticeError> {
        // The request's own timeout, not the connection's default (10 s in async-nats), so
        // `--timeout-ms` holds whichever is longer.
        let headers = self.headers(&subject, &body)?;
        let request = async_nats::Request::new().headers(headers).payload(body.into()).timeout(Some(self.timeout));
        let reply = tokio::time::timeout(self.timeout, self.nats.send_request(subject.clone(), request))
            .await
            .map_err(|_| LatticeError::Nats(format!("no host answered {subject} within {:?}", self.timeout)))?
            .map_err(|e| LatticeError::Nats(format!("{subject}: {e}")))?;
        Ok(reply.payload)
    }
}

fn decode_reply<C: Command>(payload: &[u8]) -> Result<CtlResponse<C::Reply>, LatticeError> {
    serde_json::from_slice(payload)
        .map_err(|e| LatticeError::Invalid(format!("malformed reply to {}.{}: {e}", C::RESOURCE, C::VERB)))
}
