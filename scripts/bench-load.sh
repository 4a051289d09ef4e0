#!/usr/bin/env bash
# Load benchmark (not a test): 32 associations at once from 8 sender processes (pynetdicom, 4
# modalities each, every one sending a study per association, again and again) for 10 minutes,
# while the demo model triages the chest studies and their reports go to a PACS (DCMTK
# storescp). Reports: instances stored per second, failed stores (must be 0), studies triaged,
# reports delivered, and the node's resident memory sampled every 10 s (it should stay flat).
#   scripts/bench-load.sh [SECONDS]          (default 600)
#   PROCESSES=8 THREADS=4 scripts/bench-load.sh
# All senders are on loopback, so the per-host limit is raised for the run.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_TOTAL=${1:-600}
PROCESSES=${PROCESSES:-8}; THREADS=${THREADS:-4}
CONCURRENT=$((PROCESSES * THREADS))
export TCP_NODELAY=1
scripts/setup-test-env.sh >/dev/null
export LIBTORCH="$(.venv/bin/python -c 'import os, torch; print(os.path.dirname(torch.__file__))')"
cargo build --release --locked -q
BIN=$PWD/target/release/triage-node
WORK=${BENCH_DIR:-$PWD/.bench}/load
rm -rf "$WORK"; mkdir -p "$WORK/models" "$WORK/pacs"
cp -r models/demo-nodule "$WORK/models/"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PACS_PORT=$(free_port)
storescp -od "$WORK/pacs" "$PACS_PORT" 2>/dev/null &
PACS=$!
cat > "$WORK/node.toml" <<TOML
[dicom]
bind = "127.0.0.1"
port = 0
require_registered_calling_ae = false
max_associations = $((CONCURRENT + 8))
max_associations_per_host = $((CONCURRENT + 8))
[storage]
data_dir = "$WORK/data"
min_free_disk = "2GiB"
[ingest]
study_quiet_period = "2s"
[deid]
demo_keys = true
[inference]
models_dir = "$WORK/models"
device = "cpu"
[results]
destinations = ["PACS"]
[http]
enabled = false
[log]
format = "text"
level = "warn"
TOML
"$BIN" --config "$WORK/node.toml" ae add PACS --role pacs --host 127.0.0.1 --port "$PACS_PORT" >/dev/null
# The node logs at warn for the run; the listening line is info, so ask for it alone.
RUST_LOG= TRIAGE__LOG__LEVEL="${LOAD_LOG_LEVEL:-warn,triage_node::node=info}" "$BIN" --config "$WORK/node.toml" serve 2> "$WORK/node.log" &
NODE=$!
trap 'kill $NODE $PACS 2>/dev/null || true' EXIT
for _ in $(seq 300); do grep -q 'listening port=' "$WORK/node.log" && break; sleep 0.1; done
PORT=$(sed -n 's/.*listening port=\([0-9]*\).*/\1/p' "$WORK/node.log" | head -1)

rss_mb() { awk '/VmRSS/ { printf "%.0f", $2 / 1024 }' /proc/$NODE/status; }
echo "load: $CONCURRENT associations ($PROCESSES processes x $THREADS) for ${SECONDS_TOTAL}s; node RSS at start $(rss_mb) MB"
START=$(date +%s)
.venv/bin/python scripts/load_senders.py --port "$PORT" --processes "$PROCESSES" --threads "$THREADS" --seconds "$SECONDS_TOTAL" --cases .testdata/demo-cases > "$WORK/senders.jsonl" &
SENDERS=$!
SAMPLES=()
while kill -0 $SENDERS 2>/dev/null; do
  sleep 10
  kill -0 $SENDERS 2>/dev/null || break
  SAMPLES+=("$(( $(date +%s) - START ))s:$(rss_mb)")
done
wait $SENDERS
SENT_S=$(( $(date +%s) - START ))
# Let triage and delivery finish what was received (bounded).
for _ in $(seq 120); do
  "$BIN" --config "$WORK/node.toml" outbox list 2>/dev/null | grep -qE 'pending|sending' || break
  sleep 1
done
read -r OK FAILED ASSOC CHEST CT WHY < <(.venv/bin/python - "$WORK/senders.jsonl" <<'PY'
import json, sys
t = {"ok": 0, "failed": 0, "associations": 0, "chest": 0, "ct": 0}
why = {}
for line in open(sys.argv[1]):
    for k, v in json.loads(line).items():
        if k == "why":
            for r, n in v.items():
                why[r] = why.get(r, 0) + n
        else:
            t[k] += v
print(t["ok"], t["failed"], t["associations"], t["chest"], t["ct"], json.dumps(why).replace(" ", ""))
PY
)
STATUS=$("$BIN" --config "$WORK/node.toml" status)
REPORTS=$(ls "$WORK/pacs" | grep -c '^SR' || true)
echo "instances acknowledged: $OK in ${SENT_S}s = $(python3 -c "print(round($OK / $SENT_S, 1))") per second, over $ASSOC associations ($CHEST chest studies, $CT CT series)"
echo "failed stores: $FAILED $WHY"
echo "$STATUS" | grep -E '^instances:|^studies|^jobs' | sed 's/^/node: /'
echo "reports (SR) received by the PACS: $REPORTS"
echo "node RSS (MB) every 10 s: ${SAMPLES[*]}"
echo "node RSS at the end: $(rss_mb) MB"
