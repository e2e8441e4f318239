//! Payloads of `wasmcloud:messaging@0.2.0`: `consumer.publish` / `consumer.request` invocations
//! from a component to a messaging provider, and `handler.handle-message` invocations from the
//! provider to a component.

use serde::{Deserialize, Serialize};

/// WIT namespace of messaging.
pub const WIT_NAMESPACE: &str = "wasmcloud";
/// WIT package of messaging.
pub const WIT_PACKAGE: &str = "messaging";
/// Interface a component imports to publish and request.
pub const CONSUMER_INTERFACE: &str = "consumer";
/// Interface a component exports to receive messages.
pub const HANDLER_INTERFACE: &str = "handler";

/// `consumer.publish`: payload [`BrokerMessage`], answer [`crate::keyvalue::Empty`].
pub const OP_PUBLISH: &str = "wasmcloud:messaging/consumer.publish";
/// `consumer.request`: payload [`RequestMessage`], answer [`BrokerMessage`] (the reply).
pub const OP_REQUEST: &str = "wasmcloud:messaging/consumer.request";
/// `handler.handle-message`: payload [`BrokerMessage`], answer [`crate::keyvalue::Empty`] or
/// an error of kind `component_error` carrying the handler's message.
pub const OP_HANDLE_MESSAGE: &str = "wasmcloud:messaging/handler.handle-message";

/// A message sent to or received from a broker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerMessage {
    /// Subject.
    pub subject: String,
    /// Body.
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
    /// Where a reply goes, if the sender wants one.
    #[serde(default)]
    pub reply_to: Option<String>,
}

/// A request: publish `body` on `subject` and wait up to `timeout_ms` for one reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestMessage {
    /// Subject.
    pub subject: String,
    /// Body.
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
    /// How long to wait for the reply.
    pub timeout_ms: u32,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{decode, encode};

    #[test]
    fn round_trip_and_garbage() {
        let msg = BrokerMessage { subject: "a.b".into(), body: vec![0, 255], reply_to: Some("_INBOX.1".into()) };
        assert_eq!(decode::<BrokerMessage>(&encode(&msg).unwrap()).unwrap(), msg);
        let req = RequestMessage { subject: "a".into(), body: vec![1], timeout_ms: 500 };
        assert_eq!(decode::<RequestMessage>(&encode(&req).unwrap()).unwrap(), req);
        assert!(decode::<BrokerMessage>(b"\xc1").is_err());
        assert!(decode::<RequestMessage>(b"garbage").is_err());
    }
}
