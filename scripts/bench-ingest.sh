#!/usr/bin/env bash
# Ingest benchmark (not a test): the same corpus sent by DCMTK storescu to triage-node and to
# DCMTK storescp on loopback, interleaved, in ROUNDS rounds (median reported). Also the peak RSS
# of the node receiving one ~200 MB instance. Every DCMTK process runs with TCP_NODELAY=1.
# De-identification overhead: the node of commit BASELINE (the last one before de-identification
# on ingest) is built too and receives the same sets in the same rounds.
#   scripts/bench-ingest.sh [ROUNDS]        (env: CT=300 DX=30 FSYNC=true BASELINE=7696fab, "" to skip)
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
CT=${CT:-300}; DX=${DX:-30}; FSYNC=${FSYNC:-true}
export TCP_NODELAY=1
# A backtrace captured with every internal parse error (dicom-rs) is not what production pays.
unset RUST_BACKTRACE RUST_LIB_BACKTRACE

scripts/setup-test-env.sh >/dev/null
# libtorch for tch: the one in the venv's PyTorch wheel (its folders end up on the binary's rpath).
export LIBTORCH="$(.venv/bin/python -c 'import os, torch; print(os.path.dirname(torch.__file__))')"
WORK=${BENCH_DIR:-$PWD/.bench}
BASELINE=${BASELINE-7696fab}
BASE_BIN=""
if [ -n "$BASELINE" ]; then
  BASE_BIN=$WORK/baseline-$BASELINE/triage-node
  if [ ! -x "$BASE_BIN" ]; then
    echo "bench: building the baseline node ($BASELINE, before de-identification)"
    rm -rf "$WORK/src-$BASELINE"; mkdir -p "$WORK/src-$BASELINE" "$(dirname "$BASE_BIN")"
    git archive "$BASELINE" | tar -x -C "$WORK/src-$BASELINE"
    # Shared target dir: the dependencies are built once for both.
    (cd "$WORK/src-$BASELINE" && CARGO_TARGET_DIR="$OLDPWD/target" cargo build --release --locked -q)
    cp target/release/triage-node "$BASE_BIN"
    rm -rf "$WORK/src-$BASELINE"
  fi
fi
cargo build --release --locked -q
BIN=$PWD/target/release/triage-node
if [ "$(cat "$WORK/corpus/VERSION" 2>/dev/null)" != "$CT-$DX" ]; then
  echo "bench: generating corpus ($CT CT, $DX DX 2500x2500, one 200 MB DX) in $WORK/corpus"
  rm -rf "$WORK/corpus"
  .venv/bin/python scripts/make-bench-corpus.py "$WORK/corpus" --ct "$CT" --dx "$DX"
  echo "$CT-$DX" > "$WORK/corpus/VERSION"
fi

now() { date +%s.%N; }
mb() { du -sb "$1" | awk '{printf "%.1f", $1/1e6}'; }
count() { find "$1" -type f | wc -l; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

start_node() {  # $1 = data dir, $2 = binary (default: this commit's); sets NODE_PID NODE_PORT
  local dir=$1 bin=${2:-$BIN}
  rm -rf "$dir"; mkdir -p "$dir"
  cat > "$dir/node.toml" <<TOML
[dicom]
bind = "127.0.0.1"
port = 0
[storage]
data_dir = "$dir/data"
min_free_disk = "0"
fsync = $FSYNC
[log]
level = "warn"
TOML
  # The corpus is synthetic: the public demo keys are fine (the baseline has no [deid] section).
  # Ingest alone: no model package (inference is measured by scripts/bench-infer.sh).
  [ "$bin" = "$BIN" ] && printf '[deid]\ndemo_keys = true\n[inference]\nmodels_dir = "%s/no-models"\n' "$dir" >> "$dir/node.toml"
  "$bin" --config "$dir/node.toml" ae add STORESCU >/dev/null
  TRIAGE__LOG__LEVEL=info "$bin" --config "$dir/node.toml" serve 2> "$dir/node.log" &
  NODE_PID=$!
  for _ in $(seq 100); do
    NODE_PORT=$(grep -o 'listening port=[0-9]*' "$dir/node.log" | cut -d= -f2 || true)
    [ -n "$NODE_PORT" ] && break; sleep 0.1
  done
  [ -n "$NODE_PORT" ] || { cat "$dir/node.log"; exit 1; }
}
stop_node() { kill -TERM "$NODE_PID"; wait "$NODE_PID" 2>/dev/null || true; }
hwm_kb() { awk '/VmHWM/ {print $2}' "/proc/$1/status"; }
rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }

send() {  # $1 port, $2 called AE, $3 dir -> prints seconds
  local t0 t1
  t0=$(now)
  storescu -R -xe -aet STORESCU -aec "$2" +sd 127.0.0.1 "$1" "$3" 2> "$WORK/storescu.log" || { cat "$WORK/storescu.log"; exit 1; }
  t1=$(now)
  if grep -q "^E:" "$WORK/storescu.log"; then cat "$WORK/storescu.log"; exit 1; fi
  echo "$t1 - $t0" | bc -l
}

# CPU seconds (user + system) the node process has used: steadier than wall time on a shared disk.
cpu_s() { awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) / hz}' "/proc/$1/stat"; }
declare -A T C
for set in ct dx; do T[node_$set]=""; T[scp_$set]=""; T[base_$set]=""; done
PEAK_KB=0
for r in $(seq "$ROUNDS"); do
  start_node "$WORK/node-$r"
  SCP_DIR="$WORK/storescp-$r"; rm -rf "$SCP_DIR"; mkdir -p "$SCP_DIR"
  SCP_PORT=$(free_port)
  storescp -aet STORESCP -od "$SCP_DIR" "$SCP_PORT" &
  SCP_PID=$!
  sleep 0.5
  for set in ct dx; do
    c0=$(cpu_s "$NODE_PID")
    T[node_$set]+="$(send "$NODE_PORT" TRIAGE "$WORK/corpus/$set") "
    C[node_$set]+="$(echo "$(cpu_s "$NODE_PID") - $c0" | bc -l) "
    T[scp_$set]+="$(send "$SCP_PORT" STORESCP "$WORK/corpus/$set") "
  done
  h=$(hwm_kb "$NODE_PID"); [ "$h" -gt "$PEAK_KB" ] && PEAK_KB=$h
  n_node=$(count "$WORK/node-$r/data/store"); n_scp=$(count "$SCP_DIR")
  [ "$n_node" -eq $((CT + DX)) ] || { echo "node stored $n_node of $((CT + DX))"; exit 1; }
  [ "$n_scp" -eq $((CT + DX)) ] || { echo "storescp stored $n_scp of $((CT + DX))"; exit 1; }
  stop_node; kill "$SCP_PID"; wait "$SCP_PID" 2>/dev/null || true
  rm -rf "$SCP_DIR" "$WORK/node-$r/data/store"
  if [ -n "$BASE_BIN" ]; then
    start_node "$WORK/base-$r" "$BASE_BIN"
    for set in ct dx; do
      c0=$(cpu_s "$NODE_PID")
      T[base_$set]+="$(send "$NODE_PORT" TRIAGE "$WORK/corpus/$set") "
      C[base_$set]+="$(echo "$(cpu_s "$NODE_PID") - $c0" | bc -l) "
    done
    stop_node; rm -rf "$WORK/base-$r"
  fi
done

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
printf '\nIngest benchmark: %d rounds, median; fsync=%s; %s\n' "$ROUNDS" "$FSYNC" "$(nproc) cores"
printf '%-4s %-10s %8s %9s %9s %8s\n' set receiver seconds images/s MB/s ratio
for set in ct dx; do
  n=$(find "$WORK/corpus/$set" -name '*.dcm' | wc -l); size=$(mb "$WORK/corpus/$set")
  tn=$(echo "${T[node_$set]}" | median); ts=$(echo "${T[scp_$set]}" | median)
  for who in node scp; do
    t=$tn; [ $who = scp ] && t=$ts
    ratio=$(echo "$ts / $tn" | bc -l)
    printf '%-4s %-10s %8.2f %9.1f %9.1f %8s\n' "$set" "$([ $who = node ] && echo triage-node || echo storescp)" "$t" \
      "$(echo "$n / $t" | bc -l)" "$(echo "$size / $t" | bc -l)" "$([ $who = node ] && printf '%.2f' "$ratio" || echo 1.00)"
  done
done
echo "ratio = triage-node throughput / storescp throughput (same run)"
if [ -n "$BASE_BIN" ]; then
  for set in ct dx; do
    tn=$(echo "${T[node_$set]}" | median); tb=$(echo "${T[base_$set]}" | median)
    cn=$(echo "${C[node_$set]}" | median); cb=$(echo "${C[base_$set]}" | median)
    printf 'de-identification overhead, %s set: %.2f s with vs %.2f s without (%s): %+.1f%% ingest time; node CPU %.2f s vs %.2f s: %+.1f%%\n' \
      "$set" "$tn" "$tb" "$BASELINE" "$(echo "($tn / $tb - 1) * 100" | bc -l)" "$cn" "$cb" "$(echo "($cn / $cb - 1) * 100" | bc -l)"
  done
fi
printf 'node peak RSS over the CT+DX runs: %.1f MB\n' "$(echo "$PEAK_KB / 1024" | bc -l)"

# One ~200 MB instance: peak RSS above the idle process.
start_node "$WORK/node-big"
storescu -aet STORESCU -aec TRIAGE 127.0.0.1 "$NODE_PORT" --repeat 1 >/dev/null 2>&1 || true  # warm the listener
IDLE=$(rss_kb "$NODE_PID")
t=$(send "$NODE_PORT" TRIAGE "$WORK/corpus/big")
PEAK=$(hwm_kb "$NODE_PID")
stop_node
printf '200 MB instance (%s MB): %.2f s; idle RSS %.1f MB, peak RSS %.1f MB, peak above idle %.1f MB\n' \
  "$(du -sb "$WORK/corpus/big" | awk '{printf "%.1f", $1/1e6}')" "$t" "$(echo "$IDLE/1024" | bc -l)" "$(echo "$PEAK/1024" | bc -l)" "$(echo "($PEAK-$IDLE)/1024" | bc -l)"
rm -rf "$WORK"/node-*
