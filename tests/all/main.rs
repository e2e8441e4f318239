//! Ferry's end-to-end tests: real processes, one module per area.

mod health;
mod lifecycle;
mod keyvalue;
mod security;
