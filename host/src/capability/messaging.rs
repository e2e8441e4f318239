//! `wasmcloud:messaging/consumer@0.2.0`: `publish` and `request` become invocations to the
//! messaging provider linked for the interface under the link name the component chose; the
//! error string carries the typed kind first (`not-linked: …`, `timeout: …`).

use ferry_proto::{
    RpcError, codec,
    keyvalue::Empty,
    messaging::{self as msg, BrokerMessage as WireMessage, RequestMessage},
};
use serde::{Serialize, de::DeserializeOwned};
use wasmtime::component::{HasSelf, Linker};

use std::sync::Arc;

use crate::state::{ComponentEnv, HostState};

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

/// The linked provider and link name, resolved before the first `await`.
struct Route {
    env: Arc<ComponentEnv>,
    name: String,
    target: String,
}

impl Route {
    async fn send<Req: Serialize, Resp: DeserializeOwned>(
        self,
        operation: &str,
        request: &Req,
    ) -> Result<Resp, String> {
        let payload = codec::encode(request).map_err(|e| RpcError::from(e).to_string())?;
        let bytes = self
            .env
            .rpc
            .invoke(&self.env.id, &self.target, &self.name, operation, payload)
            .await
            .map_err(|e| e.to_string())?;
        codec::decode(&bytes).map_err(|e| {
            RpcError::bad_request(format!("provider answered with an undecodable payload: {e}")).to_string()
        })
    }
}

impl HostState {
    fn messaging_route(&self) -> Result<Route, String> {
        let name = self.link_name(msg::WIT_NAMESPACE, msg::WIT_PACKAGE, msg::CONSUMER_INTERFACE);
        let component = &self.env.id;
        let target = self
            .env
            .lattice
            .target_of(component, &name, msg::WIT_NAMESPACE, msg::WIT_PACKAGE, msg::CONSUMER_INTERFACE)
            .ok_or_else(|| {
                RpcError::not_linked(format!("{component} has no link named {name:?} for wasmcloud:messaging/consumer"))
                    .to_string()
            })?;
        Ok(Route { env: self.env.clone(), name, target })
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
        let reply: Result<WireMessage, String> =
            route.send(msg::OP_REQUEST, &RequestMessage { subject, body, timeout_ms }).await;
        Ok(reply.map(|m| BrokerMessage { subject: m.subject, body: m.body, reply_to: m.reply_to }))
    }

    async fn publish(&mut self, message: BrokerMessage) -> wasmtime::Result<Result<(), String>> {
        let route = match self.messaging_route() {
            Ok(route) => route,
            Err(err) => return Ok(Err(err)),
        };
        let wire = WireMessage { subject: message.subject, body: message.body, reply_to: message.reply_to };
        let sent: Result<Empty, String> = route.send(msg::OP_PUBLISH, &wire).await;
        Ok(sent.map(|_| ()))
    }
}

impl bindings::wasmcloud::messaging::types::Host for HostState {}
