#!/usr/bin/env bash
# The bundled Debian package (not part of the test command: it carries about 3 GB of libtorch):
# builds `scripts/package-deb.sh --bundle-libtorch` from a release build, installs it, and runs
# the installed node as its packaged user with the build tree's venv hidden (an empty folder
# bind-mounted over it in a private mount namespace), so libtorch and ONNX Runtime can only come
# from /usr/lib/triage-node/lib: `doctor` loads a TorchScript and an ONNX model package, then
# `serve` answers a C-ECHO and triages a stored chest CR with the ONNX detector. Purges the
# package at the end (keys and data removed too). Needs root, dpkg, unshare and DCMTK.
#   sudo scripts/check-bundled-package.sh        (BIN=path/to/triage-node: another build)
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "check-bundled-package.sh: run as root (dpkg installs the package)" >&2; exit 1; }
export LIBTORCH="$(.venv/bin/python -c 'import os, torch; print(os.path.dirname(torch.__file__))')"
if [ -z "${BIN:-}" ]; then cargo build --release --locked -q; BIN=$PWD/target/release/triage-node; fi
OUT=$(mktemp -d)
EMPTY=$(mktemp -d)
cleanup() {
  pkill -u triage-node -f /usr/lib/triage-node/triage-node 2>/dev/null || true
  dpkg --purge triage-node >/dev/null 2>&1 || true
  rm -rf /etc/triage-node /var/lib/triage-node "$OUT" "$EMPTY"
}
trap cleanup EXIT
dpkg -s triage-node >/dev/null 2>&1 && { echo "check-bundled-package.sh: triage-node is installed already; remove it first" >&2; exit 1; }

start=$(date +%s)
scripts/package-deb.sh --binary "$BIN" --out "$OUT" --bundle-libtorch
DEB=$(ls "$OUT"/*.deb)
echo "== built $(basename "$DEB"): $(du -h "$DEB" | cut -f1) in $(( $(date +%s) - start )) s; $(dpkg-deb -c "$DEB" | grep -c '/usr/lib/triage-node/lib/') libraries carried"
start=$(date +%s)
dpkg -i "$DEB" >/dev/null
echo "== installed in $(( $(date +%s) - start )) s ($(du -sh /usr/lib/triage-node | cut -f1) under /usr/lib/triage-node)"

# A TorchScript and an ONNX package where the packaged configuration looks for models.
MODELS=$(sed -n 's/^models_dir *= *"\(.*\)"/\1/p' /etc/triage-node/triage-node.toml | head -1)
MODELS=${MODELS:-/var/lib/triage-node/models}
install -d -o triage-node -g triage-node "$MODELS"
cp -r models/demo-nodule models/more/demo-nodule-detector "$MODELS/"
chown -R triage-node:triage-node "$MODELS"

# The venv hidden: whatever the installed node loads comes from the package. Text logs, and
# the HTTP port left to the system (8080 may be taken here).
export TRIAGE__LOG__FORMAT=text TRIAGE__HTTP__PORT=0
hidden() { unshare -m sh -c "mount --bind '$EMPTY' '$PWD/.venv' && exec setpriv --reuid=triage-node --regid=triage-node --init-groups --inh-caps=+net_bind_service --ambient-caps=+net_bind_service /usr/bin/triage-node --config /etc/triage-node/triage-node.toml $*"; }
echo "== doctor, as the packaged user, the venv hidden"
hidden doctor || true
echo "== serve, as the packaged user, the venv hidden: a C-ECHO and a chest CR triaged by the ONNX detector"
hidden "ae add SCANNER --host 127.0.0.1" >/dev/null
hidden serve 2> "$OUT/node.log" &
PORT=$(sed -n 's/^port *= *\([0-9]*\)/\1/p' /etc/triage-node/triage-node.toml | head -1)
for _ in $(seq 300); do grep -q 'listening port=' "$OUT/node.log" && break; sleep 0.2; done
grep -E 'model package loaded|onnxruntime|inference device' "$OUT/node.log" | sed 's/^/-- /' | head -6
echoscu -aet SCANNER -aec TRIAGE 127.0.0.1 "$PORT" && echo "C-ECHO: success"
storescu -aet SCANNER -aec TRIAGE 127.0.0.1 "$PORT" .testdata/demo-cases/case000.dcm
for _ in $(seq 150); do hidden results 2>/dev/null | grep -q 'triaged' && break; sleep 0.4; done
hidden results | head -8
echo "errors in the node's log: $(grep -c ' ERROR ' "$OUT/node.log" || true)"
