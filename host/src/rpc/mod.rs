//! Invocations in and out of the host: [`client`] sends components' capability calls to
//! providers; [`server`] receives invocations for the components this host runs.

pub(crate) mod client;
pub(crate) mod server;
