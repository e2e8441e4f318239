//! Where a capability call goes: the provider linked for an interface under the link name the
//! component chose. The route is resolved before the first `await`, so it holds no borrow of
//! the (non-`Sync`) store state; a call is then one signed invocation with a typed error, which
//! each interface turns into its own WIT error.

use std::sync::Arc;

use ferry_proto::{
    ErrorKind, RpcError,
    auth::MacKey,
    claims::Capabilities,
    codec,
    envelope::Invocation,
    event::{Event, PolicyDenied},
};
use serde::{Serialize, de::DeserializeOwned};
use tracing::warn;

use crate::state::{Causes, ComponentEnv, Grants, HostState};

/// The linked provider and the link name in force for one interface.
#[derive(Clone)]
pub(crate) struct Route {
    pub(crate) env: Arc<ComponentEnv>,
    pub(crate) name: String,
    pub(crate) target: String,
    /// Numbers the state-changing calls of the invocation being served.
    pub(crate) causes: Causes,
    /// The deadline of the invocation being served, which its calls inherit.
    pub(crate) deadline_ms: u64,
}

impl HostState {
    /// Resolve the link for `namespace:package/interface` now.
    /// A call the component's claims do not grant is refused `denied`, and reported as
    /// `policy_denied`.
    pub(crate) fn route(&self, namespace: &str, package: &str, interface: &str) -> Result<Route, RpcError> {
        self.env.granted(namespace, package, interface)?;
        let component = &self.env.id;
        let name = self.link_name(namespace, package, interface);
        let target = self.env.lattice.target_of(component, &name, namespace, package, interface).ok_or_else(|| {
            RpcError::not_linked(format!(
                "{component} has no link named {name:?} for {namespace}:{package}/{interface}"
            ))
        })?;
        Ok(Route { env: self.env.clone(), name, target, causes: self.causes.clone(), deadline_ms: self.deadline_ms })
    }
}

impl ComponentEnv {
    /// Whether the component's claims grant a call to `namespace:package/interface`; one they
    /// do not is refused `denied` and reported as `policy_denied`.
    pub(crate) fn granted(&self, namespace: &str, package: &str, interface: &str) -> Result<(), RpcError> {
        match &self.grants {
            Some(grants) if !grants.capabilities.allows(namespace, package, interface) => {
                Err(refuse(grants, &self.id, namespace, package, interface))
            }
            _ => Ok(()),
        }
    }
}

/// The refusal of a call to `namespace:package/interface` that `grants` do not cover; the
/// event goes out on its own task, so the refusal does not wait for NATS.
fn refuse(grants: &Grants, component: &str, namespace: &str, package: &str, interface: &str) -> RpcError {
    let capability = format!("{namespace}:{package}/{interface}");
    let message = format!(
        "{component} may not call {capability}: its claims do not grant {}",
        Capabilities::needed(namespace, package, interface)
    );
    warn!(component, %capability, "call refused by the component's claims");
    let event = Event::PolicyDenied(PolicyDenied {
        request_id: String::new(),
        host_id: grants.host_id.clone(),
        component_id: component.to_owned(),
        reason: "capability".to_owned(),
        capability: Some(capability),
        message: message.clone(),
    });
    let events = grants.events.clone();
    tokio::spawn(async move { events.emit(&event).await });
    RpcError::new(ErrorKind::Denied, message)
}

impl Route {
    /// Invoke `operation` with an encoded `payload` on the linked component (a call between
    /// components, signed as the caller); its answer's payload. The other component may take
    /// as long as the invocation being served has left (the host's RPC timeout when it has no
    /// deadline): it is work, not a capability's quick answer.
    pub(crate) async fn call_component(&self, operation: &str, payload: Vec<u8>) -> Result<Vec<u8>, RpcError> {
        let prepared = self.env.rpc.prepare_from(&self.env.id, &self.target, &self.name, operation);
        let left = self.deadline_ms.saturating_sub(ferry_proto::time::now_ms());
        let wait = if left > 0 { std::time::Duration::from_millis(left) } else { self.env.rpc.timeout() };
        self.send(prepared, operation, payload, wait).await
    }

    /// Send a prepared invocation of `operation` carrying `payload` with this route's cause and
    /// deadline, waiting at most `wait`.
    async fn send(
        &self,
        prepared: (Invocation, MacKey),
        operation: &str,
        payload: Vec<u8>,
        wait: std::time::Duration,
    ) -> Result<Vec<u8>, RpcError> {
        let (mut inv, key) = prepared;
        inv.payload = payload;
        inv.cause = self.causes.of(operation);
        inv.trace_context = self.causes.trace_context();
        inv.deadline_ms = self.deadline_ms;
        self.env.rpc.send(inv, &key, wait).await
    }

    /// Invoke `operation` with `request` on the linked provider and decode its answer.
    pub(crate) async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        operation: &str,
        request: &Req,
    ) -> Result<Resp, RpcError> {
        let prepared = self.env.rpc.prepare(&self.env.id, &self.target, &self.name, operation);
        let bytes = self.send(prepared, operation, codec::encode(request)?, self.env.rpc.timeout()).await?;
        codec::decode(&bytes)
            .map_err(|e| RpcError::bad_request(format!("provider answered with an undecodable payload: {e}")))
    }
}
