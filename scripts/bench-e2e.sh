#!/usr/bin/env bash
# End-to-end latency benchmark (not a test): a study pushed by DCMTK storescu to the node,
# triaged, its SR (and heatmaps) delivered by C-STORE to a local PACS (DCMTK storescp). The
# figure is the node's own `latency_ms` (logged with "AI report delivered"): from the study's
# last instance received to the PACS's Success for the report, with the quiet period left out
# (a setting, not work). Also the share of it spent before the result was saved ("study triaged"
# after_quiet_period_ms). Release build, CPU, demo model.
#   scripts/bench-e2e.sh [ROUNDS]     (default 5 rounds of a chest CR, 3 of a 300-slice CT)
# The CT uses the demo model's TorchScript under a CT manifest (window 40/400, mean of the top 3
# slices): a stand-in with the demo model's cost per slice; no CT model ships with the node.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-5}; CT_ROUNDS=${CT_ROUNDS:-3}
export TCP_NODELAY=1
unset RUST_BACKTRACE RUST_LIB_BACKTRACE
scripts/setup-test-env.sh >/dev/null
export LIBTORCH="$(.venv/bin/python -c 'import os, torch; print(os.path.dirname(torch.__file__))')"
cargo build --release --locked -q
BIN=$PWD/target/release/triage-node
WORK=${BENCH_DIR:-$PWD/.bench}/e2e
mkdir -p "$WORK"
if [ "$(cat "$WORK/corpus/VERSION" 2>/dev/null)" != "1" ]; then
  rm -rf "$WORK/corpus"
  .venv/bin/python scripts/make-bench-corpus.py "$WORK/corpus" --ct 300 --dx 0 --no-big
  echo 1 > "$WORK/corpus/VERSION"
fi
# Models: the demo model, and the same network under a CT manifest.
rm -rf "$WORK/models" && mkdir -p "$WORK/models"
cp -r models/demo-nodule "$WORK/models/"
mkdir -p "$WORK/models/bench-ct" && cp models/demo-nodule/model.pt "$WORK/models/bench-ct/"
cat > "$WORK/models/bench-ct/model.toml" <<'TOML'
name = "bench-ct"
version = "0"
demonstration = true
intended_use = "Benchmark stand-in only: the demo network run on CT slices."
limits = "Not a CT model; its outputs mean nothing."
[routing]
modalities = ["CT"]
[input]
size = [128, 128]
channels = 1
window = { CT = { center = 40, width = 400 } }
[outputs]
labels = ["nodule"]
positive = [0.95]
urgent = [0.99]
probabilities = 0
cam = 1
[aggregate]
method = "mean_top_k"
k = 3
TOML

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PACS_PORT=$(free_port)
rm -rf "$WORK/pacs" && mkdir -p "$WORK/pacs"
storescp -od "$WORK/pacs" "$PACS_PORT" 2>/dev/null &
PACS=$!
DIR=$WORK/node
rm -rf "$DIR"; mkdir -p "$DIR"
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
[results]
destinations = ["PACS"]
[log]
format = "text"
level = "info,sqlx=warn"
TOML
"$BIN" --config "$DIR/node.toml" ae add PACS --role pacs --host 127.0.0.1 --port "$PACS_PORT" >/dev/null
"$BIN" --config "$DIR/node.toml" serve 2> "$DIR/node.log" &
NODE=$!
trap 'kill $NODE $PACS 2>/dev/null || true' EXIT
for _ in $(seq 300); do grep -q 'listening port=' "$DIR/node.log" && break; sleep 0.1; done
PORT=$(sed -n 's/.*listening port=\([0-9]*\).*/\1/p' "$DIR/node.log" | head -1)

delivered() { grep -c 'AI report delivered' "$DIR/node.log" || true; }
push() {  # files...: send as one new study each time (new Study/Series/SOP UIDs), wait for its report
  local before; before=$(delivered)
  local tmp="$WORK/push"; rm -rf "$tmp"; mkdir -p "$tmp"
  cp "$@" "$tmp/"
  local study series
  study=2.25.$(python3 -c 'import uuid; print(uuid.uuid4().int)'); series=2.25.$(python3 -c 'import uuid; print(uuid.uuid4().int)')
  dcmodify -nb -q -m "(0020,000d)=$study" -m "(0020,000e)=$series" -gin "$tmp"/*
  storescu -aec TRIAGE 127.0.0.1 "$PORT" "$tmp"/* >/dev/null 2>&1
  for _ in $(seq 1200); do [ "$(delivered)" -gt "$before" ] && return 0; sleep 0.1; done
  echo "bench: no report delivered; log tail:" >&2; tail -20 "$DIR/node.log" >&2; exit 1
}
last_latency() { grep 'AI report delivered' "$DIR/node.log" | tail -1 | sed -n 's/.*latency_ms=\([0-9-]*\).*/\1/p'; }
last_triaged() { grep 'study triaged' "$DIR/node.log" | tail -1 | sed -n 's/.*after_quiet_period_ms=\([0-9-]*\).*/\1/p'; }
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

run() {  # label rounds files...
  local label=$1 rounds=$2; shift 2
  local lat=() tri=()
  for _ in $(seq "$rounds"); do
    push "$@"
    lat+=("$(last_latency)"); tri+=("$(last_triaged)")
  done
  printf '| %s | %s | %s | %s ms | %s ms |\n' "$label" "$#" "$rounds" \
    "$(printf '%s\n' "${lat[@]}" | median)" "$(printf '%s\n' "${tri[@]}" | median)"
  echo "   (all rounds, latency ms: ${lat[*]})" >&2
}

echo "bench: $(nproc) cores, release build, CPU, quiet period 2 s (excluded), PACS = DCMTK storescp"
printf '\n| study | instances | rounds | median latency to the PACS'"'"'s Success for the SR | of which until the result was saved |\n|---|---|---|---|---|\n'
run "chest CR (demo model, positive: SR + heatmap SC)" "$ROUNDS" .testdata/demo-cases/case000.dcm
run "CT 512x512 (bench-ct stand-in model)" "$CT_ROUNDS" "$WORK"/corpus/ct/*.dcm
