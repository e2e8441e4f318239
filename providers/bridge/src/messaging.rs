//! `wasmcloud:messaging/consumer` forwarded: a linked component's `publish` and `request`
//! become calls of the foreign process's `Messaging` service.

use ferry_provider_sdk::{
    InvocationContext, RpcError,
    grpc::v1,
    messaging::{BrokerMessage, Messaging, RequestMessage},
};

use crate::{
    keyvalue::{caller, timed},
    links::BridgeLink,
    provider::Bridge,
};

fn to_wire(message: BrokerMessage) -> v1::BrokerMessage {
    v1::BrokerMessage { subject: message.subject, body: message.body, reply_to: message.reply_to }
}

impl Messaging for Bridge {
    async fn publish(&self, ctx: &InvocationContext<BridgeLink>, message: BrokerMessage) -> Result<(), RpcError> {
        let (foreign, limit) = self.admit(ctx)?;
        let request = v1::PublishRequest { caller: caller(ctx), message: Some(to_wire(message)) };
        foreign.messaging().publish(timed(request, limit)).await.map(drop).map_err(|status| foreign.failed(&status))
    }

    async fn request(
        &self,
        ctx: &InvocationContext<BridgeLink>,
        request: RequestMessage,
    ) -> Result<BrokerMessage, RpcError> {
        let (foreign, limit) = self.admit(ctx)?;
        let request = v1::RequestRequest {
            caller: caller(ctx),
            subject: request.subject,
            body: request.body,
            timeout_ms: request.timeout_ms,
        };
        let reply = foreign
            .messaging()
            .request(timed(request, limit))
            .await
            .map_err(|status| foreign.failed(&status))?
            .into_inner();
        Ok(BrokerMessage { subject: reply.subject, body: reply.body, reply_to: reply.reply_to })
    }
}
