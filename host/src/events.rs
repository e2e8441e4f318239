//! Publishing CloudEvents on `ferry.evt.{lattice}.{event}`.

use ferry_proto::{
    event::{CloudEvent, Event},
    subject,
};
use tracing::warn;

/// Emits events as one host.
#[derive(Clone, Debug)]
pub(crate) struct Events {
    nats: async_nats::Client,
    lattice: String,
    source: String,
}

impl Events {
    pub(crate) fn new(nats: async_nats::Client, lattice: &str, source: &str) -> Self {
        Self { nats, lattice: lattice.to_owned(), source: source.to_owned() }
    }

    /// Publish `event`. Failures are logged: an event never fails a command.
    pub(crate) async fn emit(&self, event: &Event) {
        let name = event.name();
        let result = match (subject::event(&self.lattice, name), CloudEvent::from_event(&self.source, event)) {
            (Ok(subject), Ok(envelope)) => match serde_json::to_vec(&envelope) {
                Ok(bytes) => self.nats.publish(subject, bytes.into()).await.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            },
            (Err(e), _) | (_, Err(e)) => Err(e.to_string()),
        };
        if let Err(err) = result {
            warn!(event = name, cause = %err, "failed to publish event");
        }
    }
}
