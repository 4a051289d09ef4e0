#!/usr/bin/env bash
# Builds the Debian package of triage-node with the system's dpkg-deb (no extra tool):
#   scripts/package-deb.sh [--binary PATH] [--out DIR] [--bundle-libtorch]
# --binary: the node's binary (default target/release/triage-node, built with
#   `cargo build --release --locked`).
# --bundle-libtorch: carry libtorch's libraries (the wheel's torch/lib and the nvidia/*/lib
#   folders beside it, about 3 GB for the CUDA 13.0 wheel) and ONNX Runtime's library in
#   /usr/lib/triage-node/lib, so the package runs on a machine without the build's venv. Without
#   it the package is lean and the binary finds libtorch where it was built (its rpath): for a
#   machine that has that same venv (the tests build it so).
# Layout: /usr/bin/triage-node (a wrapper that puts /usr/lib/triage-node/lib on the library path),
# /usr/lib/triage-node/triage-node, /etc/triage-node/triage-node.toml (a conffile),
# /lib/systemd/system/triage-node.service, /usr/share/doc/triage-node/. The maintainer scripts
# (packaging/debian/) make the system user triage-node, /var/lib/triage-node (0750) and the keys
# in /etc/triage-node/keys (0700, files 0600) of a fresh install.
set -euo pipefail
cd "$(dirname "$0")/.."

binary=target/release/triage-node
out=target/debian
bundle=false
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) binary="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --bundle-libtorch) bundle=true; shift ;;
    *) echo "package-deb.sh: unknown argument $1 (see the head of this script)" >&2; exit 2 ;;
  esac
done
[ -x "$binary" ] || { echo "package-deb.sh: no binary at $binary: cargo build --release --locked first, or --binary PATH" >&2; exit 1; }
command -v dpkg-deb >/dev/null || { echo "package-deb.sh: dpkg-deb not found (a Debian system is needed)" >&2; exit 1; }

version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
arch=$(dpkg --print-architecture)
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
src=packaging/debian

install -D -m 0755 "$src/triage-node.sh" "$root/usr/bin/triage-node"
install -D -m 0755 "$binary" "$root/usr/lib/triage-node/triage-node"
install -d -m 0755 "$root/usr/lib/triage-node/lib"
install -D -m 0640 "$src/triage-node.toml" "$root/etc/triage-node/triage-node.toml"
install -D -m 0644 "$src/triage-node.service" "$root/lib/systemd/system/triage-node.service"
install -D -m 0644 README.md "$root/usr/share/doc/triage-node/README.md"
install -D -m 0644 config/default.toml "$root/usr/share/doc/triage-node/default.toml"
install -D -m 0644 models/README.md "$root/usr/share/doc/triage-node/models-README.md"
install -D -m 0644 conformance/conformance-statement.md "$root/usr/share/doc/triage-node/conformance-statement.md"

if $bundle; then
  torch=$(.venv/bin/python -c 'import os, torch; print(os.path.dirname(torch.__file__))')
  cp -a "$torch"/lib/*.so* "$root/usr/lib/triage-node/lib/"
  for d in "$torch"/../nvidia/*/lib; do [ -d "$d" ] && cp -a "$d"/*.so* "$root/usr/lib/triage-node/lib/"; done
  ort=$(ls "$torch"/../onnxruntime/capi/libonnxruntime.so.* 2>/dev/null | head -1 || true)
  [ -n "$ort" ] && cp -a "$ort" "$root/usr/lib/triage-node/lib/libonnxruntime.so"
fi

install -d "$root/DEBIAN"
install -m 0755 "$src/postinst" "$src/prerm" "$src/postrm" "$root/DEBIAN/"
echo /etc/triage-node/triage-node.toml > "$root/DEBIAN/conffiles"
installed_kb=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
cat > "$root/DEBIAN/control" <<CONTROL
Package: triage-node
Version: $version
Architecture: $arch
Maintainer: triage-node developers <triage-node@localhost>
Installed-Size: $installed_kb
Depends: adduser, libc6, libgcc-s1, libstdc++6
Recommends: dcmtk
Section: science
Priority: optional
Description: DICOM network node with inline AI triage
 Receives CT and X-ray studies over DICOM, de-identifies them on arrival,
 runs the site's AI models on each study, returns the results to the PACS
 in the original study and puts urgent studies first on a reading worklist.
 The libtorch it runs on is carried in /usr/lib/triage-node/lib when the
 package was built with --bundle-libtorch, otherwise taken from where the
 binary was built.
CONTROL

mkdir -p "$out"
deb="$out/triage-node_${version}_${arch}.deb"
# Owned by root whatever the builder's uid; gzip at level 1: quick to build, small enough.
dpkg-deb --root-owner-group -Zgzip -z1 --build "$root" "$deb" >/dev/null
echo "$deb"
