#!/usr/bin/env bash
# Ferry's main job: a local lattice (NATS, a host, providers) serving the sample component.
# Ctrl-C stops all of it.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh

cargo build --workspace --bins --locked
(cd examples/http-counter && cargo build --quiet --release --target wasm32-wasip2 --target-dir ../target)
exec target/debug/ferry up --component examples/target/wasm32-wasip2/release/http_counter.wasm "$@"
