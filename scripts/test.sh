#!/usr/bin/env bash
# The project's test command: set-up (idempotent), then every test against real parts
# (the model, GStreamer's RTSP server streaming the street clip, mosquitto).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
cargo test --release -j"${GRIDWATCH_JOBS:-2}" "$@"
