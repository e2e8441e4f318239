//! A running component: compiled once, `instantiate_pre`'d once, a fresh instance per
//! invocation, bounded by `max_instances` and the execution time limit.

use std::{
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use ferry_lattice::{
    body::{INLINE_WAIT, LatticeBody, headers_from_wire, headers_to_wire},
    stream::{self, ByteStream},
};
use ferry_proto::{
    ErrorKind, RpcError,
    http::{HttpRequest, HttpResponse},
    keyvalue::WatchEvent,
    messaging::BrokerMessage,
};
use futures::StreamExt as _;
use http_body_util::BodyExt as _;
use tokio::sync::Semaphore;
use tracing::warn;
use wasmtime::{
    Engine, Store,
    component::{Component, InstancePre, Linker, Type, Val},
};
use wasmtime_wasi_http::{
    WasiHttpView as _,
    p2::bindings::{ProxyPre, http::types::Scheme},
};

use crate::{
    HostError, Limits,
    capability::{custom, keyvalue::Bucket},
    engine::time_slices,
    state::{Causes, ComponentEnv, HostState},
    wit_value,
};

/// Bindings of the messaging export.
mod handler {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "ferry:host/messaging-handler",
        exports: { default: async },
    });

    pub(crate) use wasmcloud::messaging::types::BrokerMessage;
}

/// Bindings of the key-value watcher export.
mod watcher {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "ferry:host/keyvalue-watcher",
        exports: { default: async },
        with: { "wasi:keyvalue/store": crate::capability::keyvalue::bindings::wasi::keyvalue::store },
    });
}

/// See [`RunningComponent::run`].
struct Run {
    store: Store<HostState>,
    deadline: Duration,
    why: &'static str,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

/// Default bound of concurrently running instances of one component on one host.
pub(crate) const DEFAULT_MAX_INSTANCES: u32 = 100;
/// Longest trap message passed back to callers.
const MAX_TRAP_MESSAGE: usize = 1024;

/// What a component was started with.
#[derive(Debug, Clone)]
pub(crate) struct ComponentSpec {
    pub(crate) id: String,
    pub(crate) image: String,
    pub(crate) max_instances: u32,
    pub(crate) config: Vec<String>,
    /// Its verified claims, when it is signed.
    pub(crate) claims: Option<Arc<ferry_proto::claims::ComponentClaims>>,
}

/// A component ready to serve invocations.
pub(crate) struct RunningComponent {
    pub(crate) spec: ComponentSpec,
    env: Arc<ComponentEnv>,
    engine: Engine,
    /// Present when the component exports `wasi:http/incoming-handler`.
    proxy: Option<ProxyPre<HostState>>,
    /// Present when the component exports `wasmcloud:messaging/handler@0.2.0`.
    messaging: Option<handler::MessagingHandlerPre<HostState>>,
    /// Present when the component exports `wasi:keyvalue/watcher@0.2.0-draft`.
    watcher: Option<watcher::KeyvalueWatcherPre<HostState>>,
    /// Interfaces of its own it exports for other components (`ns:pkg/iface@version`), and
    /// what calls them.
    custom: Vec<String>,
    pre: InstancePre<HostState>,
    /// One permit per running instance: the `max_instances` bound.
    permits: Arc<Semaphore>,
    /// One permit per admitted invocation, running or waiting for an instance:
    /// `max_instances` + [`Limits::queued_invocations`]. The bound on the host's work and
    /// memory for this component.
    admission: Arc<Semaphore>,
    /// Invocations that may wait for an instance ([`Limits::queued_invocations`]).
    queue_room: usize,
    /// Invocations refused for lack of room so far (to rate-limit the log line).
    shed: AtomicU64,
    execution_time: Duration,
}

impl RunningComponent {
    /// Prepare `component` for instantiation with every import the host provides.
    pub(crate) fn new(
        engine: &Engine,
        linker: &Linker<HostState>,
        component: &Component,
        env: Arc<ComponentEnv>,
        spec: ComponentSpec,
        limits: &Limits,
    ) -> Result<Self, HostError> {
        // Its imports of other components' interfaces are its own: a linker of its own.
        let mut linker = linker.clone();
        custom::link_imports(&mut linker, component, engine)?;
        let pre = linker.instantiate_pre(component)?;
        let custom = custom::custom_exports(component, engine)?;
        let proxy = ProxyPre::new(pre.clone()).ok();
        let messaging = handler::MessagingHandlerPre::new(pre.clone()).ok();
        let watcher = watcher::KeyvalueWatcherPre::new(pre.clone()).ok();
        if proxy.is_none() && messaging.is_none() && watcher.is_none() && custom.is_empty() {
            return Err(HostError::Invalid(format!(
                "component {} exports none of wasi:http/incoming-handler@0.2.x, wasmcloud:messaging/handler@0.2.0, wasi:keyvalue/watcher@0.2.0-draft, nor an interface of its own",
                spec.id
            )));
        }
        let permits = Arc::new(Semaphore::new(spec.max_instances.max(1) as usize));
        let admission =
            Arc::new(Semaphore::new(spec.max_instances.max(1) as usize + limits.queued_invocations as usize));
        Ok(Self {
            spec,
            env,
            engine: engine.clone(),
            proxy,
            messaging,
            watcher,
            custom,
            pre,
            permits,
            admission,
            queue_room: limits.queued_invocations as usize,
            shed: AtomicU64::new(0),
            execution_time: limits.execution_time,
        })
    }

    /// Count one invocation refused for lack of room; how many were refused before it.
    pub(crate) fn count_shed(&self) -> u64 {
        self.shed.fetch_add(1, Ordering::Relaxed)
    }

    /// Instances running an invocation now, and invocations admitted that wait for one.
    pub(crate) fn load(&self) -> (usize, usize) {
        let max = self.spec.max_instances.max(1) as usize;
        let in_use = max.saturating_sub(self.permits.available_permits());
        let admitted = (max + self.queue_room).saturating_sub(self.admission.available_permits());
        (in_use, admitted.saturating_sub(in_use))
    }

    /// Admit one more invocation, or `None` when as many are running and waiting as allowed.
    pub(crate) fn admit(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.admission.clone().try_acquire_owned().ok()
    }

    /// How long one invocation may run: the execution time limit, or less when the caller's
    /// deadline (`remaining`, from the envelope) comes first.
    fn time_limit(&self, remaining: Option<Duration>) -> (Duration, &'static str) {
        match remaining {
            Some(left) if left < self.execution_time => (left, "the caller's deadline passed"),
            _ => (self.execution_time, "the component ran past its execution time limit"),
        }
    }

    /// Wait for an instance permit: the `max_instances` bound, shedding after `deadline`.
    async fn permit(&self, deadline: Duration) -> Result<tokio::sync::OwnedSemaphorePermit, RpcError> {
        tokio::time::timeout(deadline, self.permits.clone().acquire_owned())
            .await
            .map_err(|_| {
                RpcError::new(
                    ErrorKind::Overloaded,
                    format!("all {} instances busy for {deadline:?}", self.spec.max_instances),
                )
            })?
            .map_err(|_| RpcError::internal("component is stopping"))
    }

    /// What one invocation in a fresh instance runs with: its store (limits and time slices
    /// set), its time limit and why it would stop, and the instance permit it holds.
    async fn run(&self, remaining: Option<Duration>, causes: Causes) -> Result<Run, RpcError> {
        let (deadline, why) = self.time_limit(remaining);
        let deadline_ms = deadline_ms(deadline);
        let permit = self.permit(deadline).await?;
        let mut store = Store::new(&self.engine, HostState::new(self.env.clone(), causes, deadline_ms));
        store.limiter(|state| &mut state.limiter);
        time_slices(&mut store, deadline);
        Ok(Run { store, deadline, why, _permit: permit })
    }

    /// Deliver one message to the component's `wasmcloud:messaging/handler` in a fresh instance.
    pub(crate) async fn handle_message(
        &self,
        message: BrokerMessage,
        remaining: Option<Duration>,
        causes: Causes,
    ) -> Result<(), RpcError> {
        let Some(pre) = self.messaging.clone() else {
            return Err(RpcError::new(
                ErrorKind::UnknownOperation,
                "component does not export wasmcloud:messaging/handler",
            ));
        };
        let Run { mut store, deadline, why, _permit } = self.run(remaining, causes).await?;
        let call = async {
            let instance = pre.instantiate_async(&mut store).await?;
            let message =
                handler::BrokerMessage { subject: message.subject, body: message.body, reply_to: message.reply_to };
            instance.wasmcloud_messaging_handler().call_handle_message(&mut store, &message).await
        };
        match tokio::time::timeout(deadline + Duration::from_millis(100), call).await {
            Err(_) => Err(RpcError::new(ErrorKind::Timeout, format!("{why}: component stopped after {deadline:?}"))),
            Ok(Err(err)) => Err(trap(err)),
            Ok(Ok(Err(message))) => Err(RpcError::new(ErrorKind::ComponentError, message)),
            Ok(Ok(Ok(()))) => Ok(()),
        }
    }

    /// Deliver one key-value change to the component's `wasi:keyvalue/watcher` in a fresh
    /// instance: `on-set` with a value, `on-delete` without.
    pub(crate) async fn handle_watch(
        &self,
        event: WatchEvent,
        remaining: Option<Duration>,
        causes: Causes,
    ) -> Result<(), RpcError> {
        let Some(pre) = self.watcher.clone() else {
            return Err(RpcError::new(ErrorKind::UnknownOperation, "component does not export wasi:keyvalue/watcher"));
        };
        let Run { mut store, deadline, why, _permit } = self.run(remaining, causes).await?;
        let call = async {
            let instance = pre.instantiate_async(&mut store).await?;
            let bucket = store.data_mut().table.push(Bucket::new(event.bucket))?;
            let watcher = instance.wasi_keyvalue_watcher();
            match event.value {
                Some(value) => watcher.call_on_set(&mut store, bucket, &event.key, &value).await,
                None => watcher.call_on_delete(&mut store, bucket, &event.key).await,
            }
        };
        match tokio::time::timeout(deadline + Duration::from_millis(100), call).await {
            Err(_) => Err(RpcError::new(ErrorKind::Timeout, format!("{why}: component stopped after {deadline:?}"))),
            Ok(Err(err)) => Err(trap(err)),
            Ok(Ok(())) => Ok(()),
        }
    }

    /// Call `func` of the custom interface `ns:pkg/iface` the component exports, in a fresh
    /// instance: arguments and results in the MessagePack form of [`crate::wit_value`], read
    /// with the types the component declares.
    pub(crate) async fn call_custom(
        &self,
        interface: (&str, &str, &str),
        func: &str,
        payload: &[u8],
        remaining: Option<Duration>,
        causes: Causes,
    ) -> Result<Vec<u8>, RpcError> {
        let (ns, pkg, iface) = interface;
        let Some(export) = self.custom.iter().find(|e| custom::interface_parts(e) == Some(interface)) else {
            return Err(RpcError::new(
                ErrorKind::UnknownOperation,
                format!("component {} does not export {ns}:{pkg}/{iface}", self.spec.id),
            ));
        };
        let Run { mut store, deadline, why, _permit } = self.run(remaining, causes).await?;
        let call = async {
            let instance = self.pre.instantiate_async(&mut store).await?;
            let found = instance
                .get_export_index(&mut store, None, export)
                .and_then(|iface| instance.get_export_index(&mut store, Some(&iface), func))
                .and_then(|index| instance.get_func(&mut store, index));
            let Some(function) = found else {
                return Ok(Err(RpcError::new(
                    ErrorKind::UnknownOperation,
                    format!("{export} has no function {func:?}"),
                )));
            };
            let ty = function.ty(&store);
            let params: Vec<Type> = ty.params().map(|(_, t)| t).collect();
            let args = match wit_value::decode(payload, &params) {
                Ok(args) => args,
                Err(err) => return Ok(Err(RpcError::bad_request(format!("arguments of {export}.{func}: {err}")))),
            };
            let mut results = vec![Val::Bool(false); ty.results().len()];
            function.call_async(&mut store, &args, &mut results).await?;
            Ok(wit_value::encode(&results).map_err(|e| RpcError::internal(format!("results of {export}.{func}: {e}"))))
        };
        match tokio::time::timeout(deadline + Duration::from_millis(100), call).await {
            Err(_) => Err(RpcError::new(ErrorKind::Timeout, format!("{why}: component stopped after {deadline:?}"))),
            Ok(Err(err)) => Err(trap(err)),
            Ok(Ok(answer)) => answer,
        }
    }

    /// Run one HTTP request through a fresh instance. Returns the response head with the
    /// first part of its body and, when the body goes on, a stream of the rest; the instance
    /// keeps running (and holds its permit) until the body is read or abandoned.
    pub(crate) async fn handle_http(
        &self,
        request: HttpRequest,
        body: LatticeBody,
        chunk_size: usize,
        remaining: Option<Duration>,
        causes: Causes,
    ) -> Result<(HttpResponse, Option<ByteStream>), RpcError> {
        let Some(proxy) = self.proxy.clone() else {
            return Err(RpcError::new(
                ErrorKind::UnknownOperation,
                "component does not export wasi:http/incoming-handler",
            ));
        };
        let (deadline, why) = self.time_limit(remaining);
        let until = tokio::time::Instant::now() + deadline;
        let deadline_ms = deadline_ms(deadline);
        let permit = self.permit(deadline).await?;
        let request = to_hyper(request, body)?;
        let scheme = match request.uri().scheme_str() {
            Some("https") => Scheme::Https,
            _ => Scheme::Http,
        };

        let mut store = Store::new(&self.engine, HostState::new(self.env.clone(), causes, deadline_ms));
        store.limiter(|state| &mut state.limiter);
        time_slices(&mut store, deadline);
        let instance = proxy.instantiate_async(&mut store).await.map_err(trap)?;
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let req = store
            .data_mut()
            .http()
            .new_incoming_request(scheme, request)
            .map_err(|e| RpcError::bad_request(format!("{e:#}")))?;
        let out =
            store.data_mut().http().new_response_outparam(sender).map_err(|e| RpcError::internal(format!("{e:#}")))?;
        // The guest runs on this task, next to the code waiting for its response: no task
        // hand-off on the common path. Only a guest still busy when the response is ready (a
        // streamed body, or work after the body) moves to a task of its own. A guest that
        // finished hands back its store and permit, torn down after the answer is on its way.
        let mut guest: Pin<Box<dyn Future<Output = Finished> + Send>> = Box::pin(async move {
            let result = instance.wasi_http_incoming_handler().call_handle(&mut store, req, out).await;
            (result, Spent(store, permit))
        });
        let mut finished: Option<wasmtime::Result<()>> = None;
        let mut spent: Option<Spent> = None;
        let work = async {
            let response = match receiver.await {
                Ok(Ok(response)) => response,
                Ok(Err(code)) => {
                    return Err(Some(RpcError::new(
                        ErrorKind::ComponentTrap,
                        format!("component answered with error {code:?}"),
                    )));
                }
                // The guest returned or trapped without setting a response.
                Err(_) => return Err(None),
            };
            let (parts, body) = response.into_parts();
            let body: ByteStream = Box::pin(body.into_data_stream().map(|item| {
                item.map_err(|e| RpcError::new(ErrorKind::ComponentTrap, format!("response body failed: {e:?}")))
            }));
            let (inline, rest) = stream::split_inline(body, chunk_size, INLINE_WAIT).await.map_err(Some)?;
            let response = HttpResponse {
                status: parts.status.as_u16(),
                headers: headers_to_wire(&parts.headers),
                body: inline.to_vec(),
                body_stream: None,
            };
            Ok((response, rest))
        };
        let both = async {
            tokio::pin!(work);
            loop {
                tokio::select! {
                    biased;
                    result = &mut work => break result,
                    (result, store) = &mut guest, if finished.is_none() => {
                        let failed = result.is_err();
                        finished = Some(result);
                        // A trapped guest's store goes at once: what it left in its table (a
                        // response never set, a body never finished) must end with it.
                        if !failed {
                            spent = Some(store);
                        }
                    }
                }
                // Nor may a returned guest's store keep an answer waiting: if the answer is
                // not complete now, the store goes at once, as if no teardown were deferred.
                if spent.is_some() {
                    if let Some(result) = futures::FutureExt::now_or_never(work.as_mut()) {
                        break result;
                    }
                    spent = None;
                }
            }
        };
        let result = match tokio::time::timeout(deadline + Duration::from_millis(100), both).await {
            Err(_) => Err(RpcError::new(ErrorKind::Timeout, format!("{why}: component stopped after {deadline:?}"))),
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(Some(err))) => Err(err),
            Ok(Err(None)) => Err(match finished.take() {
                Some(Err(err)) => trap(err),
                _ => RpcError::new(ErrorKind::ComponentTrap, "component returned without setting a response"),
            }),
        };
        match (&result, finished) {
            // Dropping the guest drops its store: the instance is gone.
            (Err(_), _) => drop(guest),
            (Ok(_), Some(Ok(()))) => {}
            (Ok(_), Some(Err(err))) => {
                warn!(component = %self.spec.id, cause = %format!("{err:#}"), "instance failed after sending its response");
            }
            (Ok(_), None) => {
                // Still writing the body (or doing work after it): finish on its own task, by
                // the same deadline as the rest of the invocation. Epoch interruption stops a
                // guest that computes past it; this stops one that waits in a host call (a
                // reader that stopped reading, a slow capability).
                let id = self.spec.id.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout_at(until + Duration::from_millis(100), guest).await {
                        Ok((Ok(()), _)) => {}
                        Ok((Err(err), _)) => {
                            warn!(component = %id, cause = %format!("{err:#}"), "instance failed after sending its response head");
                        }
                        Err(_) => {
                            warn!(component = %id, after = ?deadline, "instance stopped: still running after sending its response head when its deadline passed");
                        }
                    }
                });
            }
        }
        if let Some(spent) = spent {
            spent.release();
        }
        result
    }
}

/// What a guest's run ends with: its result, and the store and permit it no longer needs.
type Finished = (wasmtime::Result<()>, Spent);

/// The store of an instance that has finished, with its instance permit: dropping it hands the
/// instance's memory back to the pool, then the permit to the next invocation.
struct Spent(Store<HostState>, tokio::sync::OwnedSemaphorePermit);

impl Spent {
    /// Tear the instance down on a task of its own, so that the caller sends its answer first
    /// (the reset of the instance's memory is not on the request's path).
    fn release(self) {
        tokio::spawn(async move {
            let Spent(store, permit) = self;
            drop(store);
            drop(permit);
        });
    }
}

fn trap(err: wasmtime::Error) -> RpcError {
    let mut message = format!("{err:#}");
    if message.len() > MAX_TRAP_MESSAGE {
        let mut cut = MAX_TRAP_MESSAGE;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
    }
    RpcError::new(ErrorKind::ComponentTrap, message)
}

fn to_hyper(req: HttpRequest, body: LatticeBody) -> Result<http::Request<IncomingBody>, RpcError> {
    let authority = if req.authority.is_empty() { "localhost" } else { req.authority.as_str() };
    let scheme = if req.scheme.is_empty() { "http" } else { req.scheme.as_str() };
    let path = if req.path_with_query.is_empty() { "/" } else { req.path_with_query.as_str() };
    let uri = http::Uri::builder()
        .scheme(scheme)
        .authority(authority)
        .path_and_query(path)
        .build()
        .map_err(|e| RpcError::bad_request(format!("invalid request URI: {e}")))?;
    let method = http::Method::from_bytes(req.method.as_bytes())
        .map_err(|e| RpcError::bad_request(format!("invalid method: {e}")))?;
    let mut request = http::Request::new(body.map_err(body_error as fn(RpcError) -> wasmtime_wasi_http::Error));
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.headers_mut() = headers_from_wire(req.headers)?;
    Ok(request)
}

/// The request body a component reads: the lattice body, its errors in wasi:http's terms.
type IncomingBody = http_body_util::combinators::MapErr<LatticeBody, fn(RpcError) -> wasmtime_wasi_http::Error>;

fn body_error(err: RpcError) -> wasmtime_wasi_http::Error {
    wasmtime_wasi_http::Error::InternalError(Some(format!("request body failed: {err}")))
}

/// `deadline` from now as ms since the Unix epoch: what the calls an invocation makes carry.
fn deadline_ms(deadline: Duration) -> u64 {
    ferry_proto::time::now_ms().saturating_add(u64::try_from(deadline.as_millis()).unwrap_or(u64::MAX))
}
