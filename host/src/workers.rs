//! The data plane's threads. Each worker is one thread with a single-threaded runtime and a NATS
//! connection of its own; every component is served on every worker (one member of the
//! component's queue group each), and an invocation runs start to finish on the worker that
//! received it — its capability calls and their answers go over that worker's connection. No
//! step of an invocation wakes a task on another thread, which on a shared multi-threaded
//! runtime cost the host ~40 % of its CPU per request (decision 56). The control plane (control
//! commands, the lattice view, health checks, compiles) stays on the process's own runtime.

use std::{cell::Cell, future::Future, sync::Mutex, time::Duration};

use ferry_lattice::NatsOptions;
use tokio::{runtime::Handle, sync::oneshot, task::JoinHandle};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::HostError;

thread_local! {
    /// The worker this thread is, when it is one.
    static WORKER: Cell<Option<usize>> = const { Cell::new(None) };
}

/// The index of the worker the calling thread is, `None` off the data plane.
pub(crate) fn current() -> Option<usize> {
    WORKER.with(Cell::get)
}

/// How long a stopping worker waits for tasks that ignore their cancellation.
const WORKER_SHUTDOWN: Duration = Duration::from_secs(1);

/// A host's workers: their runtimes, connections and threads.
pub(crate) struct Workers {
    handles: Vec<Handle>,
    connections: Vec<async_nats::Client>,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
    /// Ends every worker thread's run.
    stop: CancellationToken,
}

impl Workers {
    /// Start `count` workers, each connected to NATS with `options` (named after `name` and the
    /// worker's index).
    ///
    /// # Errors
    /// [`HostError`] when a thread, a runtime or a connection cannot be made; workers already
    /// started are stopped again.
    pub(crate) async fn start(count: usize, options: &NatsOptions, name: &str) -> Result<Self, HostError> {
        let mut workers = Self {
            handles: Vec::with_capacity(count),
            connections: Vec::with_capacity(count),
            threads: Mutex::new(Vec::with_capacity(count)),
            stop: CancellationToken::new(),
        };
        for index in 0..count {
            if let Err(err) = workers.add(index, options, name).await {
                workers.stop().await;
                return Err(err);
            }
        }
        Ok(workers)
    }

    async fn add(&mut self, index: usize, options: &NatsOptions, name: &str) -> Result<(), HostError> {
        let (ready, handle) = oneshot::channel::<std::io::Result<Handle>>();
        let stop = self.stop.clone();
        let thread = std::thread::Builder::new().name(format!("ferry-worker-{index}")).spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(runtime) => runtime,
                Err(err) => {
                    let _ = ready.send(Err(err));
                    return;
                }
            };
            WORKER.with(|w| w.set(Some(index)));
            runtime.block_on(async move {
                let _ = ready.send(Ok(Handle::current()));
                stop.cancelled().await;
            });
            runtime.shutdown_timeout(WORKER_SHUTDOWN);
        })?;
        self.threads.lock().unwrap_or_else(|p| p.into_inner()).push(thread);
        let handle = handle.await.map_err(|_| HostError::Invalid(format!("worker {index} did not start")))??;
        let mut options = options.clone();
        options.name = format!("{name}-w{index}");
        // Connected from inside the worker, so the connection's own task runs there.
        let connection = handle.spawn(async move { options.connect().await });
        let connection = connection.await.map_err(|e| HostError::Invalid(format!("worker {index}: {e}")))??;
        self.handles.push(handle);
        self.connections.push(connection.client);
        Ok(())
    }

    /// How many workers there are.
    pub(crate) fn len(&self) -> usize {
        self.handles.len()
    }

    /// Each worker's NATS connection, by index.
    pub(crate) fn connections(&self) -> &[async_nats::Client] {
        &self.connections
    }

    /// Run `task(index)` on every worker.
    pub(crate) fn spawn_each<F, Fut>(&self, mut task: F) -> Vec<JoinHandle<Fut::Output>>
    where
        F: FnMut(usize) -> Fut,
        Fut: Future + Send + 'static,
        Fut::Output: Send + 'static,
    {
        self.handles.iter().enumerate().map(|(index, handle)| handle.spawn(task(index))).collect()
    }

    /// Drain the workers' connections, end their runtimes and join their threads. Whatever
    /// still runs on them is dropped: call this after in-flight invocations have finished.
    pub(crate) async fn stop(&self) {
        for (index, nats) in self.connections.iter().enumerate() {
            if let Err(err) = ferry_lattice::nats::close(nats).await {
                warn!(worker = index, cause = %err, "failed to drain a worker's NATS connection");
            }
        }
        self.stop.cancel();
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|p| p.into_inner()));
        let joined = tokio::task::spawn_blocking(move || {
            for thread in threads {
                let _ = thread.join();
            }
        });
        let _ = joined.await;
    }
}

impl Drop for Workers {
    /// A host dropped without stopping (a failed build) leaves no thread behind.
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl std::fmt::Debug for Workers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workers").field("count", &self.handles.len()).finish_non_exhaustive()
    }
}
