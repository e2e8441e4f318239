//! The host's components service: start, scale, update, stop and list the components this
//! host runs, with typed results. It owns the whole lifecycle — fetch (from the lattice's
//! component store by digest, or from an allowed directory), compile (cached by digest),
//! prepare, serve, record in the lattice bucket, announce — so the control interface only
//! translates.
//!
//! A component's server takes each invocation to the component's current version: a scale or
//! an update builds the new version beside the old and swaps it in, and invocations already
//! running on the old one finish there, so nothing in flight fails.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use ferry_lattice::ComponentStore;
use ferry_proto::{
    claims::ClaimsError,
    ctl::{
        ComponentDescription, ComponentScale, ComponentScaled, ComponentStart, ComponentStarted, ComponentStopped,
        ComponentUpdate, ComponentUpdated,
    },
    event::{
        ComponentScaleFailed, ComponentScaled as ScaledEvent, ComponentUpdated as UpdatedEvent, Event, PolicyDenied,
    },
    image::{ImageRef, MAX_COMPONENT_BYTES},
    state::{ComponentRecord, component_key},
    subject::validate_id,
};
use sha2::{Digest as _, Sha256};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use wasmtime::{
    Engine,
    component::{Component, Linker},
};

use crate::{
    Limits,
    allowed::AllowedDirs,
    budget::Budget,
    claims::ClaimsPolicy,
    component::{ComponentSpec, DEFAULT_MAX_INSTANCES, RunningComponent},
    events::Events,
    rpc::{self, server::ServeContext},
    state::{ComponentEnv, Grants, HostState},
};

/// Why a component command failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ComponentError {
    /// The command is invalid (an id, a config name).
    #[error("{0}")]
    Invalid(String),
    /// The component already runs here.
    #[error("component {component} already runs on host {host}")]
    AlreadyRunning { component: String, host: String },
    /// The component does not run here.
    #[error("component {component} does not run on host {host}")]
    NotRunning { component: String, host: String },
    /// Its bytes could not be fetched, read or compiled, or it could not be served.
    #[error("{0}")]
    Load(String),
    /// Its claims do not admit it here ([`crate::claims::ClaimsPolicy`]).
    #[error("denied: {0}")]
    Denied(#[from] ClaimsError),
}

/// Where a host takes component bytes from.
pub(crate) struct Sources {
    /// The lattice's uploaded components.
    pub(crate) store: ComponentStore,
    /// Directories `file:` references may name.
    pub(crate) allowed: AllowedDirs,
    /// Which components may run, by their claims.
    pub(crate) policy: ClaimsPolicy,
    /// OCI registries, through this host's image cache.
    pub(crate) registry: Arc<crate::oci::Registry>,
}

/// wasmtime pieces shared by every component of the host.
pub(crate) struct Runtime {
    pub(crate) engine: Engine,
    pub(crate) linker: Linker<HostState>,
    pub(crate) limits: Limits,
    /// Linear memory of every instance on this host ([`Limits::host_memory_bytes`]).
    pub(crate) host_memory: Arc<Budget>,
    /// Compiled components by SHA-256 of their bytes, so a restart does not compile again.
    compiled: Mutex<HashMap<[u8; 32], Component>>,
    /// Where compiled components are kept and what compiles them.
    compilation: Arc<crate::compile::Compilation>,
}

impl Runtime {
    pub(crate) fn new(
        engine: Engine,
        linker: Linker<HostState>,
        limits: Limits,
        compilation: crate::compile::Compilation,
    ) -> Self {
        Self {
            engine,
            linker,
            host_memory: Budget::new(limits.host_memory_bytes),
            limits,
            compiled: Mutex::default(),
            compilation: Arc::new(compilation),
        }
    }

    /// Compile `bytes`, reusing an earlier compilation of identical bytes.
    async fn compile(&self, bytes: Vec<u8>) -> Result<(Component, [u8; 32]), ComponentError> {
        let digest: [u8; 32] = Sha256::digest(&bytes).into();
        if let Some(component) = self.compiled.lock().unwrap_or_else(|p| p.into_inner()).get(&digest) {
            return Ok((component.clone(), digest));
        }
        let (engine, compilation, limits) = (self.engine.clone(), self.compilation.clone(), self.limits.clone());
        let component =
            tokio::task::spawn_blocking(move || crate::compile::compile(&engine, &compilation, &limits, &bytes))
                .await
                .map_err(|e| ComponentError::Load(format!("compilation task failed: {e}")))?
                .map_err(ComponentError::Load)?;
        self.compiled.lock().unwrap_or_else(|p| p.into_inner()).insert(digest, component.clone());
        Ok((component, digest))
    }
}

/// A component this host runs.
struct Entry {
    /// The version invocations go to; replaced by a scale.
    current: watch::Sender<Arc<RunningComponent>>,
    /// The compiled component, for building new versions.
    compiled: Component,
    digest: String,
    stop: CancellationToken,
    /// The component's server on each worker.
    servers: Vec<tokio::task::JoinHandle<()>>,
}

impl Entry {
    fn describe(&self) -> ComponentDescription {
        let current = self.current.borrow();
        let spec = &current.spec;
        ComponentDescription {
            component_id: spec.id.clone(),
            image: spec.image.clone(),
            digest: self.digest.clone(),
            max_instances: spec.max_instances,
            config: spec.config.clone(),
        }
    }
}

/// The components of one host.
pub(crate) struct Components {
    host_id: String,
    runtime: Arc<Runtime>,
    serve: ServeContext,
    events: Events,
    /// The host's stop: cancelling it stops every component.
    host_stop: CancellationToken,
    sources: Sources,
    running: Mutex<HashMap<String, Entry>>,
}

impl Components {
    pub(crate) fn new(
        host_id: &str,
        runtime: Arc<Runtime>,
        serve: ServeContext,
        events: Events,
        host_stop: CancellationToken,
        sources: Sources,
    ) -> Self {
        Self { host_id: host_id.to_owned(), runtime, serve, events, host_stop, sources, running: Mutex::default() }
    }

    /// How many components run.
    pub(crate) fn count(&self) -> usize {
        self.lock().len()
    }

    /// Each component's instances in use and invocations waiting, as gauge readings.
    pub(crate) fn readings(&self) -> Vec<ferry_lattice::metrics::Reading> {
        use ferry_lattice::metrics::{INSTANCES_IN_USE, QUEUED_INVOCATIONS, Reading};
        let mut readings = Vec::new();
        for entry in self.lock().values() {
            let current = entry.current.borrow();
            let (in_use, queued) = current.load();
            let labels = vec![("component", current.spec.id.clone())];
            readings.push(Reading { name: INSTANCES_IN_USE, labels: labels.clone(), value: in_use as f64 });
            readings.push(Reading { name: QUEUED_INVOCATIONS, labels, value: queued as f64 });
        }
        readings
    }

    /// What runs, sorted by id.
    pub(crate) fn list(&self) -> Vec<ComponentDescription> {
        let mut list: Vec<_> = self.lock().values().map(Entry::describe).collect();
        list.sort_by(|a, b| a.component_id.cmp(&b.component_id));
        list
    }

    /// Start `cmd.component_id` from `cmd.image`; announces `component_scaled`, or
    /// `component_scale_failed` with the reason.
    pub(crate) async fn start(&self, cmd: &ComponentStart) -> Result<ComponentStarted, ComponentError> {
        let max_instances = cmd.max_instances.unwrap_or(DEFAULT_MAX_INSTANCES).max(1);
        let result = self.try_start(cmd, max_instances).await;
        match &result {
            Ok(started) => {
                let c = &started.component;
                info!(component = %c.component_id, image = %c.image, max_instances, "component started");
                self.announce_scaled(&cmd.request_id, c).await;
            }
            Err(err) => self.announce_failed(&cmd.request_id, &cmd.component_id, &cmd.image, max_instances, err).await,
        }
        result
    }

    async fn try_start(&self, cmd: &ComponentStart, max_instances: u32) -> Result<ComponentStarted, ComponentError> {
        validate_id("component id", &cmd.component_id).map_err(|e| ComponentError::Invalid(e.to_string()))?;
        for name in &cmd.config {
            validate_id("config name", name).map_err(|e| ComponentError::Invalid(e.to_string()))?;
        }
        if self.lock().contains_key(&cmd.component_id) {
            return Err(self.already_running(&cmd.component_id));
        }
        let (image, bytes) = self.fetch(&cmd.image).await?;
        let claims = self.sources.policy.admit(&bytes)?.map(Arc::new);
        let (compiled, digest) = self.runtime.compile(bytes).await?;
        let spec = ComponentSpec {
            id: cmd.component_id.clone(),
            image: image.to_string(),
            max_instances,
            config: cmd.config.clone(),
            claims,
        };
        let running = Arc::new(self.prepare(&compiled, spec.clone())?);
        let (current, versions) = watch::channel(running);
        let stop = self.host_stop.child_token();
        let servers = rpc::server::serve(self.serve.clone(), versions, stop.clone())
            .await
            .map_err(|e| ComponentError::Load(format!("cannot serve {}: {e}", spec.id)))?;
        let entry = Entry { current, compiled, digest: hex(&digest), stop: stop.clone(), servers };
        let description = entry.describe();
        {
            let mut running = self.lock();
            if running.contains_key(&spec.id) {
                stop.cancel();
                return Err(self.already_running(&spec.id));
            }
            running.insert(spec.id.clone(), entry);
        }
        self.record(&spec).await;
        Ok(ComponentStarted { host_id: self.host_id.clone(), component: description })
    }

    /// Change how many instances of a component may run at once; 0 stops it.
    pub(crate) async fn scale(&self, cmd: &ComponentScale) -> Result<ComponentScaled, ComponentError> {
        if cmd.max_instances == 0 {
            let previous = self.lock().get(&cmd.component_id).map(|e| e.current.borrow().spec.max_instances);
            self.stop(&cmd.request_id, &cmd.component_id).await?;
            return Ok(ComponentScaled {
                host_id: self.host_id.clone(),
                component_id: cmd.component_id.clone(),
                previous: previous.unwrap_or_default(),
                max_instances: 0,
            });
        }
        let result = self.try_scale(cmd);
        match &result {
            Ok((scaled, description)) => {
                info!(component = %cmd.component_id, from = scaled.previous, to = scaled.max_instances, "component scaled");
                let spec = self.lock().get(&cmd.component_id).map(|e| e.current.borrow().spec.clone());
                if let Some(spec) = spec {
                    self.record(&spec).await;
                }
                self.announce_scaled(&cmd.request_id, description).await;
            }
            Err(err) => self.announce_failed(&cmd.request_id, &cmd.component_id, "", cmd.max_instances, err).await,
        }
        result.map(|(scaled, _)| scaled)
    }

    fn try_scale(&self, cmd: &ComponentScale) -> Result<(ComponentScaled, ComponentDescription), ComponentError> {
        let running = self.lock();
        let entry = running.get(&cmd.component_id).ok_or_else(|| self.not_running(&cmd.component_id))?;
        let mut spec = entry.current.borrow().spec.clone();
        let previous = spec.max_instances;
        spec.max_instances = cmd.max_instances;
        // Invocations admitted by the old version finish on it; new ones meet the new bound.
        let next = Arc::new(self.prepare(&entry.compiled, spec)?);
        entry.current.send_replace(next);
        let scaled = ComponentScaled {
            host_id: self.host_id.clone(),
            component_id: cmd.component_id.clone(),
            previous,
            max_instances: cmd.max_instances,
        };
        Ok((scaled, entry.describe()))
    }

    /// Run `cmd.image` in place of what `cmd.component_id` runs; announces `component_updated`.
    /// The new version is fetched, compiled and prepared before it is swapped in, so a bad
    /// reference leaves the old one serving.
    pub(crate) async fn update(&self, cmd: &ComponentUpdate) -> Result<ComponentUpdated, ComponentError> {
        if !self.lock().contains_key(&cmd.component_id) {
            return Err(self.not_running(&cmd.component_id));
        }
        let (image, bytes) = self.fetch(&cmd.image).await?;
        let claims = match self.sources.policy.admit(&bytes) {
            Ok(claims) => claims.map(Arc::new),
            Err(err) => {
                self.announce_denied(&cmd.request_id, &cmd.component_id, &err).await;
                return Err(err.into());
            }
        };
        let (compiled, digest) = self.runtime.compile(bytes).await?;
        let digest = hex(&digest);
        let (updated, spec) = {
            let mut running = self.lock();
            let entry = running.get_mut(&cmd.component_id).ok_or_else(|| self.not_running(&cmd.component_id))?;
            let mut spec = entry.current.borrow().spec.clone();
            let (previous_image, previous_digest) = (spec.image.clone(), entry.digest.clone());
            if previous_digest != digest {
                spec.image = image.to_string();
                spec.claims = claims;
                let next = Arc::new(self.prepare(&compiled, spec.clone())?);
                entry.compiled = compiled;
                entry.digest = digest.clone();
                entry.current.send_replace(next);
            }
            let updated = ComponentUpdated {
                host_id: self.host_id.clone(),
                component_id: cmd.component_id.clone(),
                previous_image,
                previous_digest,
                component: entry.describe(),
            };
            (updated, spec)
        };
        if updated.previous_digest == digest {
            info!(component = %cmd.component_id, %digest, "component update asked for the version that runs");
            return Ok(updated);
        }
        info!(component = %cmd.component_id, from = %updated.previous_digest, to = %digest, "component updated");
        self.record(&spec).await;
        let event = Event::ComponentUpdated(UpdatedEvent {
            request_id: cmd.request_id.clone(),
            host_id: self.host_id.clone(),
            component_id: cmd.component_id.clone(),
            image: updated.component.image.clone(),
            digest,
            previous_digest: updated.previous_digest.clone(),
        });
        self.events.emit(&event).await;
        Ok(updated)
    }

    /// A component's bytes by reference: from the lattice's store (checked against the
    /// digest), from a file under an allowed directory, or from an OCI registry (through the
    /// host's image cache).
    async fn fetch(&self, reference: &str) -> Result<(ImageRef, Vec<u8>), ComponentError> {
        let image = ImageRef::parse(reference).map_err(|e| ComponentError::Invalid(e.to_string()))?;
        let bytes = match &image {
            ImageRef::Lattice { digest } => {
                self.sources.store.fetch(digest).await.map_err(|e| ComponentError::Load(e.to_string()))?
            }
            ImageRef::File(path) => {
                let path =
                    self.sources.allowed.check("component", path, &self.host_id).map_err(ComponentError::Invalid)?;
                let size = tokio::fs::metadata(&path).await.map(|m| m.len()).unwrap_or_default();
                if size > MAX_COMPONENT_BYTES {
                    return Err(ComponentError::Load(format!(
                        "component {} is {size} bytes; a host takes at most {MAX_COMPONENT_BYTES}",
                        path.display()
                    )));
                }
                tokio::fs::read(&path)
                    .await
                    .map_err(|e| ComponentError::Load(format!("cannot read component {}: {e}", path.display())))?
            }
            ImageRef::Oci(oci) => match self.sources.registry.fetch(oci).await {
                Ok((bytes, _manifest)) => bytes,
                Err(err @ crate::oci::RegistryError::Refused(_)) => {
                    return Err(ComponentError::Invalid(err.to_string()));
                }
                Err(err) => return Err(ComponentError::Load(err.to_string())),
            },
        };
        Ok((image, bytes))
    }

    /// Stop serving a component; calls in flight finish first. Announces `component_scaled`
    /// with `max_instances: 0`.
    pub(crate) async fn stop(&self, request_id: &str, component_id: &str) -> Result<ComponentStopped, ComponentError> {
        let entry = self.lock().remove(component_id).ok_or_else(|| self.not_running(component_id))?;
        let mut description = entry.describe();
        entry.stop.cancel();
        for server in entry.servers {
            let _ = server.await;
        }
        if let Ok(key) = component_key(component_id)
            && let Err(err) = self.serve.lattice.bucket().delete(&key).await
        {
            warn!(component = %component_id, cause = %err, "failed to remove component from the lattice bucket");
        }
        info!(component = %component_id, "component stopped");
        description.max_instances = 0;
        self.announce_scaled(request_id, &description).await;
        Ok(ComponentStopped { host_id: self.host_id.clone(), component_id: component_id.to_owned() })
    }

    /// Stop every component (the host is stopping): their servers end, in-flight calls go on
    /// on the host's task tracker.
    pub(crate) async fn stop_all(&self) {
        let entries: Vec<Entry> = self.lock().drain().map(|(_, e)| e).collect();
        for entry in entries {
            entry.stop.cancel();
            for server in entry.servers {
                let _ = server.await;
            }
        }
    }

    /// A new version of a component from its compiled code.
    fn prepare(&self, compiled: &Component, spec: ComponentSpec) -> Result<RunningComponent, ComponentError> {
        let runtime = &self.runtime;
        let env = Arc::new(ComponentEnv {
            id: spec.id.clone(),
            lattice: self.serve.lattice.clone(),
            rpc: self.serve.rpc.clone(),
            config_names: spec.config.clone(),
            blob_spool: Budget::new(runtime.limits.blob_spool_bytes),
            memory_bytes: runtime.limits.memory_bytes,
            host_memory: runtime.host_memory.clone(),
            resource_entries: runtime.limits.resource_entries,
            grants: spec.claims.as_ref().and_then(|c| c.capabilities()).map(|capabilities| Grants {
                capabilities,
                events: self.events.clone(),
                host_id: self.host_id.clone(),
            }),
        });
        RunningComponent::new(&runtime.engine, &runtime.linker, compiled, env, spec, &runtime.limits)
            .map_err(|e| ComponentError::Load(e.to_string()))
    }

    /// Record the component under `component.{id}` in the lattice bucket.
    async fn record(&self, spec: &ComponentSpec) {
        let record = ComponentRecord {
            component_id: spec.id.clone(),
            image: spec.image.clone(),
            max_instances: spec.max_instances,
            config: spec.config.clone(),
            hosts: vec![self.host_id.clone()],
            claims: spec.claims.as_deref().cloned(),
        };
        let stored = match (component_key(&spec.id), serde_json::to_value(&record)) {
            (Ok(key), Ok(value)) => self.serve.lattice.bucket().put_json(&key, &value).await.map_err(|e| e.to_string()),
            (Err(e), _) => Err(e.to_string()),
            (_, Err(e)) => Err(e.to_string()),
        };
        if let Err(err) = stored {
            warn!(component = %spec.id, cause = %err, "failed to record component in the lattice bucket");
        }
    }

    async fn announce_scaled(&self, request_id: &str, c: &ComponentDescription) {
        let event = Event::ComponentScaled(ScaledEvent {
            request_id: request_id.to_owned(),
            host_id: self.host_id.clone(),
            component_id: c.component_id.clone(),
            image: c.image.clone(),
            digest: c.digest.clone(),
            max_instances: c.max_instances,
        });
        self.events.emit(&event).await;
    }

    async fn announce_failed(
        &self,
        request_id: &str,
        component_id: &str,
        image: &str,
        max_instances: u32,
        err: &ComponentError,
    ) {
        let event = Event::ComponentScaleFailed(ComponentScaleFailed {
            request_id: request_id.to_owned(),
            host_id: self.host_id.clone(),
            component_id: component_id.to_owned(),
            image: image.to_owned(),
            max_instances,
            error: err.to_string(),
        });
        self.events.emit(&event).await;
        if let ComponentError::Denied(denied) = err {
            self.announce_denied(request_id, component_id, denied).await;
        }
    }

    /// `policy_denied` for a component its claims do not admit.
    async fn announce_denied(&self, request_id: &str, component_id: &str, err: &ClaimsError) {
        warn!(component = %component_id, reason = err.reason(), cause = %err, "component refused by its claims");
        let event = Event::PolicyDenied(PolicyDenied {
            request_id: request_id.to_owned(),
            host_id: self.host_id.clone(),
            component_id: component_id.to_owned(),
            reason: err.reason().to_owned(),
            capability: None,
            message: err.to_string(),
        });
        self.events.emit(&event).await;
    }

    fn already_running(&self, component: &str) -> ComponentError {
        ComponentError::AlreadyRunning { component: component.to_owned(), host: self.host_id.clone() }
    }

    fn not_running(&self, component: &str) -> ComponentError {
        ComponentError::NotRunning { component: component.to_owned(), host: self.host_id.clone() }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Lower-case hex of a digest.
fn hex(digest: &[u8; 32]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}
