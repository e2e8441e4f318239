//! The imports the host gives components, one module per WIT interface; each turns guest calls
//! into invocations or answers them locally (config, logging, link names).

mod blobstore;
mod bus;
mod config;
pub(crate) mod custom;
mod http;
pub(crate) mod keyvalue;
mod logging;
mod messaging;
mod route;
mod spool;

use wasmtime::component::Linker;

pub(crate) use http::OutgoingHttp;

use crate::state::HostState;

/// Add WASI, wasi-http types and every Ferry capability to `linker`.
pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    wasmtime_wasi::p2::add_to_linker_async(linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(linker)?;
    keyvalue::add_to_linker(linker)?;
    blobstore::add_to_linker(linker)?;
    config::add_to_linker(linker)?;
    logging::add_to_linker(linker)?;
    messaging::add_to_linker(linker)?;
    bus::add_to_linker(linker)?;
    Ok(())
}
