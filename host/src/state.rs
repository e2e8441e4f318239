//! Per-store state: one [`HostState`] per component instance, holding WASI, wasi-http, the
//! resource table and what the capability imports need (the component's identity, the lattice
//! view, the RPC client, chosen link names, config).

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
};

use ferry_proto::{link::DEFAULT_LINK_NAME, state::ConfigValues};
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::{
    budget::Budget, capability::OutgoingHttp, engine::StoreLimiter, lattice::LatticeView, rpc::client::RpcClient,
};

/// What every instance of one component shares.
#[derive(Debug)]
pub(crate) struct ComponentEnv {
    /// The component id: the origin of its invocations.
    pub(crate) id: String,
    pub(crate) lattice: LatticeView,
    pub(crate) rpc: RpcClient,
    /// Configs the component reads through `wasi:config`.
    pub(crate) config_names: Vec<String>,
    /// Blob data spooled before `write-data` by all of the component's values
    /// ([`crate::Limits::blob_spool_bytes`]).
    pub(crate) blob_spool: Arc<Budget>,
    /// [`crate::Limits::memory_bytes`].
    pub(crate) memory_bytes: usize,
    /// The host's memory budget, shared with every other component.
    pub(crate) host_memory: Arc<Budget>,
    /// [`crate::Limits::resource_entries`].
    pub(crate) resource_entries: usize,
    /// What its claims let it call; `None` when they restrict nothing (unsigned, or no caps).
    pub(crate) grants: Option<Grants>,
}

/// The capabilities a signed component's claims grant, and where a refused call is reported.
#[derive(Debug)]
pub(crate) struct Grants {
    pub(crate) capabilities: ferry_proto::claims::Capabilities,
    pub(crate) events: crate::events::Events,
    pub(crate) host_id: String,
}

/// Numbers the state-changing calls made while serving one invocation: the n-th carries the
/// cause `{invocation id}.{n}`, which providers claim in the lattice-wide replay record. The same
/// invocation replayed on another host makes calls with the same causes, and they are refused.
///
/// It also carries the invocation's trace: the calls it makes continue the caller's trace
/// ([`ferry_proto::trace`]), under this host's span.
#[derive(Clone, Debug)]
pub(crate) struct Causes {
    parent: Arc<str>,
    next: Arc<AtomicU32>,
    span: Option<ferry_proto::trace::TraceParent>,
}

impl Causes {
    /// Causes of the calls made while serving invocation `parent`.
    pub(crate) fn new(parent: &str) -> Self {
        Self { parent: parent.into(), next: Arc::new(AtomicU32::new(0)), span: None }
    }

    /// Causes of the calls made while serving `inv`, in its trace (when it carries one) under
    /// `span`, this host's span of it.
    pub(crate) fn of_invocation(
        inv: &ferry_proto::envelope::Invocation,
        span: Option<ferry_proto::trace::TraceParent>,
    ) -> Self {
        Self { span, ..Self::new(inv.replay_key()) }
    }

    /// The trace context a call made within the invocation carries: its trace, this host's
    /// span as the caller; empty when the invocation was not traced.
    pub(crate) fn trace_context(&self) -> std::collections::BTreeMap<String, String> {
        self.span.iter().map(|span| (ferry_proto::trace::TRACEPARENT.to_owned(), span.to_string())).collect()
    }

    /// The cause of a call of `operation`: the next number for a state-changing one, empty for
    /// a read.
    pub(crate) fn of(&self, operation: &str) -> String {
        if self.parent.is_empty() || ferry_proto::is_read_only(operation) {
            return String::new();
        }
        format!("{}.{}", self.parent, self.next.fetch_add(1, Ordering::Relaxed))
    }
}

/// The state of one component instance (one invocation).
pub(crate) struct HostState {
    pub(crate) env: Arc<ComponentEnv>,
    wasi: WasiCtx,
    http: WasiHttpCtx,
    pub(crate) table: ResourceTable,
    /// Where outgoing HTTP requests go (`wasi:http/outgoing-handler`).
    hooks: OutgoingHttp,
    /// Link names chosen with `wasmcloud:bus/lattice`, by (namespace, package, interface).
    link_names: HashMap<(String, String, String), String>,
    /// The component's config, merged once at instantiation.
    pub(crate) config: ConfigValues,
    /// Causes of the state-changing calls this invocation makes.
    pub(crate) causes: Causes,
    /// When this invocation must be done, in ms since the Unix epoch: the calls it makes carry
    /// it (or their own shorter timeout) as their deadline.
    pub(crate) deadline_ms: u64,
    /// Bounds this instance's memory.
    pub(crate) limiter: StoreLimiter,
}

impl HostState {
    pub(crate) fn new(env: Arc<ComponentEnv>, causes: Causes, deadline_ms: u64) -> Self {
        // No preopens, no network, no environment: WASI grants nothing beyond clocks, random
        // and stdio (stdout/stderr go to the host's log).
        let wasi = WasiCtx::builder()
            .inherit_stdout()
            .inherit_stderr()
            .allow_ip_name_lookup(false)
            .allow_tcp(false)
            .allow_udp(false)
            .build();
        let config = env.lattice.merged_config(&env.config_names);
        let limiter = StoreLimiter::new(env.id.as_str().into(), env.memory_bytes, env.host_memory.clone());
        let mut table = ResourceTable::new();
        table.set_max_capacity(env.resource_entries);
        let hooks = OutgoingHttp::new(env.clone(), causes.clone(), deadline_ms);
        Self {
            limiter,
            env,
            wasi,
            http: WasiHttpCtx::new(),
            table,
            hooks,
            link_names: HashMap::new(),
            config,
            causes,
            deadline_ms,
        }
    }

    /// The link name the component chose for `namespace:package/interface`.
    pub(crate) fn link_name(&self, namespace: &str, package: &str, interface: &str) -> String {
        self.link_names
            .get(&(namespace.to_owned(), package.to_owned(), interface.to_owned()))
            .cloned()
            .unwrap_or_else(|| DEFAULT_LINK_NAME.to_owned())
    }

    pub(crate) fn set_link_name(&mut self, name: &str, namespace: String, package: String, interface: String) {
        if (namespace.as_str(), package.as_str(), interface.as_str())
            == (ferry_proto::http::WIT_NAMESPACE, ferry_proto::http::WIT_PACKAGE, ferry_proto::http::OUTGOING_INTERFACE)
        {
            name.clone_into(&mut self.hooks.link_name);
        }
        self.link_names.insert((namespace, package, interface), name.to_owned());
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView { ctx: &mut self.http, table: &mut self.table, hooks: &mut self.hooks }
    }
}
