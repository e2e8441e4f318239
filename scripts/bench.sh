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
# The code layout's health (layout/, decision 84): functions of an order file that the build no
# longer has (renamed, split, removed) are laid out nowhere, and the figures below move with it.
for bin in ferry ferry-provider-bridge; do
  total=$(wc -l <"layout/$bin.order")
  found=$(nm --defined-only -j -C "target/release/$bin" | sort -u | grep -cxFf - "layout/$bin.order" || true)
  echo "layout: $found of $total functions of layout/$bin.order are in target/release/$bin" >&2
  if ((found * 10 < total * 9)); then echo "layout: stale; record it again with scripts/layout.sh" >&2; fi
done
FERRY_TEST_LOG="warn,ferry_host::host=info,ferry_provider_sdk::server=info" BENCH_WASMTIME="$wasmtime_root/bin/wasmtime" \
  cargo bench --quiet --locked -p ferry-tests --bench http
