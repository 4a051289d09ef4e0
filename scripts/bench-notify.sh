#!/usr/bin/env bash
# Time to notification (not a test): how long from a study's last instance (and from the
# modality's MPPS N-SET COMPLETED) until the on-call webhook has the notification. Release build,
# CPU, the shipped demonstration models; the receiver is tests/peers/webhook_receiver.py (a real
# HTTP server on loopback that records when each POST arrived, on this machine's clock).
#   scripts/bench-notify.sh [ROUNDS]   (default 20 rounds of an urgent chest CR, 5 of a 300-slice CT)
# Each round is a new study (new Study/Series UIDs); each study is sent twice: by storescu
# (completed by the quiet period, 1 s here, which the "from the last instance" figure includes)
# and by a modality that sends MPPS (pynetdicom: N-CREATE, the C-STOREs, N-SET COMPLETED; the
# study is complete at the N-SET, no quiet period). Figures: median, p95 and max over the rounds
# of (1) the node's own ledger, last instance received -> webhook's 2xx
# (notifications.delivered_at_ms - last_instance_at_ms), (2) the receiver's clock, last instance
# -> POST received, and (3) for MPPS, N-SET COMPLETED (node log) -> POST received.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-20}; CT_ROUNDS=${CT_ROUNDS:-5}
export TCP_NODELAY=1
unset RUST_BACKTRACE RUST_LIB_BACKTRACE
scripts/setup-test-env.sh >/dev/null
export LIBTORCH="$(.venv/bin/python -c 'import os, torch; print(os.path.dirname(torch.__file__))')"
cargo build --release --locked -q
BIN=$PWD/target/release/triage-node
WORK=${BENCH_DIR:-$PWD/.bench}/notify
mkdir -p "$WORK"
if [ "$(cat "$WORK/corpus/VERSION" 2>/dev/null)" != "1" ]; then
  rm -rf "$WORK/corpus"
  .venv/bin/python scripts/train-ct-demo-model.py series "$WORK/corpus/ct" 300 lesion >/dev/null
  echo 1 > "$WORK/corpus/VERSION"
fi
rm -rf "$WORK/models" && mkdir -p "$WORK/models"
cp -r models/demo-nodule models/demo-ct-hyperdense "$WORK/models/"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
HOOK_PORT=$(free_port)
rm -f "$WORK/hooks.jsonl"
.venv/bin/python tests/peers/webhook_receiver.py --port "$HOOK_PORT" --out "$WORK/hooks.jsonl" > "$WORK/hook.log" 2>&1 &
HOOK=$!
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
study_quiet_period = "1s"
[deid]
demo_keys = true
[inference]
models_dir = "$WORK/models"
device = "cpu"
[http]
enabled = false
[notify]
enabled = true
[[notify.rules]]
name = "oncall"
url = "http://127.0.0.1:$HOOK_PORT/hooks/oncall"
priorities = ["urgent"]
[log]
format = "text"
level = "info,sqlx=warn"
TOML
"$BIN" --config "$DIR/node.toml" serve 2> "$DIR/node.log" &
NODE=$!
trap 'kill $NODE $HOOK 2>/dev/null || true' EXIT
for _ in $(seq 300); do grep -q 'listening port=' "$DIR/node.log" && break; sleep 0.1; done
PORT=$(sed -n 's/.*listening port=\([0-9]*\).*/\1/p' "$DIR/node.log" | head -1)

posts() { { wc -l < "$WORK/hooks.jsonl"; } 2>/dev/null || echo 0; }
push() {  # how files...: one new study, wait for its notification
  local how=$1; shift
  local before; before=$(posts)
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
  for _ in $(seq 1200); do [ "$(posts)" -gt "$before" ] && return 0; sleep 0.1; done
  echo "bench: no notification; log tail:" >&2; tail -20 "$DIR/node.log" >&2; exit 1
}
# The newest notification: the ledger's figure, the receiver's, and (MPPS) from the N-SET.
measure() {
  .venv/bin/python - "$DIR/data" "$WORK/hooks.jsonl" "$DIR/node.log" "$1" <<'PY'
import glob, json, re, sqlite3, sys
from datetime import datetime
db = sqlite3.connect(glob.glob(sys.argv[1] + "/*.db")[0])
post = [json.loads(l) for l in open(sys.argv[2])][-1]
nid = json.loads(post["body"])["id"]
last, delivered = db.execute("SELECT last_instance_at_ms, delivered_at_ms FROM notifications WHERE id = ?", (nid,)).fetchone()
nset = "-"
if sys.argv[4] == "mpps":
    line = [l for l in open(sys.argv[3]).read().splitlines() if "procedure step updated" in l and "COMPLETED" in l][-1]
    t = datetime.fromisoformat(re.match(r"\S+", line).group(0).replace("Z", "+00:00")).timestamp() * 1000
    nset = round(post["received_ms"] - t)
print(delivered - last, post["received_ms"] - last, nset)
PY
}
stats() {  # numbers on stdin -> "median / p95 / max"
  python3 -c '
import sys, math
v = sorted(float(x) for x in sys.stdin.read().split() if x != "-")
if not v: print("-"); sys.exit()
med = v[len(v)//2] if len(v) % 2 else (v[len(v)//2-1] + v[len(v)//2]) / 2
p95 = v[min(len(v)-1, math.ceil(0.95 * len(v)) - 1)]
print("%.0f / %.0f / %.0f ms" % (med, p95, v[-1]))'
}
run() {  # label how rounds files...
  local label=$1 how=$2 rounds=$3; shift 3
  local ledger=() recv=() nset=()
  for _ in $(seq "$rounds"); do
    push "$how" "$@"
    read -r a b c < <(measure "$how")
    ledger+=("$a"); recv+=("$b"); nset+=("$c")
  done
  printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$label" "$how" "$#" "$rounds" \
    "$(printf '%s\n' "${ledger[@]}" | stats)" "$(printf '%s\n' "${recv[@]}" | stats)" "$(printf '%s\n' "${nset[@]}" | stats)"
  echo "   (all rounds, receiver ms from the last instance: ${recv[*]})" >&2
}
echo "bench: $(nproc) cores, release build, CPU, quiet period 1 s (in the storescu figures), webhook on loopback"
printf '\n| study | sent by | instances | rounds | last instance -> 2xx (node ledger) median / p95 / max | last instance -> POST received | N-SET COMPLETED -> POST received |\n|---|---|---|---|---|---|---|\n'
run "chest CR, urgent (demo-nodule)" storescu "$ROUNDS" .testdata/demo-cases/case000.dcm
run "chest CR, urgent (demo-nodule)" mpps "$ROUNDS" .testdata/demo-cases/case000.dcm
run "head CT, 300 slices, urgent (demo-ct-hyperdense)" storescu "$CT_ROUNDS" "$WORK"/corpus/ct/*.dcm
run "head CT, 300 slices, urgent (demo-ct-hyperdense)" mpps "$CT_ROUNDS" "$WORK"/corpus/ct/*.dcm
