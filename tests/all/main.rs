//! Ferry's end-to-end tests: real processes, one module per area.

mod blob_durability;
mod blobstore;
mod bounded;
mod bridge;
mod bridge_calls;
mod control;
mod ctl_cli;
mod events;
mod health;
mod hostile;
mod http;
mod isolation;
mod keyvalue;
mod kv_large;
mod lattice_state;
mod lifecycle;
mod limits;
mod messaging;
mod operator;
mod replay;
mod secrets;
mod security;
mod supervision;
mod timeouts;
mod up;
mod update;
