#!/usr/bin/env bash
# Query/Retrieve benchmark (not a test): STUDIES result studies (default 10000) held by
# triage-node and by Orthanc, the same objects in both; C-FIND at STUDY level by Study Instance
# UID, Accession Number, Patient ID, a Patient Name wild card and a 7-day Study Date range, and
# C-MOVE of one study to a DCMTK storescp, the same requests to both, interleaved, ROUNDS times
# (median reported); the node's memory for its index (resident set with the index minus without)
# and how long it takes to build at start-up.
#   scripts/bench-query.sh [STUDIES]        (env: ROUNDS=30)
# The studies are synthetic (BENCH^PATIENTnnnnn), made from one real result object the node
# produces first (the demo model on a demo case), sealed in the re-identification map like real
# ones: the index is rebuilt from the sealed map exactly as in production.
set -euo pipefail
cd "$(dirname "$0")/.."
STUDIES=${1:-10000}
ROUNDS=${ROUNDS:-30}
export TCP_NODELAY=1
unset RUST_BACKTRACE RUST_LIB_BACKTRACE

scripts/setup-test-env.sh >/dev/null
export LIBTORCH="$(.venv/bin/python -c 'import os, torch; print(os.path.dirname(torch.__file__))')"
cargo build --release --locked -q
BIN=$PWD/target/release/triage-node
PY=$PWD/.venv/bin/python
WORK=${BENCH_DIR:-$PWD/.bench}/query
rm -rf "$WORK"; mkdir -p "$WORK"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 200); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done; echo "nothing listens on $1"; exit 1; }
rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }

PACS_PORT=$(free_port); DEST_PORT=$(free_port); ORTHANC_PORT=$(free_port); ORTHANC_HTTP=$(free_port); BENCH_PORT=$(free_port)
mkdir -p "$WORK/pacs" "$WORK/dest"
storescp +uf -od "$WORK/pacs" "$PACS_PORT" >/dev/null 2>&1 & PIDS+=($!)
storescp --ignore -od "$WORK/dest" "$DEST_PORT" >/dev/null 2>&1 & PIDS+=($!)
wait_port "$PACS_PORT"; wait_port "$DEST_PORT"

cat > "$WORK/node.toml" <<TOML
[dicom]
bind = "127.0.0.1"
port = 0
[storage]
data_dir = "$WORK/data"
min_free_disk = "0"
[ingest]
study_quiet_period = "1s"
[deid]
demo_keys = true
[inference]
models_dir = "$PWD/models"
device = "cpu"
[results]
destinations = ["PACS"]
[delivery]
poll_interval = "200ms"
[log]
level = "info"
TOML
node() { "$BIN" --config "$WORK/node.toml" "$@"; }
node ae add STORESCU >/dev/null
node ae add PACS --role pacs --host 127.0.0.1 --port "$PACS_PORT" >/dev/null
node ae add DEST --role pacs --host 127.0.0.1 --port "$DEST_PORT" >/dev/null
node ae add BENCHSCU --role pacs --host 127.0.0.1 --port "$BENCH_PORT" >/dev/null
node ae add ORTHANC --role pacs --host 127.0.0.1 --port "$ORTHANC_PORT" >/dev/null

start_node() {  # $1 = log file, env passed through; sets NODE_PID NODE_PORT
  "$BIN" --config "$WORK/node.toml" serve 2> "$1" & NODE_PID=$!
  NODE_PORT=""
  for _ in $(seq 600); do
    NODE_PORT=$(grep -o 'listening port=[0-9]*' "$1" | cut -d= -f2 || true)
    [ -n "$NODE_PORT" ] && break; sleep 0.1
  done
  [ -n "$NODE_PORT" ] || { cat "$1"; exit 1; }
}
stop_node() { kill -TERM "$NODE_PID"; wait "$NODE_PID" 2>/dev/null || true; }

echo "bench: one real result object (demo model, a negative demo case)"
start_node "$WORK/first.log"
storescu -aet STORESCU -aec TRIAGE 127.0.0.1 "$NODE_PORT" .testdata/demo-cases/case001.dcm
for _ in $(seq 600); do grep -q "AI report delivered" "$WORK/first.log" && break; sleep 0.2; done
grep -q "AI report delivered" "$WORK/first.log" || { echo "no report"; tail -20 "$WORK/first.log"; exit 1; }
stop_node
TEMPLATE=$(ls "$WORK"/data/outbox/results/*.dcm | head -1)

echo "bench: seeding $STUDIES result studies"
node bench-seed-results --template "$TEMPLATE" --studies "$STUDIES" --destination PACS

echo "bench: the node's memory without and with the index"
TRIAGE__QUERY__ENABLED=false start_node "$WORK/noindex.log"; sleep 2; RSS_OFF=$(rss_kb "$NODE_PID"); stop_node
start_node "$WORK/node.log"; sleep 2; RSS_ON=$(rss_kb "$NODE_PID")
PIDS+=("$NODE_PID")
BUILD_MS=$(grep -o 'query index built.*' "$WORK/node.log" | grep -o 'ms=[0-9]*' | cut -d= -f2)
OBJECTS=$(grep -o 'query index built.*' "$WORK/node.log" | grep -o 'objects=[0-9]*' | cut -d= -f2)

echo "bench: Orthanc, loaded with the same objects by C-MOVE from the node"
cat > "$WORK/orthanc.json" <<JSON
{ "Name": "bench", "StorageDirectory": "$WORK/orthanc", "IndexDirectory": "$WORK/orthanc",
  "DicomAet": "ORTHANC", "DicomPort": $ORTHANC_PORT, "HttpPort": $ORTHANC_HTTP, "RemoteAccessAllowed": false,
  "AuthenticationEnabled": false, "DicomCheckCalledAet": true, "DicomAlwaysAllowStore": true, "Plugins": [],
  "DicomModalities": { "triage": ["TRIAGE", "127.0.0.1", $NODE_PORT], "benchscu": ["BENCHSCU", "127.0.0.1", $BENCH_PORT],
                       "dest": ["DEST", "127.0.0.1", $DEST_PORT] } }
JSON
Orthanc "$WORK/orthanc.json" > "$WORK/orthanc.log" 2>&1 & PIDS+=($!)
wait_port "$ORTHANC_PORT"
$PY scripts/bench_query.py studies "$NODE_PORT" TRIAGE > "$WORK/uids.txt"
t0=$(date +%s.%N)
LOADED=$($PY scripts/bench_query.py load "$NODE_PORT" TRIAGE ORTHANC "$WORK/uids.txt")
t1=$(date +%s.%N)
echo "bench: $LOADED objects moved to Orthanc in $(echo "$t1 - $t0" | bc) s"

echo "bench: $ROUNDS rounds of each query, node and Orthanc interleaved"
$PY scripts/bench_query.py time "$ROUNDS" "$NODE_PORT" "$ORTHANC_PORT" DEST "$WORK/uids.txt" > "$WORK/results.jsonl"
RSS_END=$(rss_kb "$NODE_PID")

echo
echo "Query/Retrieve over $OBJECTS result objects ($STUDIES studies), median of $ROUNDS, milliseconds per request"
echo "(pynetdicom client on an open association; C-MOVE to a DCMTK storescp):"
echo
echo "| request | triage-node | Orthanc $(Orthanc --version 2>/dev/null | head -1 | awk '{print $2}') | Orthanc / node |"
echo "|---|---|---|---|"
$PY -c '
import json, sys
for l in open(sys.argv[1]):
    r = json.loads(l)
    print("| %s | %.2f | %.2f | %.2f |" % (r["query"], r["node_ms"], r["orthanc_ms"], r["orthanc_over_node"]))
' "$WORK/results.jsonl"
echo
echo "index: built in ${BUILD_MS} ms at start-up; resident set $((RSS_OFF / 1024)) MiB without it, $((RSS_ON / 1024)) MiB with it ($(( (RSS_ON - RSS_OFF) / 1024 )) MiB, $(( (RSS_ON - RSS_OFF) * 1024 / (OBJECTS > 0 ? OBJECTS : 1) )) bytes per object); $((RSS_END / 1024)) MiB after the run"
