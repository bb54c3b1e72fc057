#!/usr/bin/env bash
# The main job on an embedded default: set-up (idempotent), build, and `gridwatch demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
cargo build --release -j"${GRIDWATCH_JOBS:-2}"
exec ./target/release/gridwatch demo "$@"
