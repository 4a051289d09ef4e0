#!/usr/bin/env bash
# Cluster ingest benchmark (not a test): what the S3 backend costs a node, and what a second
# node adds. One PostgreSQL (127.0.0.1:5432, a fresh database per run) and one SeaweedFS bucket
# (the venv's `weed server -s3`, on loopback, started here); DCMTK storescu sends, DCMTK storescp
# is the reference receiver; all in the same rounds, interleaved, median of ROUNDS.
#   1 sender (one association, PER_SENDER CT slices):
#       storescp | one node, local files | one node, S3
#   2 senders at once (each its own PER_SENDER-slice series):
#       storescp --fork | one node, S3 | two nodes, S3 (one sender each): aggregate instances/s
# Every node: no model package (ingest only; scripts/bench-infer.sh measures inference), fsync
# on for local files, PostgreSQL for both backends (an S3 cluster needs it).
#   scripts/bench-cluster.sh [ROUNDS]   (env: PER_SENDER=150)
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
PER_SENDER=${PER_SENDER:-150}
PG_ADMIN=${TRIAGE_TEST_POSTGRES:-postgres://postgres@127.0.0.1:5432/test}
export TCP_NODELAY=1
unset RUST_BACKTRACE RUST_LIB_BACKTRACE

scripts/setup-test-env.sh >/dev/null
export LIBTORCH="$(.venv/bin/python -c 'import os, torch; print(os.path.dirname(torch.__file__))')"
WORK=${BENCH_DIR:-$PWD/.bench}/cluster
mkdir -p "$WORK"
cargo build --release --locked -q
BIN=$PWD/target/release/triage-node
CORPUS=$PWD/.bench/corpus
if [ "$(cat "$CORPUS/par/VERSION" 2>/dev/null | cut -d- -f2)" != "$PER_SENDER" ] || [ ! -d "$CORPUS/par/1" ]; then
  echo "bench: generating 2 sets of $PER_SENDER CT slices"
  rm -rf "$CORPUS/par"; mkdir -p "$CORPUS"
  .venv/bin/python scripts/make-bench-corpus.py "$CORPUS" --senders 2 --per-sender "$PER_SENDER"
  echo "2-$PER_SENDER" > "$CORPUS/par/VERSION"
fi

now() { date +%s.%N; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
quiesce() { sync; sleep 0.5; }
psql_admin() { psql "$PG_ADMIN" -q -c "$1" >/dev/null; }

# SeaweedFS: master, volume, filer and S3 gateway on free ports; one identity; bucket "triage".
WEED_DIR=$WORK/weed
rm -rf "$WEED_DIR"; mkdir -p "$WEED_DIR/data"
echo '{"identities":[{"name":"bench","credentials":[{"accessKey":"bench","secretKey":"bench-secret-0123456789"}],"actions":["Admin","Read","Write","List"]}]}' > "$WEED_DIR/s3.json"
printf 'bench' > "$WEED_DIR/id"; printf 'bench-secret-0123456789' > "$WEED_DIR/secret"
chmod 600 "$WEED_DIR/id" "$WEED_DIR/secret"   # the node refuses credentials others can read
M=$(free_port); MG=$(free_port); S3=$(free_port)
.venv/bin/weed server -dir="$WEED_DIR/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 -master.port="$M" -master.port.grpc="$MG" \
  -volume.port="$(free_port)" -volume.port.grpc="$(free_port)" -filer.port="$(free_port)" -filer.port.grpc="$(free_port)" \
  -s3 -s3.port="$S3" -s3.port.grpc="$(free_port)" -s3.port.iceberg=0 -s3.port.lance=0 -s3.config="$WEED_DIR/s3.json" \
  -master.telemetry=false -master.volumeSizeLimitMB=256 -volume.max=32 2> "$WEED_DIR/weed.log" &
WEED_PID=$!
trap 'kill $WEED_PID 2>/dev/null || true; kill $(jobs -p) 2>/dev/null || true' EXIT
for _ in $(seq 120); do
  out=$(echo "s3.bucket.create -name triage" | timeout 20 .venv/bin/weed shell -master="127.0.0.1:$M.$MG" 2>&1 || true)
  [[ $out == *"created bucket"* ]] && break; sleep 0.5
done
[[ $out == *"created bucket"* ]] || { echo "SeaweedFS did not come up: $out"; tail "$WEED_DIR/weed.log"; exit 1; }

start_node() {  # $1 = dir, $2 = backend, $3 = database URL; sets NODE_PID NODE_PORT
  local dir=$1 backend=$2 db=$3
  rm -rf "$dir"; mkdir -p "$dir"
  cat > "$dir/node.toml" <<TOML
[dicom]
bind = "127.0.0.1"
port = 0
[storage]
data_dir = "$dir/data"
min_free_disk = "0"
backend = "$backend"
[storage.s3]
endpoint = "http://127.0.0.1:$S3"
bucket = "triage"
allow_http = true
access_key_id_file = "$WEED_DIR/id"
secret_access_key_file = "$WEED_DIR/secret"
[database]
url = "$db"
[deid]
demo_keys = true
[inference]
models_dir = "$dir/no-models"
[http]
enabled = false
[log]
level = "warn"
TOML
  "$BIN" --config "$dir/node.toml" ae add STORESCU >/dev/null 2>&1 || true
  TRIAGE__LOG__LEVEL=info "$BIN" --config "$dir/node.toml" serve 2> "$dir/node.log" &
  NODE_PID=$!
  for _ in $(seq 200); do
    NODE_PORT=$(grep -o 'listening port=[0-9]*' "$dir/node.log" | cut -d= -f2 || true)
    [ -n "$NODE_PORT" ] && break; sleep 0.1
  done
  [ -n "$NODE_PORT" ] || { cat "$dir/node.log"; exit 1; }
}

# $@ = "port:set" pairs, one storescu each, all at once -> prints seconds for all of them
send() {
  local t0 t1 pids=() k=0
  quiesce
  t0=$(now)
  for target in "$@"; do
    storescu -R -xe -aet STORESCU -aec TRIAGE +sd 127.0.0.1 "${target%%:*}" "$CORPUS/par/${target##*:}" 2> "$WORK/storescu-$k.log" &
    pids+=($!); k=$((k + 1))
  done
  for p in "${pids[@]}"; do wait "$p" || { cat "$WORK"/storescu-*.log; exit 1; }; done
  t1=$(now)
  if grep -q "^E:" "$WORK"/storescu-*.log; then cat "$WORK"/storescu-*.log; exit 1; fi
  echo "$t1 - $t0" | bc -l
}

DATABASES=()
fresh_db() {  # sets DB to the URL of a new database
  local name=bench_cluster_$RANDOM$RANDOM
  psql_admin "CREATE DATABASE $name"
  DATABASES+=("$name")
  DB="${PG_ADMIN%/*}/$name"
}

declare -A T
for r in $(seq "$ROUNDS"); do
  # storescp: 1 sender, then 2 at once (--fork).
  d=$WORK/scp-$r; rm -rf "$d"; mkdir -p "$d"; P=$(free_port)
  storescp -od "$d" "$P" & SCP=$!; sleep 0.5
  T[scp1]+=" $(send "$P:0")"; kill $SCP; wait $SCP 2>/dev/null || true
  rm -rf "$d"; mkdir -p "$d"; P=$(free_port)
  storescp --fork -od "$d" "$P" & SCP=$!; sleep 0.5
  T[scp2]+=" $(send "$P:0" "$P:1")"; kill $SCP; wait $SCP 2>/dev/null || true
  # One node, local files.
  fresh_db; start_node "$WORK/local-$r" local "$DB"
  T[local1]+=" $(send "$NODE_PORT:0")"; kill -TERM $NODE_PID; wait $NODE_PID || true
  # One node, S3: one sender, then two.
  fresh_db; start_node "$WORK/s3-$r" s3 "$DB"
  T[s31]+=" $(send "$NODE_PORT:0")"
  kill -TERM $NODE_PID; wait $NODE_PID || true
  fresh_db; start_node "$WORK/s3b-$r" s3 "$DB"
  T[s32]+=" $(send "$NODE_PORT:0" "$NODE_PORT:1")"
  kill -TERM $NODE_PID; wait $NODE_PID || true
  # Two nodes, S3, one database: one sender each.
  fresh_db
  start_node "$WORK/a-$r" s3 "$DB"; A_PID=$NODE_PID; A_PORT=$NODE_PORT
  start_node "$WORK/b-$r" s3 "$DB"; B_PID=$NODE_PID; B_PORT=$NODE_PORT
  T[two]+=" $(send "$A_PORT:0" "$B_PORT:1")"
  kill -TERM $A_PID $B_PID; wait $A_PID $B_PID || true
  echo "round $r done" >&2
done

rate() { echo "$1 * $PER_SENDER / $(echo "${T[$2]}" | median)" | bc -l; }
printf '\nCluster ingest benchmark: %d rounds, median; %d CT slices per sender; %s cores; PostgreSQL for every node\n' "$ROUNDS" "$PER_SENDER" "$(nproc)"
printf '| receiver | senders | seconds | instances/s | / storescp same senders |\n|---|---|---|---|---|\n'
row() { printf '| %s | %d | %.2f | %.0f | %.2f |\n' "$1" "$2" "$(echo "${T[$3]}" | median)" "$(rate "$2" "$3")" "$(echo "$(rate "$2" "$3") / $(rate "$2" "$4")" | bc -l)"; }
row "storescp" 1 scp1 scp1
row "one node, local files (fsync)" 1 local1 scp1
row "one node, S3 (SeaweedFS)" 1 s31 scp1
row "storescp --fork" 2 scp2 scp2
row "one node, S3" 2 s32 scp2
row "two nodes, S3, one sender each" 2 two scp2
printf 'S3 / local, one node, one sender: %.2f\n' "$(echo "$(rate 1 s31) / $(rate 1 local1)" | bc -l)"
printf 'two nodes / one node, S3, two senders: %.2f\n' "$(echo "$(rate 2 two) / $(rate 2 s32)" | bc -l)"
for name in "${DATABASES[@]}"; do psql_admin "DROP DATABASE IF EXISTS $name WITH (FORCE)" || true; done
rm -rf "$WORK"/scp-* "$WORK"/local-* "$WORK"/s3-* "$WORK"/s3b-* "$WORK"/a-* "$WORK"/b-*
