//! `wasi:blobstore@0.2.0-draft`: containers and objects on the blobstore provider linked for
//! the interface under the link name the component chose. Object data streams both ways:
//! once `write-data` is called, what a component writes to an outgoing value is offered to the
//! provider as a pulled stream while it writes (what it wrote before is spooled, see
//! [`super::spool`]); an incoming value pulls from the provider as the component reads. Memory
//! per transfer is a few chunks, whatever the object's size.

use std::collections::VecDeque;

use bytes::Bytes;
use ferry_lattice::{
    body::{INLINE_WAIT, LatticeBody},
    stream::{self, ByteStream},
};
use ferry_proto::{
    RpcError,
    blobstore::{self as wire, op},
    codec,
    keyvalue::Empty,
    stream::DEFAULT_CHUNK_SIZE,
};
use futures::StreamExt as _;
use serde::{Serialize, de::DeserializeOwned};
use tokio_util::io::StreamReader;
use wasmtime::component::{HasSelf, Linker, Resource};
use wasmtime_wasi::p2::{DynInputStream, DynOutputStream, pipe::AsyncReadStream};

use crate::{
    capability::{route::Route, spool::OutgoingData},
    state::HostState,
};

/// Names fetched from the provider per page of a listing.
const LIST_PAGE: u32 = 1000;

/// An open container: its name.
#[derive(Debug)]
#[allow(unreachable_pub, reason = "named by the generated bindings, which re-export it")]
pub struct Container {
    name: String,
}

/// A listing in progress.
#[derive(Debug)]
#[allow(unreachable_pub, reason = "named by the generated bindings, which re-export it")]
pub struct ObjectNames {
    container: String,
    after: Option<String>,
    done: bool,
    buffer: VecDeque<String>,
}

/// Data a component is writing, and the upload reading it once `write-data` started it.
#[allow(unreachable_pub, reason = "named by the generated bindings, which re-export it")]
pub struct OutgoingValue {
    data: OutgoingData,
    upload: Option<Upload>,
}

/// An upload started by `write-data`, and what it writes, for the log.
struct Upload {
    task: tokio::task::JoinHandle<Result<(), RpcError>>,
    component: String,
    container: String,
    object: String,
}

impl Drop for OutgoingValue {
    fn drop(&mut self) {
        // `finish` takes the upload; one still here was abandoned by the component.
        if let Some(upload) = &self.upload {
            tracing::warn!(
                component = %upload.component,
                container = %upload.container,
                object = %upload.object,
                "outgoing value dropped without finish: the object is not written"
            );
        }
    }
}

/// Data a component is reading.
#[allow(unreachable_pub, reason = "named by the generated bindings, which re-export it")]
pub struct IncomingValue {
    size: u64,
    body: LatticeBody,
}

mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "ferry:host/blobstore",
        imports: { default: async | trappable },
        with: {
            "wasi:io": wasmtime_wasi::p2::bindings::io,
            "wasi:blobstore/container.container": super::Container,
            "wasi:blobstore/container.stream-object-names": super::ObjectNames,
            "wasi:blobstore/types.outgoing-value": super::OutgoingValue,
            "wasi:blobstore/types.incoming-value": super::IncomingValue,
        },
    });
}

use bindings::wasi::blobstore::{
    blobstore, container,
    types::{self, ContainerMetadata, ObjectId, ObjectMetadata},
};

pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    blobstore::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?;
    container::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?;
    types::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)
}

type Res<T> = wasmtime::Result<Result<T, String>>;

impl Route {
    /// [`Route::call`] with the error as the interface's string.
    async fn blob<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        operation: &str,
        request: &Req,
    ) -> Result<Resp, String> {
        self.call(operation, request).await.map_err(|e| e.to_string())
    }

    /// `get-data`: the answer's data, pulled from the provider's stream as it is read.
    async fn get_data(&self, request: &wire::GetDataRequest) -> Result<IncomingValue, RpcError> {
        let (mut inv, key) = self.env.rpc.prepare(&self.env.id, &self.target, &self.name, op::GET_DATA);
        inv.deadline_ms = self.deadline_ms;
        inv.payload = codec::encode(request)?;
        inv.cause = self.causes.of(op::GET_DATA);
        inv.trace_context = self.causes.trace_context();
        let bytes = self.env.rpc.send(inv, &key, self.env.rpc.timeout()).await?;
        let answer: wire::DataResponse = codec::decode(&bytes)?;
        let body = LatticeBody::from_payload(
            self.env.rpc.nats(),
            self.env.rpc.lattice(),
            answer.data,
            answer.data_stream.as_deref(),
            &key,
            self.env.rpc.timeout(),
        )?;
        Ok(IncomingValue { size: answer.size, body })
    }

    /// `write-data`: offer `data` as a stream (past its first chunk) and invoke the provider.
    async fn write_data(self, container: String, object: String, data: ByteStream) -> Result<(), RpcError> {
        let (mut inv, key) = self.env.rpc.prepare(&self.env.id, &self.target, &self.name, op::WRITE_DATA);
        inv.deadline_ms = self.deadline_ms;
        inv.cause = self.causes.of(op::WRITE_DATA);
        inv.trace_context = self.causes.trace_context();
        let (inline, rest) = stream::split_inline(data, DEFAULT_CHUNK_SIZE, INLINE_WAIT).await?;
        let mut request = wire::WriteDataRequest { container, object, data: inline.to_vec(), data_stream: None };
        let offer = match rest {
            Some(rest) => {
                let id = stream::new_stream_id();
                let rpc = &self.env.rpc;
                let offer =
                    stream::offer(rpc.nats(), rpc.lattice(), &id, key.clone(), rest, DEFAULT_CHUNK_SIZE, rpc.timeout())
                        .await?;
                request.data_stream = Some(id);
                Some(offer)
            }
            None => None,
        };
        inv.payload = codec::encode(&request)?;
        let result = self
            .env
            .rpc
            .send(inv, &key, self.env.rpc.timeout())
            .await
            .and_then(|bytes| codec::decode::<Empty>(&bytes).map(|_| ()).map_err(RpcError::from));
        if result.is_err()
            && let Some(offer) = offer
        {
            offer.abort();
        }
        result
    }
}

/// Keep `_` of an `Empty` answer.
fn done(result: Result<Empty, String>) -> Result<(), String> {
    result.map(|_| ())
}

impl HostState {
    fn blob_route(&self, interface: &str) -> Result<Route, String> {
        self.route(wire::WIT_NAMESPACE, wire::WIT_PACKAGE, interface).map_err(|e| e.to_string())
    }

    fn container_name(&self, container: &Resource<Container>) -> wasmtime::Result<String> {
        Ok(self.table.get(container)?.name.clone())
    }

    async fn open_container(&mut self, name: String, operation: &str) -> Res<Resource<Container>> {
        let route = match self.blob_route("blobstore") {
            Ok(route) => route,
            Err(err) => return Ok(Err(err)),
        };
        let opened: Result<Empty, String> =
            route.blob(operation, &wire::ContainerRequest { container: name.clone() }).await;
        match opened {
            Ok(_) => Ok(Ok(self.table.push(Container { name })?)),
            Err(err) => Ok(Err(err)),
        }
    }
}

macro_rules! route_or_return {
    ($state:expr, $interface:expr) => {
        match $state.blob_route($interface) {
            Ok(route) => route,
            Err(err) => return Ok(Err(err)),
        }
    };
}

impl blobstore::Host for HostState {
    async fn create_container(&mut self, name: String) -> Res<Resource<Container>> {
        self.open_container(name, op::CREATE_CONTAINER).await
    }

    async fn get_container(&mut self, name: String) -> Res<Resource<Container>> {
        self.open_container(name, op::GET_CONTAINER).await
    }

    async fn delete_container(&mut self, name: String) -> Res<()> {
        let route = route_or_return!(self, "blobstore");
        Ok(done(route.blob(op::DELETE_CONTAINER, &wire::ContainerRequest { container: name }).await))
    }

    async fn container_exists(&mut self, name: String) -> Res<bool> {
        let route = route_or_return!(self, "blobstore");
        let answer: Result<wire::ExistsResponse, String> =
            route.blob(op::CONTAINER_EXISTS, &wire::ContainerRequest { container: name }).await;
        Ok(answer.map(|a| a.exists))
    }

    async fn copy_object(&mut self, src: ObjectId, dest: ObjectId) -> Res<()> {
        let route = route_or_return!(self, "blobstore");
        Ok(done(route.blob(op::COPY_OBJECT, &copy_request(src, dest)).await))
    }

    async fn move_object(&mut self, src: ObjectId, dest: ObjectId) -> Res<()> {
        let route = route_or_return!(self, "blobstore");
        Ok(done(route.blob(op::MOVE_OBJECT, &copy_request(src, dest)).await))
    }
}

fn copy_request(src: ObjectId, dest: ObjectId) -> wire::CopyRequest {
    wire::CopyRequest {
        src: wire::ObjectId { container: src.container, object: src.object },
        dest: wire::ObjectId { container: dest.container, object: dest.object },
    }
}

impl container::Host for HostState {}

impl container::HostContainer for HostState {
    async fn name(&mut self, this: Resource<Container>) -> Res<String> {
        Ok(Ok(self.container_name(&this)?))
    }

    async fn info(&mut self, this: Resource<Container>) -> Res<ContainerMetadata> {
        let container = self.container_name(&this)?;
        let route = route_or_return!(self, "container");
        let info: Result<wire::ContainerInfo, String> =
            route.blob(op::CONTAINER_INFO, &wire::ContainerRequest { container }).await;
        Ok(info.map(|i| ContainerMetadata { name: i.name, created_at: i.created_at }))
    }

    async fn get_data(
        &mut self,
        this: Resource<Container>,
        name: String,
        start: u64,
        end: u64,
    ) -> Res<Resource<IncomingValue>> {
        let container = self.container_name(&this)?;
        let route = route_or_return!(self, "container");
        let request = wire::GetDataRequest { container, object: name, start, end };
        match route.get_data(&request).await {
            Ok(value) => Ok(Ok(self.table.push(value)?)),
            Err(err) => Ok(Err(err.to_string())),
        }
    }

    async fn write_data(&mut self, this: Resource<Container>, name: String, data: Resource<OutgoingValue>) -> Res<()> {
        let container = self.container_name(&this)?;
        let route = route_or_return!(self, "container");
        let value = self.table.get_mut(&data)?;
        match value.data.upload().await {
            Ok(stream) => {
                let task = tokio::spawn(route.write_data(container.clone(), name.clone(), stream));
                value.upload = Some(Upload { task, component: self.env.id.clone(), container, object: name });
                Ok(Ok(()))
            }
            Err(err) => Ok(Err(err.to_string())),
        }
    }

    async fn list_objects(&mut self, this: Resource<Container>) -> Res<Resource<ObjectNames>> {
        let container = self.container_name(&this)?;
        Ok(Ok(self.table.push(ObjectNames { container, after: None, done: false, buffer: VecDeque::new() })?))
    }

    async fn delete_object(&mut self, this: Resource<Container>, name: String) -> Res<()> {
        let container = self.container_name(&this)?;
        let route = route_or_return!(self, "container");
        Ok(done(route.blob(op::DELETE_OBJECT, &wire::ObjectRequest { container, object: name }).await))
    }

    async fn delete_objects(&mut self, this: Resource<Container>, names: Vec<String>) -> Res<()> {
        let container = self.container_name(&this)?;
        let route = route_or_return!(self, "container");
        Ok(done(route.blob(op::DELETE_OBJECTS, &wire::ObjectsRequest { container, objects: names }).await))
    }

    async fn has_object(&mut self, this: Resource<Container>, name: String) -> Res<bool> {
        let container = self.container_name(&this)?;
        let route = route_or_return!(self, "container");
        let answer: Result<wire::ExistsResponse, String> =
            route.blob(op::HAS_OBJECT, &wire::ObjectRequest { container, object: name }).await;
        Ok(answer.map(|a| a.exists))
    }

    async fn object_info(&mut self, this: Resource<Container>, name: String) -> Res<ObjectMetadata> {
        let container = self.container_name(&this)?;
        let route = route_or_return!(self, "container");
        let info: Result<wire::ObjectInfo, String> =
            route.blob(op::OBJECT_INFO, &wire::ObjectRequest { container, object: name }).await;
        Ok(info.map(|i| ObjectMetadata {
            name: i.name,
            container: i.container,
            created_at: i.created_at,
            size: i.size,
        }))
    }

    async fn clear(&mut self, this: Resource<Container>) -> Res<()> {
        let container = self.container_name(&this)?;
        let route = route_or_return!(self, "container");
        Ok(done(route.blob(op::CLEAR, &wire::ContainerRequest { container }).await))
    }

    async fn drop(&mut self, this: Resource<Container>) -> wasmtime::Result<()> {
        self.table.delete(this)?;
        Ok(())
    }
}

impl HostState {
    /// Fill a listing's buffer to `want` names (or the end).
    async fn fill(&mut self, names: &Resource<ObjectNames>, want: usize) -> Result<(), String> {
        loop {
            let (container, after, have, done) = {
                let listing = self.table.get(names).map_err(|e| e.to_string())?;
                (listing.container.clone(), listing.after.clone(), listing.buffer.len(), listing.done)
            };
            if done || have >= want {
                return Ok(());
            }
            let route = self.blob_route("container")?;
            let page: wire::ListResponse =
                route.blob(op::LIST_OBJECTS, &wire::ListRequest { container, after, limit: LIST_PAGE }).await?;
            let listing = self.table.get_mut(names).map_err(|e| e.to_string())?;
            listing.after = page.names.last().cloned().or(listing.after.take());
            listing.done = page.done || page.names.is_empty();
            listing.buffer.extend(page.names);
        }
    }
}

impl container::HostStreamObjectNames for HostState {
    async fn read_stream_object_names(&mut self, this: Resource<ObjectNames>, len: u64) -> Res<(Vec<String>, bool)> {
        let want = usize::try_from(len).unwrap_or(usize::MAX).min(100_000);
        if let Err(err) = self.fill(&this, want).await {
            return Ok(Err(err));
        }
        let listing = self.table.get_mut(&this)?;
        let take = want.min(listing.buffer.len());
        let names: Vec<String> = listing.buffer.drain(..take).collect();
        Ok(Ok((names, listing.done && listing.buffer.is_empty())))
    }

    async fn skip_stream_object_names(&mut self, this: Resource<ObjectNames>, num: u64) -> Res<(u64, bool)> {
        let want = usize::try_from(num).unwrap_or(usize::MAX).min(100_000);
        if let Err(err) = self.fill(&this, want).await {
            return Ok(Err(err));
        }
        let listing = self.table.get_mut(&this)?;
        let take = want.min(listing.buffer.len());
        listing.buffer.drain(..take);
        Ok(Ok((take as u64, listing.done && listing.buffer.is_empty())))
    }

    async fn drop(&mut self, this: Resource<ObjectNames>) -> wasmtime::Result<()> {
        self.table.delete(this)?;
        Ok(())
    }
}

impl types::Host for HostState {}

impl types::HostOutgoingValue for HostState {
    async fn new_outgoing_value(&mut self) -> wasmtime::Result<Resource<OutgoingValue>> {
        let data = OutgoingData::new(self.env.blob_spool.clone());
        Ok(self.table.push(OutgoingValue { data, upload: None })?)
    }

    async fn outgoing_value_write_body(
        &mut self,
        this: Resource<OutgoingValue>,
    ) -> wasmtime::Result<Result<Resource<DynOutputStream>, ()>> {
        let value = self.table.get_mut(&this)?;
        let Some(stream) = value.data.output_stream() else { return Ok(Err(())) };
        let stream: DynOutputStream = Box::new(stream);
        Ok(Ok(self.table.push(stream)?))
    }

    async fn finish(&mut self, this: Resource<OutgoingValue>) -> Res<()> {
        let mut value = self.table.delete(this)?;
        value.data.finish();
        let Some(upload) = value.upload.take() else {
            return Ok(Err(RpcError::bad_request("finish before write-data: nothing was written").to_string()));
        };
        match upload.task.await {
            Ok(Ok(())) => Ok(Ok(())),
            Ok(Err(err)) => Ok(Err(err.to_string())),
            Err(join) => Ok(Err(RpcError::internal(format!("upload failed: {join}")).to_string())),
        }
    }

    async fn drop(&mut self, this: Resource<OutgoingValue>) -> wasmtime::Result<()> {
        self.table.delete(this)?;
        Ok(())
    }
}

impl types::HostIncomingValue for HostState {
    async fn incoming_value_consume_sync(&mut self, this: Resource<IncomingValue>) -> Res<Vec<u8>> {
        let value = self.table.delete(this)?;
        Ok(value.body.collect_bytes().await.map(|b: Bytes| b.to_vec()).map_err(|e| e.to_string()))
    }

    async fn incoming_value_consume_async(&mut self, this: Resource<IncomingValue>) -> Res<Resource<DynInputStream>> {
        let value = self.table.delete(this)?;
        let reader = StreamReader::new(value.body.map(|chunk| chunk.map_err(std::io::Error::other)));
        let stream: DynInputStream = Box::new(AsyncReadStream::new(reader));
        Ok(Ok(self.table.push(stream)?))
    }

    async fn size(&mut self, this: Resource<IncomingValue>) -> wasmtime::Result<u64> {
        Ok(self.table.get(&this)?.size)
    }

    async fn drop(&mut self, this: Resource<IncomingValue>) -> wasmtime::Result<()> {
        self.table.delete(this)?;
        Ok(())
    }
}
