#!/usr/bin/env bash
# Ferry's HTTP benchmark (issues 3, 11, 12): NATS echo, in-process wasmtime, Ferry end to end,
# `wasmtime serve`, key-value gets, and the gRPC bridge, at 1 and 32 connections. Prints a markdown table; docs/benchmarks.md
# records a run. BENCH_SECONDS sets the length of each measurement (default 10).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh

# The peer: wasmtime-cli 48.0.8 from crates.io, installed once under .ferry/tools (only when
# scenario (d) is asked for: BENCH_ONLY without a `d` skips it).
WASMTIME_VERSION=48.0.8
wasmtime_root="$PWD/.ferry/tools/wasmtime"
if [[ "${BENCH_ONLY:-d}" == *d* ]] && ! "$wasmtime_root/bin/wasmtime" --version 2>/dev/null | grep -q "$WASMTIME_VERSION"; then
  echo "installing wasmtime-cli $WASMTIME_VERSION (once; takes a while)" >&2
  cargo install --quiet --locked wasmtime-cli --version "$WASMTIME_VERSION" --root "$wasmtime_root"
fi

cargo build --quiet --release --workspace --bins --locked
FERRY_TEST_LOG="warn,ferry_host::host=info,ferry_provider_sdk::server=info" BENCH_WASMTIME="$wasmtime_root/bin/wasmtime" \
  cargo bench --quiet --locked -p ferry-tests --bench http
