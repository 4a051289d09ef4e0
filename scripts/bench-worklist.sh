#!/usr/bin/env bash
# Worklist API benchmark (not a test): STUDIES worklist studies (default 10000, synthetic
# patients BENCH^WORKLISTnnnnn sealed in the re-identification map like real ones) in the node;
# `wrk` with CLIENTS concurrent connections (default 16) for DURATION seconds (default 20) on
#   - GET /api/worklist?limit=50          (first page, reading order, patients named)
#   - GET /api/worklist?limit=50&priority=URGENT,POSITIVE&modality=CR   (a filtered page)
#   - GET /api/worklist?limit=50&cursor=… (page 100, keyset cursor)
# reporting requests/s and the p50/p99 latency; then the same CT set (CT slices, default 300)
# sent by DCMTK storescu with and without that load on the API, ROUNDS times (median), to show
# the load's effect on ingest. Each naming page is one audit entry, as in production.
#   scripts/bench-worklist.sh [STUDIES]      (env: CLIENTS=16 DURATION=20 ROUNDS=3 CT=300;
#                                             NODE_BIN=path runs that build instead of a release one)
set -euo pipefail
cd "$(dirname "$0")/.."
STUDIES=${1:-10000}
CLIENTS=${CLIENTS:-16}; SECONDS_=${DURATION:-20}; ROUNDS=${ROUNDS:-3}; CT=${CT:-300}
export TCP_NODELAY=1
unset RUST_BACKTRACE RUST_LIB_BACKTRACE

scripts/setup-test-env.sh >/dev/null
if ! command -v wrk >/dev/null; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get install -y -qq --no-install-recommends wrk >/dev/null
fi
export LIBTORCH="$(.venv/bin/python -c 'import os, torch; print(os.path.dirname(torch.__file__))')"
if [ -n "${NODE_BIN:-}" ]; then BIN=$(realpath "$NODE_BIN"); else cargo build --release --locked -q; BIN=$PWD/target/release/triage-node; fi
WORK=${BENCH_DIR:-$PWD/.bench}
if [ ! -d "$WORK/ct-$CT" ]; then
  .venv/bin/python scripts/make-bench-corpus.py "$WORK/corpus-wl" --ct "$CT" --dx 0 --no-big
  mv "$WORK/corpus-wl/ct" "$WORK/ct-$CT"; rm -rf "$WORK/corpus-wl"
fi
W=$WORK/worklist
rm -rf "$W"; mkdir -p "$W"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

TOKEN=bench-reader-$(python3 -c 'import secrets; print(secrets.token_hex(16))')
export TRIAGE_HTTP_TOKENS="bench:reader:$TOKEN"
HTTP_PORT=$(free_port)
cat > "$W/node.toml" <<TOML
[dicom]
bind = "127.0.0.1"
port = 0
[storage]
data_dir = "$W/data"
min_free_disk = "0"
[ingest]
study_quiet_period = "60s"
[deid]
demo_keys = true
[inference]
models_dir = "$W/no-models"
device = "cpu"
[http]
port = $HTTP_PORT
[log]
level = "warn,triage_node::node=info"
TOML
"$BIN" --config "$W/node.toml" ae add STORESCU >/dev/null
echo "bench: seeding $STUDIES worklist studies"
"$BIN" --config "$W/node.toml" bench-seed-worklist --studies "$STUDIES"
"$BIN" --config "$W/node.toml" serve 2> "$W/node.log" & NODE=$!; PIDS+=($NODE)
for _ in $(seq 200); do grep -q 'listening port=' "$W/node.log" && break; sleep 0.1; done
DICOM_PORT=$(sed -n 's/.*listening port=\([0-9]*\).*/\1/p' "$W/node.log" | head -1)
API=http://127.0.0.1:$HTTP_PORT
curl -sf -H "Authorization: Bearer $TOKEN" "$API/api/worklist?limit=50" > "$W/page1.json"
# Page 100's cursor, walked to once.
CURSOR=$(.venv/bin/python - "$API" "$TOKEN" <<'PY'
import json, sys, urllib.request
api, token = sys.argv[1], sys.argv[2]
cursor = None
for _ in range(99):
    url = api + "/api/worklist?limit=50" + (("&cursor=" + cursor) if cursor else "")
    rq = urllib.request.Request(url, headers={"Authorization": "Bearer " + token})
    cursor = json.load(urllib.request.urlopen(rq))["next_cursor"]
print(cursor)
PY
)

bench_api() { # name url -> "rps p50 p99"
  wrk -t2 -c"$CLIENTS" -d"${SECONDS_}s" --latency -H "Authorization: Bearer $TOKEN" "$2" > "$W/wrk-$1.txt"
  local rps p50 p99
  rps=$(awk '/Requests\/sec/ {print $2}' "$W/wrk-$1.txt")
  p50=$(awk '$1=="50%" {print $2}' "$W/wrk-$1.txt"); p99=$(awk '$1=="99%" {print $2}' "$W/wrk-$1.txt")
  local errors; errors=$(grep -cE 'Non-2xx|Socket errors' "$W/wrk-$1.txt" || true)
  echo "$rps $p50 $p99 $errors"
}
declare -A R
R[first]=$(bench_api first "$API/api/worklist?limit=50")
R[filtered]=$(bench_api filtered "$API/api/worklist?limit=50&priority=URGENT,POSITIVE&modality=CR")
R[page100]=$(bench_api page100 "$API/api/worklist?limit=50&cursor=$CURSOR")

send_ct() { # seconds for the CT set (a fresh copy of its UIDs each time: new instances)
  local t0 t1
  t0=$(date +%s.%N)
  storescu -aet STORESCU -aec TRIAGE +sd -q 127.0.0.1 "$DICOM_PORT" "$1" >/dev/null 2>&1 || { echo "storescu failed" >&2; exit 1; }
  t1=$(date +%s.%N)
  echo "$t1 - $t0" | bc
}
reuid() { # a copy of the CT set under new UIDs
  rm -rf "$W/ct"; .venv/bin/python - "$WORK/ct-$CT" "$W/ct" <<'PY'
import os, sys, pydicom
from pydicom.uid import generate_uid
src, dst = sys.argv[1], sys.argv[2]
os.makedirs(dst)
study, series = generate_uid(), generate_uid()
for n in sorted(os.listdir(src)):
    ds = pydicom.dcmread(os.path.join(src, n))
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
    ds.SOPInstanceUID = generate_uid(); ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.save_as(os.path.join(dst, n))
PY
}
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
QUIET=""; LOADED=""
for r in $(seq "$ROUNDS"); do
  reuid; QUIET+="$(send_ct "$W/ct") "
  reuid
  wrk -t2 -c"$CLIENTS" -d"${SECONDS_}s" -H "Authorization: Bearer $TOKEN" "$API/api/worklist?limit=50" > "$W/wrk-load-$r.txt" & WRK=$!
  sleep 1
  LOADED+="$(send_ct "$W/ct") "
  wait $WRK || true
done
q=$(echo "$QUIET" | median); l=$(echo "$LOADED" | median)
RSS=$(awk '/VmRSS/ {print $2}' "/proc/$NODE/status")
echo
echo "## /api/worklist with $STUDIES studies, $CLIENTS concurrent clients, ${SECONDS_} s each (wrk, 2 cores shared with the node)"
echo "| request | req/s | p50 | p99 | error lines |"
echo "|---|---|---|---|---|"
for k in first filtered page100; do set -- ${R[$k]}; echo "| $k page (50 rows, patients named) | $1 | $2 | $3 | $4 |"; done
echo
echo "## ingest of $CT CT slices (one storescu association, fsync on), median of $ROUNDS"
echo "| API load | seconds | slices/s |"
echo "|---|---|---|"
echo "| none | $q | $(echo "$CT / $q" | bc -l | xargs printf '%.0f') |"
echo "| $CLIENTS clients on /api/worklist | $l | $(echo "$CT / $l" | bc -l | xargs printf '%.0f') |"
echo
echo "node RSS after the runs: $((RSS / 1024)) MiB"
