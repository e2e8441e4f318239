//! `component.start|stop|list`: load a component from a file on the host, serve it, stop it.

use std::sync::Arc;

use ferry_proto::{
    ctl::{ComponentStart, ComponentStop, CtlResponse},
    state::{ComponentRecord, component_key},
    subject::validate_id,
};
use sha2::{Digest as _, Sha256};
use tracing::info;
use wasmtime::component::Component;

use crate::{
    budget::Budget,
    component::{ComponentSpec, DEFAULT_MAX_INSTANCES, RunningComponent},
    host::{ComponentHandle, HostInner},
    rpc,
    state::ComponentEnv,
};

pub(super) async fn start(host: &HostInner, cmd: ComponentStart) -> CtlResponse {
    let request_id = cmd.request_id.clone();
    match try_start(host, cmd).await {
        Ok(response) => response,
        Err(message) => CtlResponse::fail(request_id, message),
    }
}

async fn try_start(host: &HostInner, cmd: ComponentStart) -> Result<CtlResponse, String> {
    validate_id("component id", &cmd.component_id).map_err(|e| e.to_string())?;
    for name in &cmd.config {
        validate_id("config name", name).map_err(|e| e.to_string())?;
    }
    if host.components.lock().unwrap_or_else(|p| p.into_inner()).contains_key(&cmd.component_id) {
        return Err(format!("component {} already runs on host {}", cmd.component_id, host.identity.id));
    }
    let bytes = tokio::fs::read(&cmd.image).await.map_err(|e| format!("cannot read component {}: {e}", cmd.image))?;
    let component = compile(host, bytes).await?;
    let spec = ComponentSpec {
        id: cmd.component_id.clone(),
        image: cmd.image.clone(),
        max_instances: cmd.max_instances.unwrap_or(DEFAULT_MAX_INSTANCES).max(1),
        config: cmd.config.clone(),
    };
    let env = Arc::new(ComponentEnv {
        id: spec.id.clone(),
        lattice: host.view.clone(),
        rpc: host.rpc.clone(),
        config_names: spec.config.clone(),
        blob_spool: Budget::new(host.runtime.limits.blob_spool_bytes),
        memory_bytes: host.runtime.limits.memory_bytes,
        host_memory: host.runtime.host_memory.clone(),
        resource_entries: host.runtime.limits.resource_entries,
    });
    let running = RunningComponent::new(
        &host.runtime.engine,
        &host.runtime.linker,
        &component,
        env,
        spec.clone(),
        &host.runtime.limits,
    )
    .map_err(|e| e.to_string())?;
    let running = Arc::new(running);
    let stop = host.stop.child_token();
    let server =
        rpc::server::serve(host.serve_context(), running.clone(), stop.clone()).await.map_err(|e| e.to_string())?;
    {
        let mut components = host.components.lock().unwrap_or_else(|p| p.into_inner());
        if components.contains_key(&spec.id) {
            stop.cancel();
            return Err(format!("component {} was started concurrently", spec.id));
        }
        let handle = ComponentHandle { component: running, stop, server };
        components.insert(spec.id.clone(), handle);
    }
    let record = ComponentRecord {
        component_id: spec.id.clone(),
        image: spec.image.clone(),
        max_instances: spec.max_instances,
        config: spec.config.clone(),
        hosts: vec![host.identity.id.clone()],
    };
    if let Ok(key) = component_key(&spec.id)
        && let Err(err) = host.view.bucket().put_json(&key, &serde_json::json!(record)).await
    {
        tracing::warn!(component = %spec.id, cause = %err, "failed to record component in the lattice bucket");
    }
    info!(component = %spec.id, image = %spec.image, max_instances = spec.max_instances, "component started");
    let data = serde_json::json!({ "request_id": cmd.request_id, "component_id": spec.id, "host_id": host.identity.id, "image": spec.image, "max_instances": spec.max_instances });
    host.events.emit("component_started", data.clone()).await;
    Ok(CtlResponse::ok(cmd.request_id, format!("component {} started on host {}", spec.id, host.identity.id), data))
}

/// Compile `bytes`, reusing an earlier compilation of identical bytes.
async fn compile(host: &HostInner, bytes: Vec<u8>) -> Result<Component, String> {
    let digest: [u8; 32] = Sha256::digest(&bytes).into();
    if let Some(component) = host.runtime.compiled.lock().unwrap_or_else(|p| p.into_inner()).get(&digest) {
        return Ok(component.clone());
    }
    let engine = host.runtime.engine.clone();
    let component = tokio::task::spawn_blocking(move || Component::new(&engine, &bytes))
        .await
        .map_err(|e| format!("compilation task failed: {e}"))?
        .map_err(|e| format!("not a valid component: {e:#}"))?;
    host.runtime.compiled.lock().unwrap_or_else(|p| p.into_inner()).insert(digest, component.clone());
    Ok(component)
}

pub(super) async fn stop(host: &HostInner, cmd: ComponentStop) -> CtlResponse {
    let handle = host.components.lock().unwrap_or_else(|p| p.into_inner()).remove(&cmd.component_id);
    let Some(handle) = handle else {
        return CtlResponse::fail(
            cmd.request_id,
            format!("component {} does not run on host {}", cmd.component_id, host.identity.id),
        );
    };
    handle.stop.cancel();
    let _ = handle.server.await;
    if let Ok(key) = component_key(&cmd.component_id)
        && let Err(err) = host.view.bucket().delete(&key).await
    {
        tracing::warn!(component = %cmd.component_id, cause = %err, "failed to remove component from the lattice bucket");
    }
    info!(component = %cmd.component_id, "component stopped");
    let data = serde_json::json!({ "request_id": cmd.request_id, "component_id": cmd.component_id, "host_id": host.identity.id });
    host.events.emit("component_stopped", data.clone()).await;
    CtlResponse::ok(cmd.request_id, format!("component {} stopped", cmd.component_id), data)
}

pub(super) fn list(host: &HostInner) -> CtlResponse {
    let components = host.components.lock().unwrap_or_else(|p| p.into_inner());
    let list: Vec<_> = components
        .values()
        .map(|h| {
            let spec = &h.component.spec;
            serde_json::json!({ "component_id": spec.id, "image": spec.image, "max_instances": spec.max_instances, "config": spec.config })
        })
        .collect();
    CtlResponse::ok(
        "",
        format!("{} component(s) on host {}", list.len(), host.identity.id),
        serde_json::json!({ "host_id": host.identity.id, "components": list }),
    )
}
