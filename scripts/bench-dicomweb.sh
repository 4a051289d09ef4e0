#!/usr/bin/env bash
# DICOMweb benchmark (not a test): STUDIES result studies (default 10000) held by triage-node and
# by Orthanc with its DICOMweb plugin (Debian orthanc-dicomweb), the same objects in both (seeded
# into the node as scripts/bench-query.sh seeds them, then moved to Orthanc by C-MOVE from the
# node); QIDO-RS study searches by Study Instance UID, Patient ID, a Patient Name wild card and a
# 7-day Study Date range, and WADO-RS retrieve of one study and of its metadata: the same requests
# to both, interleaved, ROUNDS times; median and 10th-90th percentile per row, Orthanc / node.
#   scripts/bench-dicomweb.sh [STUDIES]        (env: ROUNDS=30; BUILD=0 uses the release binary
#                                               as it is, without cargo build; TRIAGE_BIN=another
#                                               binary, e.g. the debug build for a smoke run)
set -euo pipefail
cd "$(dirname "$0")/.."
STUDIES=${1:-10000}
ROUNDS=${ROUNDS:-30}
unset RUST_BACKTRACE RUST_LIB_BACKTRACE

scripts/setup-test-env.sh >/dev/null
export LIBTORCH="$(.venv/bin/python -c 'import os, torch; print(os.path.dirname(torch.__file__))')"
BIN=${TRIAGE_BIN:-$PWD/target/release/triage-node}
[ "${BUILD:-1}" = 0 ] && [ -x "$BIN" ] || cargo build --release --locked -q
PY=$PWD/.venv/bin/python
DICOMWEB=/usr/share/orthanc/plugins/libOrthancDicomWeb.so
[ -e "$DICOMWEB" ] || { echo "bench-dicomweb: $DICOMWEB is missing (scripts/setup-test-env.sh installs orthanc-dicomweb)" >&2; exit 1; }
WORK=${BENCH_DIR:-$PWD/.bench}/dicomweb
rm -rf "$WORK"; mkdir -p "$WORK"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 300); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done; echo "nothing listens on $1"; exit 1; }

PACS_PORT=$(free_port); ORTHANC_PORT=$(free_port); ORTHANC_HTTP=$(free_port); BENCH_PORT=$(free_port)
mkdir -p "$WORK/pacs"
storescp --ignore "$PACS_PORT" >/dev/null 2>&1 & PIDS+=($!)
wait_port "$PACS_PORT"
TOKEN=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
export TRIAGE_HTTP_TOKENS="bench:reader:$TOKEN"

cat > "$WORK/node.toml" <<TOML
[dicom]
bind = "127.0.0.1"
port = 0
[http]
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
node ae add BENCHSCU --role pacs --host 127.0.0.1 --port "$BENCH_PORT" >/dev/null
node ae add ORTHANC --role pacs --host 127.0.0.1 --port "$ORTHANC_PORT" >/dev/null

start_node() {  # $1 = log file; sets NODE_PID NODE_PORT NODE_HTTP
  "$BIN" --config "$WORK/node.toml" serve 2> "$1" & NODE_PID=$!
  NODE_PORT=""; NODE_HTTP=""
  for _ in $(seq 600); do
    NODE_PORT=$(grep -o 'listening port=[0-9]*' "$1" | cut -d= -f2 || true)
    NODE_HTTP=$(grep -o 'http_port=[0-9]*' "$1" | head -1 | cut -d= -f2 || true)
    [ -n "$NODE_PORT" ] && [ -n "$NODE_HTTP" ] && break; sleep 0.1
  done
  [ -n "$NODE_PORT" ] && [ -n "$NODE_HTTP" ] || { cat "$1"; exit 1; }
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
start_node "$WORK/node.log"
INDEXED=$(grep -o 'query index built objects=[0-9]*' "$WORK/node.log" | cut -d= -f2)
echo "bench: the node's index holds $INDEXED objects"
# (Before the archive fix of 2026-12-07 an index built within 30 s of the seeding held 2,000.)
[ "$INDEXED" -gt "$STUDIES" ] || { echo "bench: the index should hold $((STUDIES + 1)) objects" >&2; exit 1; }
PIDS+=("$NODE_PID")

echo "bench: Orthanc with DICOMweb, loaded with the same objects by C-MOVE from the node"
cat > "$WORK/orthanc.json" <<JSON
{ "Name": "bench", "StorageDirectory": "$WORK/orthanc", "IndexDirectory": "$WORK/orthanc",
  "DicomAet": "ORTHANC", "DicomPort": $ORTHANC_PORT, "HttpPort": $ORTHANC_HTTP, "RemoteAccessAllowed": false,
  "AuthenticationEnabled": false, "DicomCheckCalledAet": true, "DicomAlwaysAllowStore": true,
  "Plugins": [ "$DICOMWEB" ], "DicomWeb": { "Enable": true, "Root": "/dicom-web/", "Ssl": false },
  "DicomModalities": { "triage": ["TRIAGE", "127.0.0.1", $NODE_PORT], "benchscu": ["BENCHSCU", "127.0.0.1", $BENCH_PORT] } }
JSON
Orthanc "$WORK/orthanc.json" > "$WORK/orthanc.log" 2>&1 & PIDS+=($!)
wait_port "$ORTHANC_HTTP"
$PY scripts/bench_query.py studies "$NODE_PORT" TRIAGE > "$WORK/uids.txt"
t0=$(date +%s.%N)
LOADED=$($PY scripts/bench_query.py load "$NODE_PORT" TRIAGE ORTHANC "$WORK/uids.txt")
t1=$(date +%s.%N)
echo "bench: $LOADED objects moved to Orthanc in $(echo "$t1 - $t0" | bc) s"

echo "bench: $ROUNDS rounds of each request, node and Orthanc interleaved"
$PY scripts/bench_dicomweb.py time "$ROUNDS" "http://127.0.0.1:$NODE_HTTP/dicomweb" "$TOKEN" \
  "http://127.0.0.1:$ORTHANC_HTTP/dicom-web" "$WORK/uids.txt" > "$WORK/results.jsonl"

ORTHANC_VERSION=$( (Orthanc --version 2>/dev/null || true) | awk 'NR == 1 {print $2}')
PLUGIN_VERSION=$(dpkg-query -W -f '${Version}' orthanc-dicomweb 2>/dev/null || echo "?")
echo
echo "DICOMweb over $LOADED result objects ($(wc -l < "$WORK/uids.txt") studies), median of $ROUNDS (10th-90th percentile), milliseconds"
echo "per request (Python http.client on a kept-alive connection to each; loopback):"
echo
echo "| request | triage-node | Orthanc $ORTHANC_VERSION + DICOMweb $PLUGIN_VERSION | Orthanc / node | same answers |"
echo "|---|---|---|---|---|"
$PY -c '
import json, sys
for l in open(sys.argv[1]):
    r = json.loads(l)
    s = lambda k: "%.2f (%.2f-%.2f)" % (r[k + "_ms"], *r[k + "_p10_p90"])
    print("| %s | %s | %s | %.2f | %s |" % (r["query"], s("node"), s("orthanc"), r["orthanc_over_node"],
          "yes" if r["answers_equal"] else "no: %s" % r["matches_total"]))
' "$WORK/results.jsonl"
