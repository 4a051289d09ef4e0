#!/usr/bin/env bash
# End-to-end latency benchmark (not a test): a study pushed by DCMTK storescu to the node,
# triaged, its SR (and heatmaps) delivered by C-STORE to a local PACS (DCMTK storescp). The
# figure is the node's own `latency_ms` (logged with "AI report delivered"): from the study's
# last instance received to the PACS's Success for the report, with the quiet period left out
# (a setting, not work). Also the share of it spent before the result was saved ("study triaged"
# after_quiet_period_ms). Release build, CPU, demo model.
#   scripts/bench-e2e.sh [ROUNDS]     (default 5 rounds of a chest CR, 3 of a 300-slice CT)
# The CT is the 300-slice corpus (a real head CT slice, labelled HEAD, ORIGINAL\PRIMARY\AXIAL,
# 1 mm) triaged by the shipped CT demonstration model (volume aggregation). Each study is sent
# twice: by storescu (completed by the quiet period, which the figure leaves out) and by a
# modality that sends MPPS (pynetdicom: N-CREATE, the C-STOREs, N-SET COMPLETED; completed by
# the step, no quiet period), whose rows also give the time from the N-SET to the SR's Success.
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
# Models: the two shipped demonstration models.
rm -rf "$WORK/models" && mkdir -p "$WORK/models"
cp -r models/demo-nodule models/demo-ct-hyperdense "$WORK/models/"

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
push() {  # how files...: send as one new study each time (new Study/Series/SOP UIDs), wait for its report
  local how=$1; shift
  local before; before=$(delivered)
  local tmp="$WORK/push"; rm -rf "$tmp"; mkdir -p "$tmp"
  cp "$@" "$tmp/"
  local study series
  study=2.25.$(python3 -c 'import uuid; print(uuid.uuid4().int)'); series=2.25.$(python3 -c 'import uuid; print(uuid.uuid4().int)')
  dcmodify -nb -q -m "(0020,000d)=$study" -m "(0020,000e)=$series" -gin "$tmp"/*
  if [ "$how" = mpps ]; then
    .venv/bin/python tests/peers/pynetdicom_peer.py --port "$PORT" --aet BENCH_MPPS mpps --store "$tmp"/* >/dev/null
  else
    storescu -aec TRIAGE 127.0.0.1 "$PORT" "$tmp"/* >/dev/null 2>&1
  fi
  for _ in $(seq 1200); do [ "$(delivered)" -gt "$before" ] && return 0; sleep 0.1; done
  echo "bench: no report delivered; log tail:" >&2; tail -20 "$DIR/node.log" >&2; exit 1
}
last_latency() { grep 'AI report delivered' "$DIR/node.log" | tail -1 | sed -n 's/.*latency_ms=\([0-9-]*\).*/\1/p'; }
# From the last N-SET COMPLETED the node recorded to the last SR delivered (log timestamps).
last_from_nset() {
  python3 - "$DIR/node.log" <<'PY'
import re, sys
from datetime import datetime
def t(line): return datetime.fromisoformat(re.match(r"\S+", line).group(0).replace("Z", "+00:00"))
lines = open(sys.argv[1]).read().splitlines()
nset = [l for l in lines if "procedure step updated" in l and "COMPLETED" in l][-1]
sr = [l for l in lines if "AI report delivered" in l][-1]
print(round((t(sr) - t(nset)).total_seconds() * 1000))
PY
}
last_triaged() { grep 'study triaged' "$DIR/node.log" | tail -1 | sed -n 's/.*after_quiet_period_ms=\([0-9-]*\).*/\1/p'; }
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

run() {  # label how rounds files...
  local label=$1 how=$2 rounds=$3; shift 3
  local lat=() tri=() nset=()
  for _ in $(seq "$rounds"); do
    push "$how" "$@"
    lat+=("$(last_latency)"); tri+=("$(last_triaged)")
    if [ "$how" = mpps ]; then nset+=("$(last_from_nset)"); else nset+=(-); fi
  done
  local from_nset=-
  [ "$how" = mpps ] && from_nset="$(printf '%s\n' "${nset[@]}" | median) ms"
  printf '| %s | %s | %s | %s | %s ms | %s | %s ms |\n' "$label" "$how" "$#" "$rounds" \
    "$(printf '%s\n' "${lat[@]}" | median)" "$from_nset" "$(printf '%s\n' "${tri[@]}" | median)"
  echo "   (all rounds, latency ms: ${lat[*]})" >&2
}

# The CT corpus as a head CT scanner labels it, for the CT model's routing and series rules.
if [ ! -f "$WORK/corpus/ct/.head" ]; then
  dcmodify -nb -q -i "(0018,0015)=HEAD" -i "(0008,0008)=ORIGINAL\\PRIMARY\\AXIAL" -i "(0018,0050)=1.0" "$WORK"/corpus/ct/*.dcm
  touch "$WORK/corpus/ct/.head"
fi
echo "bench: $(nproc) cores, release build, CPU, quiet period 2 s (excluded), PACS = DCMTK storescp"
printf '\n| study | sent by | instances | rounds | median latency from the last instance to the PACS'"'"'s Success for the SR | from the N-SET COMPLETED | of which until the result was saved |\n|---|---|---|---|---|---|---|\n'
run "chest CR (demo-nodule, positive: SR + heatmap SC)" storescu "$ROUNDS" .testdata/demo-cases/case000.dcm
run "chest CR (demo-nodule, positive: SR + heatmap SC)" mpps "$ROUNDS" .testdata/demo-cases/case000.dcm
run "head CT 512x512 (demo-ct-hyperdense)" storescu "$CT_ROUNDS" "$WORK"/corpus/ct/*.dcm
run "head CT 512x512 (demo-ct-hyperdense)" mpps "$CT_ROUNDS" "$WORK"/corpus/ct/*.dcm
