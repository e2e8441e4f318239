//! Publishing CloudEvents on `ferry.evt.{lattice}.{event}`.

use ferry_proto::{event::CloudEvent, subject};
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

    /// Publish `name` with `data`. Failures are logged: an event never fails a command.
    pub(crate) async fn emit(&self, name: &str, data: serde_json::Value) {
        let event = CloudEvent::new(&self.source, name, data);
        let result = match (subject::event(&self.lattice, name), serde_json::to_vec(&event)) {
            (Ok(subject), Ok(bytes)) => self.nats.publish(subject, bytes.into()).await.map_err(|e| e.to_string()),
            (Err(e), _) => Err(e.to_string()),
            (_, Err(e)) => Err(e.to_string()),
        };
        if let Err(err) = result {
            warn!(event = name, cause = %err, "failed to publish event");
        }
    }
}
