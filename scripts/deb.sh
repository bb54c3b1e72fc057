#!/usr/bin/env bash
# Builds the Debian package: target/debian/gridwatch_<version>_<arch>.deb, with dpkg-deb
# and the control file written here (no debhelper, no cargo-deb: nothing to install).
#
#   scripts/deb.sh                   amd64 (builds target/release/gridwatch if needed)
#   scripts/deb.sh --target aarch64  arm64 (after scripts/cross-aarch64.sh)
#
# Contents: /usr/bin/gridwatch, /usr/lib/gridwatch/libonnxruntime.so (the pinned ONNX
# Runtime), /usr/share/gridwatch/models (model, labels, NOTICE), the units in
# /lib/systemd/system (gridwatch, and gridwatch-desk for the duty desk's console), the
# example configurations as conffiles /etc/gridwatch/gridwatch.toml and desk.toml,
# a sysusers.d entry for the service user, and the maintainer scripts in packaging/deb/.
# Environment: GRIDWATCH_BIN (a built binary to package, skips cargo),
# GRIDWATCH_ORT_LIB (libonnxruntime.so.<version> to ship), GRIDWATCH_DEB_VERSION
# (default: Cargo.toml's version), GRIDWATCH_DEB_OUT (default: target/debian),
# GRIDWATCH_DEB_COMPRESS (default zstd: 2 s instead of 40 s for xz; every dpkg that can
# run the binary, glibc >= 2.34, reads it).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

say() { printf 'deb: %s\n' "$*"; }
die() { printf 'deb: error: %s\n' "$*" >&2; exit 1; }

ARCH=amd64
case "${1:-}" in
  "") ;;
  --target)
    case "${2:-}" in
      aarch64 | arm64 | aarch64-unknown-linux-gnu) ARCH=arm64 ;;
      x86_64 | amd64 | x86_64-unknown-linux-gnu) ARCH=amd64 ;;
      *) die "unknown target '${2:-}'; use aarch64 or x86_64" ;;
    esac ;;
  *) die "usage: scripts/deb.sh [--target aarch64]" ;;
esac

# Pins (one place: scripts/setup.sh).
ORT_VERSION=$(sed -n 's/^ORT_VERSION=//p' scripts/setup.sh)
pin_arch=$([ "$ARCH" = arm64 ] && echo aarch64 || echo x86_64)
ORT_SHA=$(sed -n "s/^ *\[$pin_arch\]=\([0-9a-f]\{64\}\)\$/\1/p" scripts/setup.sh)
[ -n "$ORT_VERSION" ] && [ -n "$ORT_SHA" ] || die "cannot read the pinned ONNX Runtime from scripts/setup.sh"

VERSION=${GRIDWATCH_DEB_VERSION:-$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)}
[ -n "$VERSION" ] || die "cannot read the version from Cargo.toml"

if [ "$ARCH" = arm64 ]; then
  BIN=${GRIDWATCH_BIN:-target/aarch64/aarch64-unknown-linux-gnu/release/gridwatch}
  ORT_LIB=${GRIDWATCH_ORT_LIB:-target/onnxruntime/aarch64/libonnxruntime.so.$ORT_VERSION}
  STRIP=aarch64-linux-gnu-strip
  [ -x "$BIN" ] || die "$BIN not found: run scripts/cross-aarch64.sh first"
else
  BIN=${GRIDWATCH_BIN:-}
  if [ -z "$BIN" ]; then
    cargo build --release -j"${GRIDWATCH_JOBS:-2}" --bin gridwatch
    BIN=target/release/gridwatch
  fi
  ORT_LIB=${GRIDWATCH_ORT_LIB:-/usr/local/lib/gridwatch/libonnxruntime.so.$ORT_VERSION}
  STRIP=strip
fi
[ -x "$BIN" ] || die "$BIN is not an executable"
[ -f "$ORT_LIB" ] || die "$ORT_LIB not found (scripts/setup.sh installs it; for aarch64, scripts/cross-aarch64.sh)"
got=$(sha256sum "$ORT_LIB" | cut -d' ' -f1)
[ "$got" = "$ORT_SHA" ] || die "$ORT_LIB has sha256 $got, not the pinned $ORT_SHA"
command -v "$STRIP" >/dev/null || die "$STRIP not found (binutils for $ARCH)"

# The glibc the binary needs, read from its symbol versions (readelf reads any arch).
GLIBC=$(readelf -V --wide "$BIN" | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -1)

# Depends: the libraries the binary links (a test checks this list against its NEEDED
# entries) and the GStreamer plugins the decoder uses at run time: appsrc, videorate,
# videoconvert, videoscale, appsink (base), h264parse, h265parse (bad), avdec_h26x
# (libav), and mp4mux (good) for event clips. -ugly's x264enc encodes the clips of
# cameras with privacy masks; without it those cameras' events go without clips.
DEPENDS="libc6 (>= $GLIBC), libgcc-s1, libglib2.0-0, libgstreamer1.0-0 (>= 1.22), \
libgstreamer-plugins-base1.0-0 (>= 1.22), libgstrtspserver-1.0-0 (>= 1.22), libturbojpeg0, \
gstreamer1.0-plugins-base (>= 1.22), gstreamer1.0-plugins-good (>= 1.22), gstreamer1.0-plugins-bad (>= 1.22), \
gstreamer1.0-libav (>= 1.22)"
RECOMMENDS="gstreamer1.0-plugins-ugly"
# Only for notices played out loud ([notices] player = "tts").
SUGGESTS="espeak-ng, alsa-utils"

OUT=${GRIDWATCH_DEB_OUT:-$ROOT/target/debian}
STAGE=$OUT/stage-$ARCH
rm -rf "$STAGE"
mkdir -p "$STAGE/DEBIAN" "$OUT"
inst() { install -D -m "$1" "$2" "$STAGE/$3"; }

inst 0755 "$BIN" usr/bin/gridwatch
# Debug sections off (about 80 MB -> 15 MB); symbol names stay for panics' backtraces.
"$STRIP" --strip-debug "$STAGE/usr/bin/gridwatch"
inst 0644 "$ORT_LIB" "usr/lib/gridwatch/libonnxruntime.so.$ORT_VERSION"
ln -s "libonnxruntime.so.$ORT_VERSION" "$STAGE/usr/lib/gridwatch/libonnxruntime.so"
for f in yolox_nano.onnx coco80.txt NOTICE SHA256SUMS; do
  inst 0644 "models/$f" "usr/share/gridwatch/models/$f"
done
inst 0644 systemd/gridwatch.service lib/systemd/system/gridwatch.service
inst 0644 systemd/gridwatch.toml.example etc/gridwatch/gridwatch.toml
# The duty desk's console (`gridwatch desk`): its unit (not enabled) and configuration.
inst 0644 systemd/gridwatch-desk.service lib/systemd/system/gridwatch-desk.service
inst 0644 systemd/desk.toml.example etc/gridwatch/desk.toml
inst 0644 packaging/deb/gridwatch.sysusers usr/lib/sysusers.d/gridwatch.conf
# The street clip `gridwatch demo` and `bench` stream when given no --clip.
inst 0644 tests/fixtures/video/vtest.h264 usr/share/gridwatch/demo.h264
inst 0644 packaging/deb/copyright usr/share/doc/gridwatch/copyright
inst 0644 docs/install.md usr/share/doc/gridwatch/install.md
inst 0644 docs/desk.md usr/share/doc/gridwatch/desk.md
inst 0644 README.md usr/share/doc/gridwatch/README.md
for s in postinst prerm postrm; do
  inst 0755 "packaging/deb/$s" "DEBIAN/$s"
done
printf '%s\n' /etc/gridwatch/gridwatch.toml /etc/gridwatch/desk.toml >"$STAGE/DEBIAN/conffiles"

cat >"$STAGE/DEBIAN/control" <<EOF
Package: gridwatch
Version: $VERSION
Architecture: $ARCH
Maintainer: gridwatch maintainers <gridwatch@localhost>
Installed-Size: $(du -sk --exclude=DEBIAN "$STAGE" | cut -f1)
Depends: $DEPENDS
Recommends: $RECOMMENDS
Suggests: $SUGGESTS
Section: video
Priority: optional
Description: edge video monitoring: RTSP cameras, on-device detection, MQTT events
 gridwatch runs on a grid point's mini-PC: it pulls the cameras' RTSP streams,
 detects people and vehicles on the device (YOLOX-Nano on ONNX Runtime, CPU), and
 publishes events with JPEG snapshots over MQTT. Events wait on disk while the
 broker is away and arrive in order when it is back.
 .
 Configure /etc/gridwatch/gridwatch.toml, check it with
 'gridwatch check --config /etc/gridwatch/gridwatch.toml', then
 'systemctl start gridwatch'.
EOF

DEB=$OUT/gridwatch_${VERSION}_${ARCH}.deb
dpkg-deb --root-owner-group -Z"${GRIDWATCH_DEB_COMPRESS:-zstd}" --build "$STAGE" "$DEB" >/dev/null
rm -rf "$STAGE"
say "$DEB ($(du -h "$DEB" | cut -f1))"
