#!/usr/bin/env bash
# Ferry's test command: installs prerequisites, checks formatting and lints, builds the
# binaries the end-to-end tests start, and runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh

cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo build --workspace --bins --locked
cargo test --workspace --locked
