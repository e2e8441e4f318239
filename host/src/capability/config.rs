//! `wasi:config/{runtime,store}`: the component's named configs, merged at instantiation.

use wasmtime::component::{HasSelf, Linker};

use crate::state::HostState;

mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "ferry:host/config",
    });
}

use bindings::wasi::config::{runtime, store};

pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    runtime::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?;
    store::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)
}

impl runtime::Host for HostState {
    fn get(&mut self, key: String) -> Result<Option<String>, runtime::ConfigError> {
        Ok(self.config.get(&key).cloned())
    }

    fn get_all(&mut self) -> Result<Vec<(String, String)>, runtime::ConfigError> {
        Ok(self.config.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
    }
}

impl store::Host for HostState {
    fn get(&mut self, key: String) -> Result<Option<String>, store::Error> {
        Ok(self.config.get(&key).cloned())
    }

    fn get_all(&mut self) -> Result<Vec<(String, String)>, store::Error> {
        Ok(self.config.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
    }
}
