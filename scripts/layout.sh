#!/usr/bin/env bash
# Writes layout/ferry.order and layout/ferry-provider-bridge.order: the functions of the release
# `ferry` executable that a host runs, and of the bridge that a bridge runs, in the order they
# first run, for lld to lay out together (layout/link.rs; docs/benchmarks.md, "Code layout").
# For the host, first what an idle host runs from start to stop, then what hosts serving the
# benchmark's HTTP and key-value scenarios run besides (loading a compiled component, instances,
# wasi-http, capability calls); for the bridge, what it runs in the benchmark's (i) scenario.
# Run it after changes to start-up or serving code; not part of the set-up or the tests. Needs a
# C compiler (scripts/fcov.c plants a breakpoint on every function entry and records the first
# hit of each, under ptrace). LAYOUT_KEEP=1 keeps the work directory (logs, records).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh
cargo build --quiet --release --workspace --bins --locked
bench=$(cargo bench --locked --no-run -p ferry-tests --bench http 2>&1 | sed -n 's/.*Executable .*(\(.*\)).*/\1/p')
[[ -x "$bench" ]] || { echo "could not find the benchmark executable" >&2; exit 1; }
work=$(mktemp -d)
trap 'kill "${nats_pid:-}" 2>/dev/null || true; [[ -n "${LAYOUT_KEEP:-}" ]] || rm -rf "$work"' EXIT
cc -O2 -o "$work/fcov" scripts/fcov.c
# Entry offsets of an executable's functions, for the recorder.
offsets() {
  nm --defined-only -S "$1" | awk '($3=="t"||$3=="T") && $2!~/^0+$/ {print $1}'
}

# The recordings run copies of the executables: the layout being measured must not shape the
# result. The benchmark finds its binaries beside its executable, so the copies sit in a copy
# of target/release whose `ferry host` and bridge start under the recorder (one record per
# process) and whose other programs run as they are.
mkdir -p "$work/bin/deps" "$work/host" "$work/bridge"
cp "$bench" "$work/bin/deps/"
for f in target/release/*; do if [[ -f "$f" && -x "$f" ]]; then cp "$f" "$work/bin/"; fi; done
mv "$work/bin/ferry" "$work/bin/ferry.real"
mv "$work/bin/ferry-provider-bridge" "$work/bin/bridge.real"
offsets "$work/bin/ferry.real" > "$work/host.offsets"
offsets "$work/bin/bridge.real" > "$work/bridge.offsets"
printf '#!/bin/sh\nif [ "$1" = host ]; then exec "%s" "%s" "%s/$$.hits" 0 "%s" "$@"; fi\nexec "%s" "$@"\n' \
  "$work/fcov" "$work/host.offsets" "$work/host" "$work/bin/ferry.real" "$work/bin/ferry.real" > "$work/bin/ferry"
printf '#!/bin/sh\nexec "%s" "%s" "%s/$$.hits" 0 "%s" "$@"\n' \
  "$work/fcov" "$work/bridge.offsets" "$work/bridge" "$work/bin/bridge.real" > "$work/bin/ferry-provider-bridge"
chmod +x "$work/bin/ferry" "$work/bin/ferry-provider-bridge"

# 1. An idle host, start to SIGTERM.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$FERRY_NATS_SERVER" -js -p "$port" -sd "$work/js" >/dev/null 2>&1 &
nats_pid=$!
sleep 0.5
ferry="$work/bin/ferry.real"
seed=$("$ferry" keys gen cluster --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["seed"])')
operator=$("$ferry" keys gen operator --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["public_key"])')
FERRY_CLUSTER_SEED=$seed FERRY_NO_COMPILE_CACHE=true "$work/fcov" "$work/host.offsets" "$work/idle.hits" 4 \
  "$ferry" host --nats-url "nats://127.0.0.1:$port" --lattice layout --operator-key "$operator" \
  </dev/null >"$work/host.log" 2>&1
grep -q "host ready" "$work/host.log" || { cat "$work/host.log"; echo "the host did not start" >&2; exit 1; }
kill "$nats_pid"; wait "$nats_pid" 2>/dev/null || true; nats_pid=

# 2. The benchmark's (c) hello, (e) key-value gets, (f) plain answers and (i) gets through the
# bridge, one second per measurement.
BENCH_ONLY=cefi BENCH_SECONDS=1 FERRY_TEST_LOG="warn,ferry_host::host=info,ferry_provider_sdk::server=info" \
  "$work/bin/deps/$(basename "$bench")" --bench >"$work/bench.log" 2>&1 \
  || { cat "$work/bench.log"; echo "the benchmark failed" >&2; exit 1; }
ls "$work/host"/*.hits "$work/bridge"/*.hits >/dev/null || { echo "a serving host or bridge was not recorded" >&2; exit 1; }

# Names in the order the recorded processes first ran them (for the host: idle first).
write_order() { # EXECUTABLE OUT HITS...
  local exe=$1 out=$2
  shift 2
  # Demangled: names without crate hashes stay valid across dependency and compiler changes
  # (layout/cc resolves them when linking).
  nm --defined-only -C "$exe" | awk '$2=="t"||$2=="T"' | python3 -c '
import sys
names = {}
for line in sys.stdin:
    address, _, name = line.rstrip("\n").split(" ", 2)
    names.setdefault(int(address, 16), []).append(name)
seen, order = set(), []
for path in sys.argv[1:]:
    for h in open(path).read().split():
        if h not in seen:
            seen.add(h)
            order.extend(names.get(int(h, 16), []))
print("\n".join(order))
' "$@" > "$out"
  echo "$out: $(wc -l < "$out") functions"
}
# shellcheck disable=SC2046 # one argument per record, oldest first
write_order "$work/bin/ferry.real" layout/ferry.order "$work/idle.hits" $(ls -tr "$work/host"/*.hits)
# shellcheck disable=SC2046
write_order "$work/bin/bridge.real" layout/ferry-provider-bridge.order $(ls -tr "$work/bridge"/*.hits)
echo "($(wc -l < "$work/idle.hits") of the host's run by an idle host)"
