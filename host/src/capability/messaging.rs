//! `wasmcloud:messaging/consumer@0.2.0`: `publish` and `request` become invocations to the
//! messaging provider linked for the interface under the link name the component chose; the
//! error string carries the typed kind first (`not-linked: …`, `timeout: …`).

use ferry_proto::{
    RpcError,
    keyvalue::Empty,
    messaging::{self as msg, BrokerMessage as WireMessage, RequestMessage},
};
use wasmtime::component::{HasSelf, Linker};

use crate::{capability::route::Route, state::HostState};

mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "ferry:host/messaging",
        imports: { default: async | trappable },
    });
}

use bindings::wasmcloud::messaging::{consumer, types::BrokerMessage};

pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    consumer::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)
}

impl HostState {
    fn messaging_route(&self) -> Result<Route, String> {
        self.route(msg::WIT_NAMESPACE, msg::WIT_PACKAGE, msg::CONSUMER_INTERFACE).map_err(|e| e.to_string())
    }
}

impl consumer::Host for HostState {
    async fn request(
        &mut self,
        subject: String,
        body: Vec<u8>,
        timeout_ms: u32,
    ) -> wasmtime::Result<Result<BrokerMessage, String>> {
        let route = match self.messaging_route() {
            Ok(route) => route,
            Err(err) => return Ok(Err(err)),
        };
        let reply: Result<WireMessage, RpcError> =
            route.call(msg::OP_REQUEST, &RequestMessage { subject, body, timeout_ms }).await;
        Ok(reply.map_err(|e| e.to_string()).map(|m| BrokerMessage {
            subject: m.subject,
            body: m.body,
            reply_to: m.reply_to,
        }))
    }

    async fn publish(&mut self, message: BrokerMessage) -> wasmtime::Result<Result<(), String>> {
        let route = match self.messaging_route() {
            Ok(route) => route,
            Err(err) => return Ok(Err(err)),
        };
        let wire = WireMessage { subject: message.subject, body: message.body, reply_to: message.reply_to };
        let sent: Result<Empty, RpcError> = route.call(msg::OP_PUBLISH, &wire).await;
        Ok(sent.map(|_| ()).map_err(|e| e.to_string()))
    }
}

impl bindings::wasmcloud::messaging::types::Host for HostState {}
