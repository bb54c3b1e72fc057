#!/usr/bin/env bash
# The project's test command: set-up (idempotent), formatting and lint checks, then every test against real parts
# (the model, GStreamer's RTSP server streaming the street clip, mosquitto).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
cargo fmt --check || { echo "test: files above are not formatted: run 'cargo fmt', then commit" >&2; exit 1; }
# Lints (Cargo.toml's [lints]) as errors, on the release profile the tests build anyway.
cargo clippy --release -j"${GRIDWATCH_JOBS:-2}" --all-targets -- -D warnings ||
  { echo "test: clippy found the problems above: fix them, then commit" >&2; exit 1; }
cargo test --release -j"${GRIDWATCH_JOBS:-2}" "$@"
