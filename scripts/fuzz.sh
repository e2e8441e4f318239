#!/usr/bin/env bash
# Fuzz Ferry's decoders of untrusted bytes with libFuzzer on the stable toolchain: envelopes,
# streams, control commands, claims/credentials/references, HTTP messages (fuzz/fuzz_targets).
#
#   bash scripts/fuzz.sh              # every target for 60 s each
#   FUZZ_SECONDS=600 bash scripts/fuzz.sh ctl claims   # chosen targets, longer
#
# Corpora grow in fuzz/corpus/<target> (kept between runs, not committed); a crash leaves its
# input in fuzz/artifacts/<target>/ and fails the run. Replay one with
#   target/fuzz/x86_64-unknown-linux-gnu/release/<target> fuzz/artifacts/<target>/crash-…
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${FUZZ_SECONDS:-60}"
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(envelope stream ctl claims http link_config)
triple="$(rustc -vV | sed -n 's/^host: //p')"
export CARGO_TARGET_DIR="$PWD/target/fuzz"
# Coverage instrumentation as cargo-fuzz applies it, minus the sanitizer (nightly only); the
# explicit --target keeps it off build scripts and proc macros.
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing"
unset RUSTC_WORKSPACE_WRAPPER
(cd fuzz && cargo build --release --target "$triple" --bins)
failed=0
for target in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$target" "fuzz/artifacts/$target"
  echo "== $target: ${seconds} s"
  if "$CARGO_TARGET_DIR/$triple/release/$target" -max_total_time="$seconds" -print_final_stats=1 \
      -artifact_prefix="fuzz/artifacts/$target/" "fuzz/corpus/$target" 2> "fuzz/artifacts/$target/last.log"; then
    grep -E "^(Done|stat::number_of_executed_units|stat::peak_rss_mb)" "fuzz/artifacts/$target/last.log" || true
    grep -E "cov: [0-9]+" "fuzz/artifacts/$target/last.log" | tail -1 || true
  else
    echo "!! $target crashed: see fuzz/artifacts/$target/ (log: fuzz/artifacts/$target/last.log)"
    tail -30 "fuzz/artifacts/$target/last.log"
    failed=1
  fi
done
exit "$failed"
