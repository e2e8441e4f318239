#!/usr/bin/env bash
# Writes host/layout/ferry.order: the functions of the release `ferry` executable that a host
# runs from start to stop, in the order they first run, for lld to lay out together
# (host/build.rs; docs/benchmarks.md, "Code layout"). Run it after changes to start-up code;
# not part of the set-up or the tests. Needs a C compiler (scripts/fcov.c plants a breakpoint
# on every function entry and records the first hit of each, under ptrace).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh
cargo build --quiet --release --bin ferry --locked
work=$(mktemp -d)
trap 'kill "${nats_pid:-}" 2>/dev/null || true; rm -rf "$work"' EXIT
cc -O2 -o "$work/fcov" scripts/fcov.c
# The layout being measured must not shape the result: record on a copy of the executable.
cp target/release/ferry "$work/ferry"
nm --defined-only -S "$work/ferry" | awk '($3=="t"||$3=="T") && $2!~/^0+$/ {print $1}' > "$work/offsets"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$FERRY_NATS_SERVER" -js -p "$port" -sd "$work/js" >/dev/null 2>&1 &
nats_pid=$!
sleep 0.5
seed=$("$work/ferry" keys gen cluster --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["seed"])')
operator=$("$work/ferry" keys gen operator --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["public_key"])')
FERRY_CLUSTER_SEED=$seed FERRY_NO_COMPILE_CACHE=true "$work/fcov" "$work/offsets" "$work/hits" 4 \
  "$work/ferry" host --nats-url "nats://127.0.0.1:$port" --lattice layout --operator-key "$operator" \
  </dev/null >"$work/host.log" 2>&1
grep -q "host ready" "$work/host.log" || { cat "$work/host.log"; echo "the host did not start" >&2; exit 1; }
nm --defined-only "$work/ferry" | awk '$2=="t"||$2=="T" {print $1, $3}' | python3 -c '
import sys
names = {}
for line in sys.stdin:
    address, name = line.split()
    names.setdefault(int(address, 16), []).append(name)
hits = open(sys.argv[1]).read().split()
print("\n".join(n for h in hits for n in names.get(int(h, 16), [])))
' "$work/hits" > host/layout/ferry.order
echo "host/layout/ferry.order: $(wc -l < host/layout/ferry.order) functions"
