#!/usr/bin/env bash
# Cross-builds gridwatch for aarch64 (arm64) on a Debian 12 x86_64 machine without
# containers, then proves the binary under qemu-user: `gridwatch --version`, `gridwatch
# detect --json` on a photo compared with this machine's native run (same labels, IoU >=
# 0.99, score within 0.01) on every photo in tests/fixtures/photos, and the library's unit tests (`cargo test --release --lib`).
#
# What it uses: rustup's aarch64-unknown-linux-gnu target, Debian's aarch64 gcc, an arm64
# sysroot extracted by mmdebstrap into target/aarch64-sysroot (made once, reused), qemu-user
# >= 8.1 from bookworm-backports (Debian 12's own 7.2 crashes in ONNX Runtime's CPU
# detection), and the aarch64 libonnxruntime.so from the PyPI wheel pinned in setup.sh.
# Builds go to target/aarch64 (a target dir of their own: x86_64 builds are not touched).
#
# Exit codes: 0 all passed; 1 a step failed; 3 the Rust aarch64 target cannot be
# installed (rustup's server unreachable): see docs/install.md for what a user needs.
# Options: --no-test (build and --version/detect only); GRIDWATCH_JOBS (default 2).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

TRIPLE=aarch64-unknown-linux-gnu
SUITE=bookworm
MIRROR=${GRIDWATCH_DEBIAN_MIRROR:-http://deb.debian.org/debian}
SYSROOT=$ROOT/target/aarch64-sysroot
export CARGO_TARGET_DIR=$ROOT/target/aarch64
OUT=$CARGO_TARGET_DIR/$TRIPLE/release
JOBS=${GRIDWATCH_JOBS:-2}
PHOTOS=(tests/fixtures/photos/*.jpg)
RUN_TESTS=1
TEST_ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --no-test) RUN_TESTS=0 ;;
    --) shift; TEST_ARGS=("$@"); break ;;
    *) printf 'usage: scripts/cross-aarch64.sh [--no-test] [-- TEST-FILTER-AND-ARGS]\n' >&2; exit 1 ;;
  esac
  shift
done

# What the binary links and loads at run time, plus the headers and .pc files to build.
SYSROOT_PACKAGES=(
  libc6-dev libgcc-12-dev
  libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev libgstrtspserver-1.0-dev libturbojpeg0-dev
  gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-libav
)
HOST_PACKAGES=(gcc-aarch64-linux-gnu g++-aarch64-linux-gnu libc6-dev-arm64-cross mmdebstrap python3-pip)

say() { printf 'cross-aarch64: %s\n' "$*"; }
die() { printf 'cross-aarch64: error: %s\n' "$*" >&2; exit 1; }
step_start() { STEP_T0=$(date +%s); say "$*"; }
step_end() { say "  done in $(($(date +%s) - STEP_T0)) s"; }
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || die "run as root, or install sudo"
  SUDO=sudo
fi
T_ALL=$(date +%s)

# 1. The Rust target. Everything else comes from Debian and PyPI; this one comes from
# rustup's own server, which not every network reaches.
if ! command -v rustup >/dev/null; then
  printf 'cross-aarch64: rustup is not installed, so the Rust target %s cannot be added: install Rust with rustup (https://rustup.rs), or build on an arm64 device (see docs/install.md).\n' "$TRIPLE" >&2
  exit 3
fi
if ! rustup target list --installed 2>/dev/null | grep -qx "$TRIPLE"; then
  say "adding the Rust target $TRIPLE (rustup)"
  if ! rustup target add "$TRIPLE"; then
    printf 'cross-aarch64: cannot install the Rust target %s: rustup could not reach its server.\n' "$TRIPLE" >&2
    printf 'cross-aarch64: on a machine that can, run `rustup target add %s`, or build on an arm64 device (see docs/install.md).\n' "$TRIPLE" >&2
    exit 3
  fi
fi

# 2. Host tools: cross gcc, mmdebstrap, and qemu-user >= 8.1 from bookworm-backports.
qemu_ok() {
  command -v qemu-aarch64 >/dev/null || return 1
  local v
  v=$(qemu-aarch64 --version | sed -n 's/^qemu-aarch64 version \([0-9]*\)\.\([0-9]*\).*/\1 \2/p')
  set -- $v
  [ "${1:-0}" -gt 8 ] || { [ "${1:-0}" -eq 8 ] && [ "${2:-0}" -ge 1 ]; }
}
missing=()
for p in "${HOST_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ] || ! qemu_ok; then
  if ! qemu_ok && ! grep -rqs "$SUITE-backports" /etc/apt/sources.list /etc/apt/sources.list.d/; then
    say "adding $SUITE-backports to apt's sources (for qemu-user >= 8.1)"
    printf 'Types: deb\nURIs: %s\nSuites: %s-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
      "$MIRROR" "$SUITE" | $SUDO tee /etc/apt/sources.list.d/gridwatch-backports.sources >/dev/null
  fi
  say "installing ${missing[*]} qemu-user"
  $SUDO apt-get update -qq
  if [ ${#missing[@]} -gt 0 ]; then
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
  if ! qemu_ok; then
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends -t "$SUITE-backports" qemu-user >/dev/null
  fi
  qemu_ok || die "qemu-aarch64 >= 8.1 is needed ($(qemu-aarch64 --version 2>/dev/null | head -1 || echo none found))"
fi
say "$(qemu-aarch64 --version | head -1)"

# 3. The arm64 sysroot: packages extracted, not installed (no emulation needed). Made
# again only when the package list changes.
stamp="$SYSROOT/.gridwatch-packages"
if [ "$(cat "$stamp" 2>/dev/null)" != "$SUITE ${SYSROOT_PACKAGES[*]}" ]; then
  step_start "extracting an arm64 $SUITE sysroot into $SYSROOT"
  rm -rf "$SYSROOT"
  mmdebstrap --quiet --variant=extract --architectures=arm64 \
    --include="$(IFS=,; echo "${SYSROOT_PACKAGES[*]}")" "$SUITE" "$SYSROOT" "$MIRROR"
  # Extracting skips maintainer scripts, so update-alternatives never made these
  # links; libavcodec (gstreamer1.0-libav) needs them to load.
  lib="$SYSROOT/usr/lib/aarch64-linux-gnu"
  for l in libblas.so.3 liblapack.so.3; do
    src=$(cd "$lib" && ls -d */"$l" 2>/dev/null | head -1)
    [ -n "$src" ] && ln -sf "$src" "$lib/$l"
  done
  echo "$SUITE ${SYSROOT_PACKAGES[*]}" >"$stamp"
  step_end
else
  say "sysroot $SYSROOT present"
fi

# 4. ONNX Runtime for aarch64, pinned in setup.sh (one place for version and sha256).
ORT_VERSION=$(sed -n 's/^ORT_VERSION=//p' scripts/setup.sh)
ORT_SHA=$(sed -n 's/^ *\[aarch64\]=\([0-9a-f]\{64\}\)$/\1/p' scripts/setup.sh)
[ -n "$ORT_VERSION" ] && [ -n "$ORT_SHA" ] || die "cannot read the pinned ONNX Runtime from scripts/setup.sh"
ORT_DIR=$ROOT/target/onnxruntime/aarch64
ORT_LIB=$ORT_DIR/libonnxruntime.so.$ORT_VERSION
if ! { [ -f "$ORT_LIB" ] && [ "$(sha256sum "$ORT_LIB" | cut -d' ' -f1)" = "$ORT_SHA" ]; }; then
  say "downloading the onnxruntime $ORT_VERSION wheel for aarch64 from PyPI"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  python3 -m pip download --quiet --no-deps --only-binary=:all: \
    --platform manylinux_2_28_aarch64 --python-version 3.11 --implementation cp \
    -d "$tmp" "onnxruntime==$ORT_VERSION" || die "pip could not download onnxruntime==$ORT_VERSION (aarch64)"
  python3 - "$tmp" "$ORT_VERSION" <<'PY'
import glob, sys, zipfile
tmp, ver = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(glob.glob(f"{tmp}/onnxruntime-*.whl")[0]) as z, open(f"{tmp}/lib", "wb") as out:
    out.write(z.read(f"onnxruntime/capi/libonnxruntime.so.{ver}"))
PY
  got=$(sha256sum "$tmp/lib" | cut -d' ' -f1)
  [ "$got" = "$ORT_SHA" ] || die "aarch64 libonnxruntime.so sha256 is $got, expected $ORT_SHA"
  mkdir -p "$ORT_DIR"
  mv "$tmp/lib" "$ORT_LIB"
  ln -sf "libonnxruntime.so.$ORT_VERSION" "$ORT_DIR/libonnxruntime.so"
fi

# 5. Build. pkg-config reads the sysroot's .pc files and prefixes their paths; the
# linker gets the sysroot and the library folders that indirect dependencies live in.
triple_env=${TRIPLE//-/_}
export "PKG_CONFIG_ALLOW_CROSS_$triple_env=1"
export "PKG_CONFIG_LIBDIR_$triple_env=$SYSROOT/usr/lib/aarch64-linux-gnu/pkgconfig:$SYSROOT/usr/share/pkgconfig"
export "PKG_CONFIG_SYSROOT_DIR_$triple_env=$SYSROOT"
export "CC_$triple_env=aarch64-linux-gnu-gcc"
export "CXX_$triple_env=aarch64-linux-gnu-g++"
export "AR_$triple_env=aarch64-linux-gnu-ar"
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-C link-arg=--sysroot=$SYSROOT \
-C link-arg=-Wl,-rpath-link,$SYSROOT/usr/lib/aarch64-linux-gnu -C link-arg=-Wl,-rpath-link,$SYSROOT/lib/aarch64-linux-gnu"
# Tests run through qemu with the sysroot as their root for absolute paths (the loader,
# libraries, GStreamer plugins). GStreamer must not fork its plugin scanner under qemu.
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L $SYSROOT"
export GST_REGISTRY_FORK=no
export GST_REGISTRY=$CARGO_TARGET_DIR/gst-registry-aarch64.bin
export ORT_DYLIB_PATH=$ORT_LIB

step_start "cargo build --release --target $TRIPLE -j$JOBS"
cargo build --release --target "$TRIPLE" -j"$JOBS" --bin gridwatch
step_end
file "$OUT/gridwatch" 2>/dev/null | sed 's/^/cross-aarch64:   /' || true

# 6. Run it under qemu.
qrun() { qemu-aarch64 -L "$SYSROOT" "$@"; }
step_start "gridwatch --version under qemu"
version=$(qrun "$OUT/gridwatch" --version)
say "  $version"
step_end

# The float model on both sides: each machine's default differs (int8 on aarch64), and
# int8 kernels differ between the two, so int8 is checked against float by the unit
# test `int8_model_finds_what_the_float_model_finds` under qemu (step 7).
step_start "gridwatch detect --json --model yolox-nano on ${#PHOTOS[@]} photos under qemu, and natively"
arm_json=$(qrun "$OUT/gridwatch" detect --json --model yolox-nano --onnxruntime "$ORT_LIB" "${PHOTOS[@]}")
native_bin=$ROOT/target/release/gridwatch
[ -x "$native_bin" ] || cargo build --release -j"$JOBS" --bin gridwatch --target-dir "$ROOT/target"
x86_json=$("$native_bin" detect --json --model yolox-nano "${PHOTOS[@]}")
step_end
if ! python3 - "$x86_json" "$arm_json" <<'PY'
import json, sys
def lines(text):
    return {d["image"]: d["detections"] for d in map(json.loads, text.splitlines())}
x86, arm = lines(sys.argv[1]), lines(sys.argv[2])
def iou(a, b):
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0])); h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0
ok = x86.keys() == arm.keys() and len(x86) > 0
worst_iou, worst_ds, total = 1.0, 0.0, 0
for image, want in x86.items():
    got = arm.get(image, [])
    ok &= len(want) == len(got) and len(want) > 0
    for d in want:
        # the aarch64 detection of the same label that overlaps this one most
        best = max((e for e in got if e["label"] == d["label"]), key=lambda e: iou(d["box"], e["box"]), default=None)
        if best is None:
            print(f"cross-aarch64:   {image}: x86_64 {d['label']} {d['score']:.4f} has no aarch64 match"); ok = False; continue
        i, ds = iou(d["box"], best["box"]), abs(d["score"] - best["score"])
        total += 1; worst_iou = min(worst_iou, i); worst_ds = max(worst_ds, ds)
        if i < 0.99 or ds > 0.01:
            ok = False
            print(f"cross-aarch64:   {image}: {d['label']} x86_64 {d['score']:.4f} aarch64 {best['score']:.4f} IoU {i:.4f}: DIFFERENT")
    print(f"cross-aarch64:   {image}: {len(want)} detections on x86_64, {len(got)} on aarch64")
print(f"cross-aarch64:   {total} detections matched; lowest IoU {worst_iou:.4f}, largest score difference {worst_ds:.4f}")
sys.exit(0 if ok else 1)
PY
then
  die "aarch64 detections differ from x86_64"
fi

# 7. Unit tests, built for aarch64 and run by cargo through the qemu runner.
if [ "$RUN_TESTS" = 1 ]; then
  step_start "cargo test --release --lib --target $TRIPLE (under qemu)"
  log=$CARGO_TARGET_DIR/unit-tests.log
  rc=0
  cargo test --release --lib --target "$TRIPLE" -j"$JOBS" -- "${TEST_ARGS[@]}" >"$log" 2>&1 || rc=$?
  grep -E '^test result|^test .*FAILED|panicked' "$log" | sed 's/^/cross-aarch64:   /' || true
  [ "$rc" -eq 0 ] || die "aarch64 unit tests failed (exit $rc; log: $log)"
  step_end
fi
say "all passed in $(($(date +%s) - T_ALL)) s; binary: $OUT/gridwatch"
