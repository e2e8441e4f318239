//! The wasmtime engine: component model, pooling allocator, epoch interruption for time
//! limits, the ticker that drives the epochs, and the limiter that bounds each store's memory.

use std::{sync::Arc, time::Duration};

use tokio_util::sync::CancellationToken;
use tracing::warn;
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, UpdateDeadline};

use crate::budget::{Budget, Reservation};

/// How often the epoch advances: a running guest yields to its worker's other tasks, and its
/// time limit is checked, once per tick.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Resource limits applied to every component instance.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Memory per instance, in bytes: each linear memory and all of an instance's linear
    /// memories together.
    pub memory_bytes: usize,
    /// Linear memory of all instances on the host together, in bytes. An instance whose memory
    /// would pass it cannot grow (the guest sees an allocation fail, typically a trap).
    pub host_memory_bytes: u64,
    /// Entries one instance's resource table may hold (streams, fields, buckets, …): a guest
    /// that creates more gets an error instead of growing the host's memory.
    pub resource_entries: usize,
    /// Wall-clock time one invocation may run, including the capability calls it makes.
    pub execution_time: Duration,
    /// Instances the pool can hold at once across all components of the host.
    pub pool_instances: u32,
    /// Bytes of blobstore outgoing values held (in memory, then in temporary files) when a
    /// component writes them before calling `write-data`, across all values of one component
    /// at once; after `write-data` data streams.
    pub blob_spool_bytes: u64,
    /// Invocations of one component that may wait for an instance beyond `max_instances`
    /// running ones; past that the host answers `overloaded` at once instead of queueing.
    pub queued_invocations: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory_bytes: 256 << 20,
            host_memory_bytes: 8 << 30,
            resource_entries: 10_000,
            execution_time: Duration::from_secs(60),
            pool_instances: 1000,
            blob_spool_bytes: 1 << 30,
            queued_invocations: 256,
        }
    }
}

/// Freed instance slots handed back to the kernel together.
const DECOMMIT_BATCH: usize = 16;
/// Bytes of a reused async stack reset with memset rather than madvise.
const STACK_KEEP_RESIDENT: usize = 128 << 10;
/// Bytes of a reused linear memory reset in place rather than handed back to the kernel.
const MEMORY_KEEP_RESIDENT: usize = 1 << 20;
/// Bytes of a reused table reset in place rather than handed back to the kernel.
const TABLE_KEEP_RESIDENT: usize = 128 << 10;

/// Build the engine shared by every component of a host: component model, epoch interruption,
/// the pooling allocator sized by `limits`. Public so benchmarks run components on exactly the
/// engine the host uses.
///
/// # Errors
/// When wasmtime rejects the configuration (e.g. the pool cannot be reserved).
pub fn new_engine(limits: &Limits) -> wasmtime::Result<Engine> {
    engine_with_cache(limits, None)
}

/// [`new_engine`], keeping compiled components in `cache` ([`crate::compile`]).
pub(crate) fn engine_with_cache(limits: &Limits, cache: Option<wasmtime::Cache>) -> wasmtime::Result<Engine> {
    let mut config = Config::new();
    config.cache(cache);
    config.wasm_component_model(true);
    config.epoch_interruption(true);
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(limits.pool_instances)
        .total_core_instances(limits.pool_instances * 4)
        .total_memories(limits.pool_instances * 2)
        .total_tables(limits.pool_instances * 4)
        .total_stacks(limits.pool_instances)
        .max_memories_per_component(4)
        .max_tables_per_component(8)
        .max_core_instances_per_component(32)
        .max_memory_size(limits.memory_bytes)
        // Hand freed pages back to the kernel in batches: fewer madvise calls and TLB
        // shootdowns across the worker threads, measured in docs/benchmarks.md.
        .decommit_batch_size(DECOMMIT_BATCH)
        // Zero the top of a reused fiber stack with memset instead of unmapping it: the
        // pages stay resident and the next instance does not fault them back in.
        .async_stack_keep_resident(STACK_KEEP_RESIDENT)
        // Likewise the low pages of a freed linear memory and table: reset in place, only the
        // pages the instance wrote (found with the PAGEMAP_SCAN ioctl where the kernel has it),
        // so the next instance in the slot takes no page faults on them.
        .linear_memory_keep_resident(MEMORY_KEEP_RESIDENT)
        .table_keep_resident(TABLE_KEEP_RESIDENT)
        .pagemap_scan(Enabled::Auto);
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    Engine::new(&config)
}

/// Bounds the linear memory of one store: its own total, and its share of the host's budget.
pub(crate) struct StoreLimiter {
    instance_limit: u64,
    host: Reservation,
    component: Arc<str>,
    warned: bool,
}

impl StoreLimiter {
    pub(crate) fn new(component: Arc<str>, instance_limit: usize, host: Arc<Budget>) -> Self {
        Self { instance_limit: instance_limit as u64, host: Reservation::new(host), component, warned: false }
    }
}

impl wasmtime::ResourceLimiter for StoreLimiter {
    fn memory_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        let more = desired.saturating_sub(current) as u64;
        if self.host.held() + more <= self.instance_limit && self.host.grow(more) {
            return Ok(true);
        }
        if !self.warned {
            self.warned = true;
            warn!(
                component = %self.component,
                instance_bytes = self.host.held(),
                wanted = more,
                instance_limit = self.instance_limit,
                host_limit = self.host.budget().limit(),
                "memory growth refused: the instance or the host is at its memory limit"
            );
        }
        Ok(false)
    }

    fn table_growing(&mut self, _current: usize, _desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        // Table sizes are bounded by the pooling allocator's per-table limit.
        Ok(true)
    }
}

/// Advance the engine's epoch every [`EPOCH_TICK`] until `stop` is cancelled.
pub(crate) fn spawn_epoch_ticker(engine: Engine, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(EPOCH_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                _ = tick.tick() => engine.increment_epoch(),
            }
        }
    })
}

/// Let a store's guest run for `limit` of wall-clock time (its capability calls included) in
/// slices of one epoch tick: after each slice it yields to the other tasks of its thread — a
/// worker runs many invocations, and one busy guest must not stall them — and once `limit` has
/// passed it traps.
pub(crate) fn time_slices<T: 'static>(store: &mut wasmtime::Store<T>, limit: Duration) {
    let end = std::time::Instant::now() + limit;
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(move |_| {
        Ok(if std::time::Instant::now() >= end { UpdateDeadline::Interrupt } else { UpdateDeadline::Yield(1) })
    });
}
