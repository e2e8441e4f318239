//! `wasi:keyvalue` forwarded: each SDK key-value call becomes one call of the foreign
//! process's `KeyValue` service, with the caller and link named and the caller's deadline set.

use ferry_provider_sdk::{
    InvocationContext, RpcError,
    grpc::v1::{self, key_value_client::KeyValueClient},
    keyvalue::{KeyValue, KeyValuePair, ListKeysResponse},
};

use crate::{
    foreign::Foreign,
    h2::Connection,
    links::BridgeLink,
    provider::{Bridge, Forwarded},
};

/// Who calls, as the contract names it (every capability's requests carry it).
pub(crate) fn caller(ctx: &InvocationContext<BridgeLink>) -> Option<v1::Caller> {
    Some(v1::Caller { source_id: ctx.origin.clone(), link_name: ctx.link.link.name.clone() })
}

impl Bridge {
    /// Run one call of the foreign `KeyValue` service within the call's time limit.
    async fn kv<T, Fut>(
        &self,
        ctx: &InvocationContext<BridgeLink>,
        call: impl FnOnce(KeyValueClient<Connection>, Forwarded) -> Fut,
    ) -> Result<T, RpcError>
    where
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let (foreign, forwarded): (&Foreign, Forwarded) = self.admit(ctx)?;
        call(foreign.key_value(), forwarded)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|status| foreign.failed(&status))
    }
}

/// A request that carries its deadline and trace to the foreign process.
pub(crate) fn timed<T>(message: T, forwarded: Forwarded) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(forwarded.limit);
    if let Some(trace) = forwarded.trace
        && let Ok(value) = trace.to_string().parse()
    {
        request.metadata_mut().insert(ferry_provider_sdk::trace::TRACEPARENT, value);
    }
    request
}

impl KeyValue for Bridge {
    async fn get(
        &self,
        ctx: &InvocationContext<BridgeLink>,
        bucket: &str,
        key: &str,
    ) -> Result<Option<Vec<u8>>, RpcError> {
        let message = v1::KeyRequest { caller: caller(ctx), bucket: bucket.to_owned(), key: key.to_owned() };
        Ok(self.kv(ctx, |mut c, t| async move { c.get(timed(message, t)).await }).await?.value)
    }

    async fn set(
        &self,
        ctx: &InvocationContext<BridgeLink>,
        bucket: &str,
        key: &str,
        value: Vec<u8>,
    ) -> Result<(), RpcError> {
        let message = v1::SetRequest { caller: caller(ctx), bucket: bucket.to_owned(), key: key.to_owned(), value };
        self.kv(ctx, |mut c, t| async move { c.set(timed(message, t)).await }).await.map(drop)
    }

    async fn delete(&self, ctx: &InvocationContext<BridgeLink>, bucket: &str, key: &str) -> Result<(), RpcError> {
        let message = v1::KeyRequest { caller: caller(ctx), bucket: bucket.to_owned(), key: key.to_owned() };
        self.kv(ctx, |mut c, t| async move { c.delete(timed(message, t)).await }).await.map(drop)
    }

    async fn exists(&self, ctx: &InvocationContext<BridgeLink>, bucket: &str, key: &str) -> Result<bool, RpcError> {
        let message = v1::KeyRequest { caller: caller(ctx), bucket: bucket.to_owned(), key: key.to_owned() };
        Ok(self.kv(ctx, |mut c, t| async move { c.exists(timed(message, t)).await }).await?.exists)
    }

    async fn list_keys(
        &self,
        ctx: &InvocationContext<BridgeLink>,
        bucket: &str,
        cursor: Option<u64>,
    ) -> Result<ListKeysResponse, RpcError> {
        let message = v1::ListKeysRequest { caller: caller(ctx), bucket: bucket.to_owned(), cursor };
        let page = self.kv(ctx, |mut c, t| async move { c.list_keys(timed(message, t)).await }).await?;
        Ok(ListKeysResponse { keys: page.keys, cursor: page.cursor })
    }

    async fn increment(
        &self,
        ctx: &InvocationContext<BridgeLink>,
        bucket: &str,
        key: &str,
        delta: u64,
    ) -> Result<u64, RpcError> {
        let message =
            v1::IncrementRequest { caller: caller(ctx), bucket: bucket.to_owned(), key: key.to_owned(), delta };
        Ok(self.kv(ctx, |mut c, t| async move { c.increment(timed(message, t)).await }).await?.value)
    }

    async fn get_many(
        &self,
        ctx: &InvocationContext<BridgeLink>,
        bucket: &str,
        keys: Vec<String>,
    ) -> Result<Vec<Option<KeyValuePair>>, RpcError> {
        let asked = keys.len();
        let message = v1::KeysRequest { caller: caller(ctx), bucket: bucket.to_owned(), keys };
        let items = self.kv(ctx, |mut c, t| async move { c.get_many(timed(message, t)).await }).await?.items;
        if items.len() != asked {
            return Err(RpcError::new(
                ferry_provider_sdk::ErrorKind::ProviderError,
                format!("the bridged provider answered {} entries for {asked} keys", items.len()),
            ));
        }
        Ok(items.into_iter().map(|item| item.value.map(|value| KeyValuePair { key: item.key, value })).collect())
    }

    async fn set_many(
        &self,
        ctx: &InvocationContext<BridgeLink>,
        bucket: &str,
        items: Vec<KeyValuePair>,
    ) -> Result<(), RpcError> {
        let items = items.into_iter().map(|item| v1::KeyValuePair { key: item.key, value: item.value }).collect();
        let message = v1::SetManyRequest { caller: caller(ctx), bucket: bucket.to_owned(), items };
        self.kv(ctx, |mut c, t| async move { c.set_many(timed(message, t)).await }).await.map(drop)
    }

    async fn delete_many(
        &self,
        ctx: &InvocationContext<BridgeLink>,
        bucket: &str,
        keys: Vec<String>,
    ) -> Result<(), RpcError> {
        let message = v1::KeysRequest { caller: caller(ctx), bucket: bucket.to_owned(), keys };
        self.kv(ctx, |mut c, t| async move { c.delete_many(timed(message, t)).await }).await.map(drop)
    }
}
