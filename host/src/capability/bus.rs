//! `wasmcloud:bus/lattice@{1.0.0,2.0.0}`: a component picks the link name its next calls over
//! given interfaces use.

use wasmtime::component::{HasSelf, Linker, Resource};

use crate::state::HostState;

/// A `call-target-interface` resource: one WIT interface a link name applies to.
#[derive(Debug)]
#[allow(unreachable_pub, reason = "named by the generated bindings, which re-export it")]
pub struct CallTargetInterface {
    namespace: String,
    package: String,
    interface: String,
}

mod v1 {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "ferry:host/bus1",
        imports: { default: trappable },
        with: { "wasmcloud:bus/lattice.call-target-interface": super::CallTargetInterface },
    });
}

mod v2 {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "ferry:host/bus2",
        imports: { default: trappable },
        with: { "wasmcloud:bus/lattice.call-target-interface": super::CallTargetInterface },
    });
}

pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    v1::wasmcloud::bus1_0_0::lattice::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?;
    v2::wasmcloud::bus2_0_0::lattice::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)
}

impl HostState {
    fn new_target(
        &mut self,
        namespace: String,
        package: String,
        interface: String,
    ) -> wasmtime::Result<Resource<CallTargetInterface>> {
        Ok(self.table.push(CallTargetInterface { namespace, package, interface })?)
    }

    fn apply_link_name(&mut self, name: &str, interfaces: Vec<Resource<CallTargetInterface>>) -> wasmtime::Result<()> {
        for target in interfaces {
            let target = self.table.delete(target)?;
            self.set_link_name(name, target.namespace, target.package, target.interface);
        }
        Ok(())
    }
}

impl v1::wasmcloud::bus1_0_0::lattice::HostCallTargetInterface for HostState {
    fn new(
        &mut self,
        namespace: String,
        package: String,
        interface: String,
    ) -> wasmtime::Result<Resource<CallTargetInterface>> {
        self.new_target(namespace, package, interface)
    }

    fn drop(&mut self, rep: Resource<CallTargetInterface>) -> wasmtime::Result<()> {
        self.table.delete(rep)?;
        Ok(())
    }
}

impl v1::wasmcloud::bus1_0_0::lattice::Host for HostState {
    fn set_link_name(&mut self, name: String, interfaces: Vec<Resource<CallTargetInterface>>) -> wasmtime::Result<()> {
        self.apply_link_name(&name, interfaces)
    }
}

impl v2::wasmcloud::bus2_0_0::lattice::HostCallTargetInterface for HostState {
    fn new(
        &mut self,
        namespace: String,
        package: String,
        interface: String,
    ) -> wasmtime::Result<Resource<CallTargetInterface>> {
        self.new_target(namespace, package, interface)
    }

    fn drop(&mut self, rep: Resource<CallTargetInterface>) -> wasmtime::Result<()> {
        self.table.delete(rep)?;
        Ok(())
    }
}

impl v2::wasmcloud::bus2_0_0::lattice::Host for HostState {
    fn set_link_name(
        &mut self,
        name: String,
        interfaces: Vec<Resource<CallTargetInterface>>,
    ) -> wasmtime::Result<Result<(), String>> {
        if let Err(err) = ferry_proto::subject::validate_id("link name", &name) {
            return Ok(Err(err.to_string()));
        }
        // As the WIT says (and wasmCloud's host does): refused, changing nothing, when an
        // interface has no link of that name now.
        let component = self.env.id.clone();
        for target in &interfaces {
            let t = self.table.get(target)?;
            if self.env.lattice.target_of(&component, &name, &t.namespace, &t.package, &t.interface).is_none() {
                let missing = format!("{}:{}/{}", t.namespace, t.package, t.interface);
                for target in interfaces {
                    self.table.delete(target)?;
                }
                return Ok(Err(format!("not-linked: interface `{missing}` has no link named `{name}`")));
            }
        }
        self.apply_link_name(&name, interfaces)?;
        Ok(Ok(()))
    }
}
