//! Ferry's end-to-end tests: real processes, one module per area.

mod keyvalue;
mod security;
mod health;
