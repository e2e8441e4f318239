#!/usr/bin/env bash
# Writes host/layout/ferry.order: the functions of the release `ferry` executable that a host
# runs, in the order they first run, for lld to lay out together (host/build.rs;
# docs/benchmarks.md, "Code layout"). First what an idle host runs from start to stop, then what
# hosts serving the benchmark's HTTP and key-value scenarios run besides (loading a compiled
# component, instances, wasi-http, capability calls). Run it after changes to start-up or
# serving code; not part of the set-up or the tests. Needs a C compiler (scripts/fcov.c plants a
# breakpoint on every function entry and records the first hit of each, under ptrace).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh
cargo build --quiet --release --workspace --bins --locked
bench=$(cargo bench --locked --no-run -p ferry-tests --bench http 2>&1 | sed -n 's/.*Executable .*(\(.*\)).*/\1/p')
[[ -x "$bench" ]] || { echo "could not find the benchmark executable" >&2; exit 1; }
work=$(mktemp -d)
trap 'kill "${nats_pid:-}" 2>/dev/null || true; [[ -n "${LAYOUT_KEEP:-}" ]] || rm -rf "$work"' EXIT
cc -O2 -o "$work/fcov" scripts/fcov.c
offsets_and_names() {
  nm --defined-only "$1" | awk '$2=="t"||$2=="T" {print $1, $3}'
}

# 1. An idle host, start to SIGTERM. The layout being measured must not shape the result: the
# recording runs a copy of the executable.
cp target/release/ferry "$work/ferry"
nm --defined-only -S "$work/ferry" | awk '($3=="t"||$3=="T") && $2!~/^0+$/ {print $1}' > "$work/offsets"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$FERRY_NATS_SERVER" -js -p "$port" -sd "$work/js" >/dev/null 2>&1 &
nats_pid=$!
sleep 0.5
seed=$("$work/ferry" keys gen cluster --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["seed"])')
operator=$("$work/ferry" keys gen operator --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["public_key"])')
FERRY_CLUSTER_SEED=$seed FERRY_NO_COMPILE_CACHE=true "$work/fcov" "$work/offsets" "$work/idle.hits" 4 \
  "$work/ferry" host --nats-url "nats://127.0.0.1:$port" --lattice layout --operator-key "$operator" \
  </dev/null >"$work/host.log" 2>&1
grep -q "host ready" "$work/host.log" || { cat "$work/host.log"; echo "the host did not start" >&2; exit 1; }
kill "$nats_pid"; wait "$nats_pid" 2>/dev/null || true; nats_pid=

# 2. Hosts serving the benchmark's (c) hello, (e) key-value gets and (f) plain answers, briefly.
# The benchmark finds its binaries beside its executable: a copy of target/release whose `ferry`
# runs `ferry host` under the recorder (one record per host) and everything else as it is.
mkdir -p "$work/bin/deps" "$work/serving"
cp "$bench" "$work/bin/deps/"
for f in target/release/*; do [[ -f "$f" && -x "$f" ]] && cp "$f" "$work/bin/"; done
mv "$work/bin/ferry" "$work/bin/ferry.real"
cat > "$work/bin/ferry" <<EOF
#!/bin/sh
if [ "\$1" = host ]; then exec "$work/fcov" "$work/offsets" "$work/serving/\$\$.hits" 0 "$work/bin/ferry.real" "\$@"; fi
exec "$work/bin/ferry.real" "\$@"
EOF
chmod +x "$work/bin/ferry"
# The copy must hold the same code at the same offsets as the one step 1 recorded.
cmp -s "$work/ferry" "$work/bin/ferry.real"
BENCH_ONLY=cef BENCH_SECONDS=1 FERRY_TEST_LOG="warn,ferry_host::host=info,ferry_provider_sdk::server=info" "$work/bin/deps/$(basename "$bench")" --bench >"$work/bench.log" 2>&1 \
  || { cat "$work/bench.log"; echo "the benchmark failed" >&2; exit 1; }
ls "$work/serving"/*.hits >/dev/null || { echo "no serving host was recorded" >&2; exit 1; }

# Idle first, then what serving added, in the order the serving hosts first ran it.
offsets_and_names "$work/ferry" | python3 -c '
import sys
names = {}
for line in sys.stdin:
    address, name = line.split()
    names.setdefault(int(address, 16), []).append(name)
seen, order = set(), []
for path in sys.argv[1:]:
    for h in open(path).read().split():
        if h not in seen:
            seen.add(h)
            order.extend(names.get(int(h, 16), []))
print("\n".join(order))
' "$work/idle.hits" $(ls -tr "$work/serving"/*.hits) > host/layout/ferry.order
echo "host/layout/ferry.order: $(wc -l < host/layout/ferry.order) functions ($(wc -l < "$work/idle.hits") run by an idle host)"
