#!/usr/bin/env bash
# Installs everything gridwatch needs to build, run and test on Debian 12 / Ubuntu 22.04+:
# a C toolchain, the GStreamer packages (decode, RTSP server), mosquitto (demo and tests),
# and a pinned libonnxruntime.so from the PyPI onnxruntime wheel into
# /usr/local/lib/gridwatch, where the binary looks for it. Idempotent: a second run checks and returns in a second.
# Needs root (or sudo) for apt-get and /usr/local; needs python3 with pip for the wheel.
set -euo pipefail

ORT_VERSION=1.31.1
ORT_DIR=${GRIDWATCH_ORT_DIR:-/usr/local/lib/gridwatch}
# sha256 of libonnxruntime.so.$ORT_VERSION inside the manylinux_2_28 wheels.
declare -A ORT_SHA256=(
  [x86_64]=fc44112fbe06d7d689c57e11d3862031f64711007e4ee020f8eed5185fd2c1d3
  [aarch64]=8aa3b76b28c778a2b1dd660d34161adb1d508c9ccd04ff9dc80e26eca5df8467
)
PACKAGES=(
  # cc and ld: Rust links with them, and ring and rusqlite's bundled SQLite compile C.
  build-essential pkg-config
  libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev libgstrtspserver-1.0-dev
  gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-libav
  # x264enc: clips of cameras with privacy masks are encoded again
  gstreamer1.0-plugins-ugly
  # ffprobe and ffmpeg: the clip tests read what gridwatch muxed with FFmpeg's own tools
  ffmpeg
  mosquitto mosquitto-clients
  # the tests make their own TLS certificates
  openssl
  # GNU time: the hostile tests read a probe's peak memory from it
  time
  libturbojpeg0-dev
  python3-pip
  # Package tests: systemd-analyze checks the unit offline; python3-seccomp lets
  # scripts/unit-seccomp-run.py apply the unit's seccomp policy without systemd.
  systemd python3-seccomp
  # notices spoken out loud: espeak-ng (Mandarin and English voices) into ALSA's aplay
  espeak-ng alsa-utils
  # the desk: browser tests (headless Chromium over WebDriver) and screenshots that show Chinese
  chromium chromium-driver fonts-noto-cjk
)

say() { printf 'setup: %s\n' "$*"; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }
# Root (or sudo) is needed only to install what is missing: a second run needs neither.
SUDO=""
need_root() {
  [ "$(id -u)" -eq 0 ] && return
  command -v sudo >/dev/null || die "$1 needs root: run this as root, or install sudo"
  SUDO=sudo
}

# 1. Debian packages: install only what is missing.
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]}"
  need_root "installing Debian packages"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  say "Debian packages present"
fi
# The Debian package starts a system-wide broker on 1883; tests and the demo run
# their own on free ports and do not need it.

# 2. ONNX Runtime, pinned by version and sha256.
arch=$(uname -m)
want=${ORT_SHA256[$arch]:-}
[ -n "$want" ] || die "no pinned ONNX Runtime for $arch (supported: ${!ORT_SHA256[*]})"
lib="$ORT_DIR/libonnxruntime.so.$ORT_VERSION"
if [ -f "$lib" ] && [ "$(sha256sum "$lib" | cut -d' ' -f1)" = "$want" ]; then
  say "ONNX Runtime $ORT_VERSION present in $ORT_DIR"
else
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  say "downloading the onnxruntime $ORT_VERSION wheel from PyPI ($arch)"
  python3 -m pip download --quiet --no-deps --only-binary=:all: \
    --platform "manylinux_2_28_$arch" --python-version 3.11 --implementation cp \
    -d "$tmp" "onnxruntime==$ORT_VERSION" \
    || die "pip could not download onnxruntime==$ORT_VERSION; check access to PyPI"
  python3 - "$tmp" "$ORT_VERSION" <<'PY'
import glob, sys, zipfile
tmp, ver = sys.argv[1], sys.argv[2]
wheel = glob.glob(f"{tmp}/onnxruntime-*.whl")[0]
with zipfile.ZipFile(wheel) as z, open(f"{tmp}/libonnxruntime.so.{ver}", "wb") as out:
    out.write(z.read(f"onnxruntime/capi/libonnxruntime.so.{ver}"))
PY
  got=$(sha256sum "$tmp/libonnxruntime.so.$ORT_VERSION" | cut -d' ' -f1)
  [ "$got" = "$want" ] || die "libonnxruntime.so sha256 is $got, expected $want; refusing to install it"
  need_root "installing ONNX Runtime into $ORT_DIR"
  $SUDO install -d "$ORT_DIR"
  $SUDO install -m 0644 "$tmp/libonnxruntime.so.$ORT_VERSION" "$lib"
  $SUDO ln -sf "libonnxruntime.so.$ORT_VERSION" "$ORT_DIR/libonnxruntime.so"
  say "installed $lib"
fi
[ -e "$ORT_DIR/libonnxruntime.so" ] || { need_root "linking libonnxruntime.so"; $SUDO ln -sf "libonnxruntime.so.$ORT_VERSION" "$ORT_DIR/libonnxruntime.so"; }

# 3. Rust: gridwatch needs 1.92 or newer (edition 2024).
if ! command -v cargo >/dev/null; then
  die "cargo is not installed: install Rust 1.92 or newer (https://rustup.rs), then run this again"
fi
# The test command checks formatting first.
if ! cargo fmt --version >/dev/null 2>&1; then
  command -v rustup >/dev/null && rustup component add rustfmt >/dev/null 2>&1 ||
    die "rustfmt is missing: run 'rustup component add rustfmt' (or install your distribution's rustfmt), then run this again"
  say "installed rustfmt"
fi
# ... and lints with clippy.
if ! cargo clippy --version >/dev/null 2>&1; then
  command -v rustup >/dev/null && rustup component add clippy >/dev/null 2>&1 ||
    die "clippy is missing: run 'rustup component add clippy' (or install your distribution's clippy), then run this again"
  say "installed clippy"
fi
say "ready"
