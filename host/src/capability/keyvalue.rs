//! `wasi:keyvalue/{store,atomics,batch}@0.2.0-draft`: every call on a bucket becomes one
//! invocation to the provider linked for the interface under the link name in force when it is
//! made; `open` is answered here. A call with no link fails at once with
//! `other("not-linked: …")`.

use ferry_proto::{
    ErrorKind, RpcError,
    keyvalue::{self as kv, op},
};
use serde::{Serialize, de::DeserializeOwned};
use wasmtime::component::{HasSelf, Linker, Resource};

use crate::{capability::route::Route, state::HostState};

/// A `bucket` resource: the identifier the component opened.
#[derive(Debug)]
#[allow(unreachable_pub, reason = "named by the generated bindings, which re-export it")]
pub struct Bucket {
    identifier: String,
}

impl Bucket {
    /// The bucket `identifier` names, as `open` makes it (a watcher's events carry one).
    pub(crate) fn new(identifier: String) -> Self {
        Self { identifier }
    }
}

pub(crate) mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "ferry:host/keyvalue",
        imports: { default: async | trappable },
        with: { "wasi:keyvalue/store.bucket": super::Bucket },
    });
}

use bindings::wasi::keyvalue::{atomics, batch, store};

pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    store::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?;
    atomics::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?;
    batch::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)
}

/// The one conversion from a failed invocation to the WIT error, kind for kind: a refusal is
/// `access-denied`, a store that does not exist `no-such-store`; every other kind stays
/// readable as the prefix of `other`.
fn to_wit(err: RpcError) -> store::Error {
    match err.kind {
        ErrorKind::Denied => store::Error::AccessDenied,
        ErrorKind::NotFound => store::Error::NoSuchStore,
        _ => store::Error::Other(err.to_string()),
    }
}

type KvResult<T> = wasmtime::Result<Result<T, store::Error>>;

/// Send `request` along `route` (resolved before the first `await`).
async fn call<Req: Serialize, Resp: DeserializeOwned>(
    route: Result<Route, store::Error>,
    operation: &str,
    request: Req,
) -> Result<Resp, store::Error> {
    route?.call(operation, &request).await.map_err(to_wit)
}

impl HostState {
    /// Resolve the link now; the `await` happens on the [`Route`], which holds no borrow of
    /// the (non-`Sync`) store state.
    fn kv_route(&self, interface: &str) -> Result<Route, store::Error> {
        self.route(kv::WIT_NAMESPACE, kv::WIT_PACKAGE, interface).map_err(to_wit)
    }

    fn bucket_name(&self, bucket: &Resource<Bucket>) -> wasmtime::Result<String> {
        Ok(self.table.get(bucket)?.identifier.clone())
    }
}

impl store::Host for HostState {
    /// No round trip and no link: the bucket is a name that every later call carries to the
    /// provider linked at that moment (a component may open, then pick the link with
    /// `wasmcloud:bus/lattice`, then call), which checks it there.
    async fn open(&mut self, identifier: String) -> KvResult<Resource<Bucket>> {
        Ok(Ok(self.table.push(Bucket { identifier })?))
    }
}

impl store::HostBucket for HostState {
    async fn get(&mut self, bucket: Resource<Bucket>, key: String) -> KvResult<Option<Vec<u8>>> {
        let bucket = self.bucket_name(&bucket)?;
        let resp: Result<kv::GetResponse, _> =
            call(self.kv_route("store"), op::GET, kv::KeyRequest { bucket, key }).await;
        Ok(resp.map(|r| r.value))
    }

    async fn set(&mut self, bucket: Resource<Bucket>, key: String, value: Vec<u8>) -> KvResult<()> {
        let bucket = self.bucket_name(&bucket)?;
        let resp: Result<kv::Empty, _> =
            call(self.kv_route("store"), op::SET, kv::SetRequest { bucket, key, value }).await;
        Ok(resp.map(|_| ()))
    }

    async fn delete(&mut self, bucket: Resource<Bucket>, key: String) -> KvResult<()> {
        let bucket = self.bucket_name(&bucket)?;
        let resp: Result<kv::Empty, _> = call(self.kv_route("store"), op::DELETE, kv::KeyRequest { bucket, key }).await;
        Ok(resp.map(|_| ()))
    }

    async fn exists(&mut self, bucket: Resource<Bucket>, key: String) -> KvResult<bool> {
        let bucket = self.bucket_name(&bucket)?;
        let resp: Result<kv::ExistsResponse, _> =
            call(self.kv_route("store"), op::EXISTS, kv::KeyRequest { bucket, key }).await;
        Ok(resp.map(|r| r.exists))
    }

    async fn list_keys(&mut self, bucket: Resource<Bucket>, cursor: Option<u64>) -> KvResult<store::KeyResponse> {
        let bucket = self.bucket_name(&bucket)?;
        let resp: Result<kv::ListKeysResponse, _> =
            call(self.kv_route("store"), op::LIST_KEYS, kv::ListKeysRequest { bucket, cursor }).await;
        Ok(resp.map(|r| store::KeyResponse { keys: r.keys, cursor: r.cursor }))
    }

    async fn drop(&mut self, bucket: Resource<Bucket>) -> wasmtime::Result<()> {
        self.table.delete(bucket)?;
        Ok(())
    }
}

impl atomics::Host for HostState {
    async fn increment(&mut self, bucket: Resource<Bucket>, key: String, delta: u64) -> KvResult<u64> {
        let bucket = self.bucket_name(&bucket)?;
        let resp: Result<kv::IncrementResponse, _> =
            call(self.kv_route("atomics"), op::INCREMENT, kv::IncrementRequest { bucket, key, delta }).await;
        Ok(resp.map(|r| r.value))
    }
}

impl batch::Host for HostState {
    async fn get_many(
        &mut self,
        bucket: Resource<Bucket>,
        keys: Vec<String>,
    ) -> KvResult<Vec<Option<(String, Vec<u8>)>>> {
        let bucket = self.bucket_name(&bucket)?;
        let resp: Result<kv::GetManyResponse, _> =
            call(self.kv_route("batch"), op::GET_MANY, kv::KeysRequest { bucket, keys }).await;
        Ok(resp.map(|r| r.items.into_iter().map(|i| i.map(|kv| (kv.key, kv.value))).collect()))
    }

    async fn set_many(&mut self, bucket: Resource<Bucket>, key_values: Vec<(String, Vec<u8>)>) -> KvResult<()> {
        let bucket = self.bucket_name(&bucket)?;
        let items = key_values.into_iter().map(|(key, value)| kv::KeyValue { key, value }).collect();
        let resp: Result<kv::Empty, _> =
            call(self.kv_route("batch"), op::SET_MANY, kv::SetManyRequest { bucket, items }).await;
        Ok(resp.map(|_| ()))
    }

    async fn delete_many(&mut self, bucket: Resource<Bucket>, keys: Vec<String>) -> KvResult<()> {
        let bucket = self.bucket_name(&bucket)?;
        let resp: Result<kv::Empty, _> =
            call(self.kv_route("batch"), op::DELETE_MANY, kv::KeysRequest { bucket, keys }).await;
        Ok(resp.map(|_| ()))
    }
}
