//! Custom interfaces between components (what wasmCloud does over wRPC): each function of an
//! interface a component imports and no capability provides becomes an invocation of the
//! component linked for that interface, its arguments and results in the MessagePack form of
//! [`crate::wit_value`].

use ferry_proto::RpcError;
use wasmtime::{
    Engine,
    component::{Component, Linker, Type, types::ComponentItem},
};

use crate::{HostError, state::HostState, wit_value};

/// Whether the host itself provides `name` (a WASI, wasi-http or Ferry capability interface),
/// rather than another component.
fn host_provided(name: &str) -> bool {
    name.starts_with("wasi:") || name.starts_with("wasmcloud:bus/") || name.starts_with("wasmcloud:messaging/")
}

/// `ns:pkg/iface@version` as (`ns`, `pkg`, `iface`).
pub(crate) fn interface_parts(name: &str) -> Option<(&str, &str, &str)> {
    let unversioned = name.split('@').next()?;
    let (ns, rest) = unversioned.split_once(':')?;
    let (pkg, iface) = rest.split_once('/')?;
    (!ns.is_empty() && !pkg.is_empty() && !iface.is_empty()).then_some((ns, pkg, iface))
}

/// The operation name of `func` in `ns:pkg/iface`, as invocations carry it.
pub(crate) fn operation(ns: &str, pkg: &str, iface: &str, func: &str) -> String {
    format!("{ns}:{pkg}/{iface}.{func}")
}

/// Whether `operation` names a function of a custom interface, and which: (`ns`, `pkg`,
/// `iface`, `func`).
pub(crate) fn parse_operation(operation: &str) -> Option<(&str, &str, &str, &str)> {
    let (interface, func) = operation.rsplit_once('.')?;
    let (ns, pkg, iface) = interface_parts(interface)?;
    (!func.is_empty() && !host_provided(interface) && !func.contains('/')).then_some((ns, pkg, iface, func))
}

/// Define, in `linker` (this component's own), every function of every interface `component`
/// imports that the host does not provide.
///
/// # Errors
/// [`HostError::Invalid`] when such an import is not an interface, or holds a resource.
pub(crate) fn link_imports(
    linker: &mut Linker<HostState>,
    component: &Component,
    engine: &Engine,
) -> Result<(), HostError> {
    let ty = component.component_type();
    for (name, item) in ty.imports(engine) {
        if host_provided(name) {
            continue;
        }
        let ComponentItem::ComponentInstance(instance) = item.ty else {
            return Err(HostError::Invalid(format!("the component imports {name}, which is not an interface")));
        };
        let (ns, pkg, iface) = interface_parts(name)
            .ok_or_else(|| HostError::Invalid(format!("the component imports {name}, which names no interface")))?;
        let mut defined = linker.instance(name)?;
        for (func, item) in instance.exports(engine) {
            match item.ty {
                ComponentItem::ComponentFunc(_) => {
                    let (ns, pkg, iface, op) =
                        (ns.to_owned(), pkg.to_owned(), iface.to_owned(), operation(ns, pkg, iface, func));
                    defined.func_new_async(func, move |store, ty, params, results| {
                        let route = store.data().route(&ns, &pkg, &iface);
                        let op = op.clone();
                        Box::new(async move {
                            let route = route.map_err(wasmtime::Error::msg)?;
                            let payload = wit_value::encode(params).map_err(wasmtime::Error::msg)?;
                            let answer = route
                                .call_component(&op, payload)
                                .await
                                .map_err(|e: RpcError| wasmtime::Error::msg(format!("{op}: {e}")))?;
                            let types: Vec<Type> = ty.results().collect();
                            let values = wit_value::decode(&answer, &types)
                                .map_err(|e| wasmtime::Error::msg(format!("{op} answered {e}")))?;
                            for (slot, value) in results.iter_mut().zip(values) {
                                *slot = value;
                            }
                            Ok(())
                        })
                    })?;
                }
                ComponentItem::Resource(_) => {
                    return Err(HostError::Invalid(format!(
                        "{name} has resources, which cannot cross between components"
                    )));
                }
                _ => {}
            }
        }
    }
    Ok(())
}

/// The interfaces `component` exports that another component may call: every exported
/// interface but those the host itself invokes.
///
/// # Errors
/// [`HostError::Invalid`] when such an interface holds a resource.
pub(crate) fn custom_exports(component: &Component, engine: &Engine) -> Result<Vec<String>, HostError> {
    let mut found = Vec::new();
    for (name, item) in component.component_type().exports(engine) {
        let ComponentItem::ComponentInstance(instance) = item.ty else { continue };
        if host_provided(name) || interface_parts(name).is_none() {
            continue;
        }
        if instance.exports(engine).any(|(_, item)| matches!(item.ty, ComponentItem::Resource(_))) {
            return Err(HostError::Invalid(format!("{name} has resources, which cannot cross between components")));
        }
        found.push(name.to_owned());
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_of_custom_interfaces_are_told_apart() {
        assert_eq!(interface_parts("example:greeter/greet@0.1.0"), Some(("example", "greeter", "greet")));
        assert_eq!(interface_parts("nope"), None);
        assert_eq!(operation("example", "greeter", "greet", "hello"), "example:greeter/greet.hello");
        assert_eq!(parse_operation("example:greeter/greet.hello"), Some(("example", "greeter", "greet", "hello")));
        assert_eq!(parse_operation("wasi:http/incoming-handler.handle"), None);
        assert_eq!(parse_operation("wasmcloud:messaging/handler.handle-message"), None);
        assert_eq!(parse_operation("garbage"), None);
    }
}
