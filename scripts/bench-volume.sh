#!/usr/bin/env bash
# Volume model benchmark (not a test): the node's peak memory and time for a volume model
# (`input.kind = "volume"`) on a synthetic CT series of N slices of 512 x 512 for each N of
# SLICES (default "100 300"; tests/peers/make_ct_series.py), each sent with storescu to a fresh
# `triage-node serve`, the study's result awaited. The model is the volume test's tiny TorchScript model
# (tests/peers/make_tiny_volume_model.py) at input.size = SIZE (default "[128, 256, 256]"), so
# the figures are the node's own: headers, slice-by-slice decode and trilinear resampling into
# one buffer, one forward pass. Reports the node's peak RSS (VmHWM) before the study and after.
# The bound: the D x H x W f32 buffer (x2 while windowed) plus one decoded slice at a time,
# never the series at source size (300 x 512 x 512 as f32 would be 300 MiB).
#   scripts/bench-volume.sh [SLICES]      SIZE="[64, 128, 128]" scripts/bench-volume.sh
#   SETUP=0 scripts/bench-volume.sh       skip scripts/setup-test-env.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SLICES=${1:-100 300}
SIZE=${SIZE:-[128, 256, 256]}
export TCP_NODELAY=1
unset RUST_BACKTRACE RUST_LIB_BACKTRACE
[ "${SETUP:-1}" = 0 ] || scripts/setup-test-env.sh >/dev/null
export LIBTORCH="$(.venv/bin/python -c 'import os, torch; print(os.path.dirname(torch.__file__))')"
if [ -n "${NODE_BIN:-}" ]; then BIN=$NODE_BIN; else cargo build --release --locked -q; BIN=$PWD/target/release/triage-node; fi
WORK=${BENCH_DIR:-$PWD/.bench}/volume
rm -rf "$WORK" && mkdir -p "$WORK/models/bench-volume"
echo "| series | model input | node peak RSS started | after the study | volume buffer D*H*W f32 | send s | ready -> triaged s | preprocess ms | forward ms | state |"
echo "|---|---|---|---|---|---|---|---|---|---|"
.venv/bin/python tests/peers/make_tiny_volume_model.py volume "$WORK/models/bench-volume/model.pt"
cat > "$WORK/models/bench-volume/model.toml" <<TOML
name = "bench-volume"
version = "0.1"
intended_use = "Benchmark fixture."
limits = "Not a medical device."
[routing]
modalities = ["CT"]
[input]
kind = "volume"
size = $SIZE
channels = 1
window = { CT = { center = 40, width = 80 } }
[outputs]
labels = ["top", "bottom"]
positive = [0.5, 0.5]
urgent = [0.9, 0.9]
probabilities = 0
cam = 1
[aggregate]
method = "max"
TOML
run() {
.venv/bin/python tests/peers/make_ct_series.py "$WORK/series-$SLICE" "$SLICE" 1.0 20 --rows 512 >/dev/null
DIR=$WORK/node-$SLICE; mkdir -p "$DIR"
cat > "$DIR/node.toml" <<TOML
[dicom]
bind = "127.0.0.1"
port = 0
require_registered_calling_ae = false
[storage]
data_dir = "$DIR/data"
min_free_disk = "0"
[ingest]
study_quiet_period = "2s"
[deid]
demo_keys = true
[inference]
models_dir = "$WORK/models"
device = "cpu"
[log]
format = "text"
level = "info,sqlx=warn"
TOML
"$BIN" --config "$DIR/node.toml" serve 2> "$DIR/node.log" &
NODE=$!
trap 'kill $NODE 2>/dev/null || true' EXIT
for _ in $(seq 600); do grep -q 'listening port=' "$DIR/node.log" && break; sleep 0.1; done
PORT=$(sed -n 's/.*listening port=\([0-9]*\).*/\1/p' "$DIR/node.log" | head -1)
hwm() { awk '/VmHWM/ {print $2}' "/proc/$NODE/status"; }
BEFORE=$(hwm)
START=$(date +%s.%N)
storescu -aec TRIAGE 127.0.0.1 "$PORT" "$WORK"/series-$SLICE/*.dcm >/dev/null 2>&1
SENT=$(date +%s.%N)
for _ in $(seq 1200); do grep -q 'study triaged' "$DIR/node.log" && break; sleep 0.1; done
grep -q 'study triaged' "$DIR/node.log" || { echo "no result; log: $DIR/node.log" >&2; exit 1; }
DONE=$(date +%s.%N)
AFTER=$(hwm)
LINE=$(grep 'study triaged' "$DIR/node.log" | tail -1 | sed 's/\x1b\[[0-9;]*m//g')
kill $NODE; wait $NODE 2>/dev/null || true
python3 - "$SLICE" "$SIZE" "$BEFORE" "$AFTER" "$START" "$SENT" "$DONE" "$LINE" <<'PY'
import re, sys
slices, size, before, after, start, sent, done, line = sys.argv[1:]
d, h, w = [int(v) for v in re.findall(r"\d+", size)]
f = lambda k: (re.search(k + r"=([\w.-]+)", line) or [None, "?"])[1]
bound = d * h * w * 4 / 2**20
print(f"| {slices} x 512 x 512 | 1 x {d} x {h} x {w} | {int(before) / 1024:.0f} MiB | {int(after) / 1024:.0f} MiB | {bound:.0f} MiB | "
      f"{float(sent) - float(start):.1f} | {float(done) - float(sent):.1f} | {f('preprocess_ms')} | {f('forward_ms')} | {f('state')} |")
PY
}
for SLICE in $SLICES; do run; done
