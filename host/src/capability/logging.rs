//! `wasi:logging/logging`: guest log lines become host log events tagged with the component.

use wasmtime::component::{HasSelf, Linker};

use crate::state::HostState;

mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "ferry:host/logging",
    });
}

use bindings::wasi::logging::logging::{self, Level};

pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    logging::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)
}

impl logging::Host for HostState {
    fn log(&mut self, level: Level, context: String, message: String) {
        let component = self.env.id.as_str();
        match level {
            Level::Trace => tracing::trace!(target: "component", component, context, "{message}"),
            Level::Debug => tracing::debug!(target: "component", component, context, "{message}"),
            Level::Info => tracing::info!(target: "component", component, context, "{message}"),
            Level::Warn => tracing::warn!(target: "component", component, context, "{message}"),
            Level::Error | Level::Critical => tracing::error!(target: "component", component, context, "{message}"),
        }
    }
}
