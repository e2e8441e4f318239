#!/usr/bin/env bash
# Ferry's test command: installs prerequisites, checks formatting and lints, builds the
# binaries the end-to-end tests start, and runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh

cargo fmt --all --check
# Lint while building: clippy-driver compiles the workspace's own crates (warnings denied) in
# the one build that makes the binaries and test executables, so the dependencies compile once
# instead of once more in check mode for `cargo clippy`. `cargo test` runs with the same
# settings and finds everything built.
driver="$(rustup which clippy-driver 2>/dev/null || command -v clippy-driver || true)"
if [ -z "$driver" ]; then
    rustup component add clippy >&2
    driver="$(rustup which clippy-driver)"
fi
export RUSTC_WORKSPACE_WRAPPER="$driver"
export CLIPPY_ARGS="-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__"
cargo build --workspace --all-targets --locked
cargo test --workspace --locked
