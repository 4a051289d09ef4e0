#!/usr/bin/env bash
# Several nodes, one site (called by scripts/demo.sh, or on its own after it): two triage-nodes
# share one PostgreSQL database (127.0.0.1:5432, a fresh database) and one S3 bucket (SeaweedFS,
# the venv's `weed server -s3`, on loopback). A chest study is split across them (one radiograph
# to each node): one study job, one AI report at the PACS (DCMTK storescp). The node that did not
# make the report answers a C-FIND for it (DCMTK findscu). Then node A is stopped and a new study
# sent to node B is triaged and delivered all the same.
#   scripts/demo-cluster.sh   (env: BIN=target/release/triage-node, built by scripts/demo.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-$PWD/target/release/triage-node}
# The single-node demo's TRIAGE__* settings are not these nodes'.
unset $(env | grep -o '^TRIAGE__[A-Z0-9_]*' || true)
PG_ADMIN=${TRIAGE_TEST_POSTGRES:-postgres://postgres@127.0.0.1:5432/test}
if ! psql "$PG_ADMIN" -q -c 'SELECT 1' >/dev/null 2>&1; then
  echo "== several nodes, one site: skipped (no PostgreSQL at $PG_ADMIN; a cluster shares one)"
  exit 0
fi
D=$PWD/demo-data/cluster
rm -rf "$D"; mkdir -p "$D/weed/data" "$D/pacs"
export TCP_NODELAY=1
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PIDS=()
# Whether DICOM file $1's dump holds text $2 (grep -c reads it all: no SIGPIPE under pipefail).
has() { [ "$(dcmdump -q "$1" | grep -cF "$2")" -gt 0 ]; }
trap 'kill -TERM "${PIDS[@]}" 2>/dev/null || true; psql "$PG_ADMIN" -q -c "DROP DATABASE IF EXISTS triage_demo_cluster WITH (FORCE)" >/dev/null 2>&1 || true' EXIT

echo "== several nodes, one site: SeaweedFS (S3) and PostgreSQL shared by two nodes"
echo '{"identities":[{"name":"demo","credentials":[{"accessKey":"demo","secretKey":"demo-secret-0123456789"}],"actions":["Admin","Read","Write","List"]}]}' > "$D/weed/s3.json"
printf demo > "$D/s3-id"; printf demo-secret-0123456789 > "$D/s3-secret"; chmod 600 "$D/s3-id" "$D/s3-secret"
M=$(free_port); MG=$(free_port); S3=$(free_port)
.venv/bin/weed server -dir="$D/weed/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 -master.port="$M" -master.port.grpc="$MG" \
  -volume.port="$(free_port)" -volume.port.grpc="$(free_port)" -filer.port="$(free_port)" -filer.port.grpc="$(free_port)" \
  -s3 -s3.port="$S3" -s3.port.grpc="$(free_port)" -s3.port.iceberg=0 -s3.port.lance=0 -s3.config="$D/weed/s3.json" \
  -master.telemetry=false -master.volumeSizeLimitMB=64 -volume.max=16 2> "$D/weed/weed.log" &
PIDS+=($!)
for _ in $(seq 120); do
  out=$(echo "s3.bucket.create -name triage" | timeout 20 .venv/bin/weed shell -master="127.0.0.1:$M.$MG" 2>&1 || true)
  [[ $out == *"created bucket"* ]] && break; sleep 0.5
done
echo "-- bucket triage on http://127.0.0.1:$S3"
psql "$PG_ADMIN" -q -c "DROP DATABASE IF EXISTS triage_demo_cluster WITH (FORCE)" -c "CREATE DATABASE triage_demo_cluster" >/dev/null
DB="${PG_ADMIN%/*}/triage_demo_cluster"
PACS_PORT=$(free_port)
storescp -od "$D/pacs" "$PACS_PORT" & PIDS+=($!)

node_config() {  # $1 = name
  mkdir -p "$D/$1"
  cat > "$D/$1/node.toml" <<TOML
[dicom]
bind = "127.0.0.1"
port = 0
[storage]
data_dir = "$D/$1/data"
min_free_disk = "0"
backend = "s3"
[storage.s3]
endpoint = "http://127.0.0.1:$S3"
bucket = "triage"
allow_http = true
access_key_id_file = "$D/s3-id"
secret_access_key_file = "$D/s3-secret"
[database]
url = "$DB"
[ingest]
study_quiet_period = "2s"
[deid]
demo_keys = true
[results]
destinations = ["PACS"]
[delivery]
poll_interval = "500ms"
[http]
enabled = false
TOML
}
start() {  # $1 = name; sets PORT_<name>, PID_<name>
  "$BIN" --config "$D/$1/node.toml" serve 2> "$D/$1/node.log" &
  local pid=$!; PIDS+=($pid)
  for _ in $(seq 300); do grep -q 'listening port=' "$D/$1/node.log" && break; sleep 0.1; done
  eval "PID_$1=$pid; PORT_$1=$(grep -o 'listening port=[0-9]*' "$D/$1/node.log" | cut -d= -f2)"
  grep -o 'object store ready.*\|listening port=[0-9]*' "$D/$1/node.log" | sed "s/^/-- node $1: /"
}
node_config a; node_config b
# The AE titles are the shared database's: registered once, every node knows them.
"$BIN" --config "$D/a/node.toml" ae add DEMO_CT --host 127.0.0.1 >/dev/null
"$BIN" --config "$D/a/node.toml" ae add PACS --role pacs --host 127.0.0.1 --port "$PACS_PORT" >/dev/null
start a; start b

echo "== one chest study, one radiograph to each node"
STUDY=2.25.$(python3 -c 'import uuid; print(uuid.uuid4().int)'); SERIES=2.25.$(python3 -c 'import uuid; print(uuid.uuid4().int)')
for i in 0 1; do
  .venv/bin/python tests/peers/qr_peer.py variant .testdata/demo-cases/case000.dcm "$D/split-$i.dcm" \
    "StudyInstanceUID=$STUDY" "SeriesInstanceUID=$SERIES" PatientID=CLUSTER-1 "PatientName=CLUSTER^DEMO" AccessionNumber=CL1 >/dev/null
done
storescu -aet DEMO_CT -aec TRIAGE 127.0.0.1 "$PORT_a" "$D/split-0.dcm" && echo "-- to node a: Success"
storescu -aet DEMO_CT -aec TRIAGE 127.0.0.1 "$PORT_b" "$D/split-1.dcm" && echo "-- to node b: Success"
echo "-- instance files kept on the nodes' disks: $(find "$D"/a/data/store "$D"/b/data/store -name '*.dcm' 2>/dev/null | wc -l) (the bucket holds them)"
for _ in $(seq 300); do grep -q 'AI report delivered' "$D"/a/node.log "$D"/b/node.log && break; sleep 0.2; done
sleep 2
RAN=$(grep -l 'study triaged' "$D"/a/node.log "$D"/b/node.log | head -1 | xargs dirname | xargs basename)
OTHER=$([ "$RAN" = a ] && echo b || echo a)
echo "-- node $RAN ran the study job; reports at the PACS for the study: $(for f in "$D"/pacs/*; do has "$f" "$STUDY" && has "$f" '(0008,0060) CS [SR]' && echo "$f"; done | wc -l)"
OTHER_PORT=$(eval echo "\$PORT_$OTHER")
echo "== node $OTHER answers a C-FIND for the report node $RAN made (findscu, Study Root)"
findscu -S -aet PACS -aec TRIAGE -k QueryRetrieveLevel=STUDY -k StudyInstanceUID="$STUDY" -k PatientID -k PatientName \
  -k ModalitiesInStudy -k NumberOfStudyRelatedInstances 127.0.0.1 "$OTHER_PORT" -v 2>&1 | grep -E '^I: \((0010|0008,0061|0020,1208)' || true

echo "== node a stops; a new study sent to node b is triaged and delivered all the same"
kill -TERM "$PID_a"; wait "$PID_a" 2>/dev/null || true
.venv/bin/python tests/peers/qr_peer.py variant .testdata/demo-cases/case001.dcm "$D/late.dcm" PatientID=CLUSTER-2 >/dev/null
storescu -aet DEMO_CT -aec TRIAGE 127.0.0.1 "$PORT_b" "$D/late.dcm" && echo "-- to node b: Success"
for _ in $(seq 300); do [ "$(grep -c 'AI report delivered' "$D/b/node.log" || true)" -ge "$([ "$RAN" = b ] && echo 2 || echo 1)" ] && break; sleep 0.2; done
"$BIN" --config "$D/b/node.toml" status | grep -E '^node|^nodes|study results|outbox|^worker outbox'
echo "-- AI reports at the PACS: $(for f in "$D"/pacs/*; do has "$f" '(0008,0060) CS [SR]' && echo "$f"; done | wc -l) (two studies, one report each)"
