#!/usr/bin/env bash
# The project's test command: set-up (idempotent), a formatting check, then every test against real parts
# (the model, GStreamer's RTSP server streaming the street clip, mosquitto).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
cargo fmt --check || { echo "test: files above are not formatted: run 'cargo fmt', then commit" >&2; exit 1; }
cargo test --release -j"${GRIDWATCH_JOBS:-2}" "$@"
