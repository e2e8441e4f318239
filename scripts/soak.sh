#!/usr/bin/env bash
# Ferry's soak run (issue 13): 10 minutes (SOAK_SECONDS) of mixed HTTP, key-value, blob and
# messaging load against two hosts and two instances of each provider, one provider instance
# killed and started again every minute (SOAK_KILL_EVERY). Prints memory every 10 s and a summary;
# fails on a lost or hung call or a host's memory growth after warm-up. docs/operations.md
# records a run. Release build by default; SOAK_PROFILE=dev runs the debug build the tests use
# (no release build to wait for).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh

export FERRY_TEST_LOG="${FERRY_TEST_LOG:-warn,ferry_host::host=info,ferry_provider_sdk::server=info}"
if [[ "${SOAK_PROFILE:-release}" == dev ]]; then
  cargo build --quiet --workspace --bins --locked
  cargo test --quiet --locked -p ferry-tests --bench soak
else
  cargo build --quiet --release --workspace --bins --locked
  cargo bench --quiet --locked -p ferry-tests --bench soak
fi
