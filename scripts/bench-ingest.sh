#!/usr/bin/env bash
# Ingest benchmark (not a test): the same corpus sent by DCMTK storescu to triage-node and to
# DCMTK storescp on loopback, interleaved, in ROUNDS rounds (median reported). Every DCMTK
# process runs with TCP_NODELAY=1.
#   1. One association: 300 CT slices, then 30 DX; the node's time per phase of an instance
#      (its triage_ingest_phase_seconds histogram, read from /metrics).
#   2. Concurrent senders (CONCURRENCY, default "1 4 16"): that many storescu processes at once,
#      each sending its own PER_SENDER CT slices, to the node and to `storescp --fork`: aggregate
#      instances/s, the node's mean group-commit size and its peak RSS.
#   3. PostgreSQL (PG=true): the CT set into the node on PostgreSQL (127.0.0.1:5432) beside SQLite.
#   4. The peak RSS of the node receiving one ~200 MB instance.
# De-identification overhead: the node of commit BASELINE (the last one before de-identification
# on ingest) is built too and receives the one-association sets in the same rounds.
# BEFORE_BIN: another build of the node (an earlier commit's) run in the same rounds of 1 and 2,
# for a before/after comparison on the same machine state.
#   scripts/bench-ingest.sh [ROUNDS]   (env: CT=300 DX=30 FSYNC=true BASELINE=7696fab ("" to skip)
#                                       BEFORE_BIN=path/to/triage-node
#                                       CONCURRENCY="1 4 16" PER_SENDER=150 PG=true)
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
CT=${CT:-300}; DX=${DX:-30}; FSYNC=${FSYNC:-true}
CONCURRENCY=${CONCURRENCY-1 4 16}; PER_SENDER=${PER_SENDER:-150}; PG=${PG:-true}
PG_ADMIN=${TRIAGE_TEST_POSTGRES:-postgres://postgres@127.0.0.1:5432/test}
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
MAX_SENDERS=$(echo $CONCURRENCY | tr ' ' '\n' | sort -n | tail -1)
if [ -n "$CONCURRENCY" ] && [ "$(cat "$WORK/corpus/par/VERSION" 2>/dev/null)" != "$MAX_SENDERS-$PER_SENDER" ]; then
  echo "bench: generating $MAX_SENDERS sets of $PER_SENDER CT slices for the concurrent senders"
  rm -rf "$WORK/corpus/par"
  .venv/bin/python scripts/make-bench-corpus.py "$WORK/corpus" --senders "$MAX_SENDERS" --per-sender "$PER_SENDER"
  echo "$MAX_SENDERS-$PER_SENDER" > "$WORK/corpus/par/VERSION"
fi

now() { date +%s.%N; }
mb() { du -sb "$1" | awk '{printf "%.1f", $1/1e6}'; }
count() { find "$1" -type f | wc -l; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

start_node() {  # $1 = data dir, $2 = binary (default: this commit's), $3 = database URL (default
                #   SQLite); sets NODE_PID NODE_PORT HTTP_PORT
  local dir=$1 bin=${2:-$BIN} db=${3:-}
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
  [ "$bin" != "$BASE_BIN" ] && printf '[deid]\ndemo_keys = true\n[inference]\nmodels_dir = "%s/no-models"\n[http]\nport = 0\n' "$dir" >> "$dir/node.toml"
  local env=(TRIAGE__LOG__LEVEL=info)
  # This node only (the baseline knows neither): up to 16 senders on one host, the database.
  [ "$bin" != "$BASE_BIN" ] && env+=(TRIAGE__DICOM__MAX_ASSOCIATIONS_PER_HOST=32 "TRIAGE__DATABASE__URL=$db")
  env "${env[@]}" "$bin" --config "$dir/node.toml" ae add STORESCU >/dev/null
  env "${env[@]}" "$bin" --config "$dir/node.toml" serve 2> "$dir/node.log" &
  NODE_PID=$!
  for _ in $(seq 100); do
    NODE_PORT=$(grep -o 'listening port=[0-9]*' "$dir/node.log" | cut -d= -f2 || true)
    HTTP_PORT=$(grep -o 'http_port=[0-9]*' "$dir/node.log" | cut -d= -f2 || true)
    [ -n "$NODE_PORT" ] && { [ "$bin" = "$BASE_BIN" ] || [ -n "$HTTP_PORT" ]; } && break; sleep 0.1
  done
  [ -n "$NODE_PORT" ] || { cat "$dir/node.log"; exit 1; }
}
stop_node() { kill -TERM "$NODE_PID"; wait "$NODE_PID" 2>/dev/null || true; }
hwm_kb() { awk '/VmHWM/ {print $2}' "/proc/$1/status"; }
rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }

# Before each timed run: the previous runs' dirty pages written out, so that no run pays for
# another's writeback.
quiesce() { sync; sleep 0.5; }

send() {  # $1 port, $2 called AE, $3 dir -> prints seconds
  local t0 t1
  quiesce
  t0=$(now)
  storescu -R -xe -aet STORESCU -aec "$2" +sd 127.0.0.1 "$1" "$3" 2> "$WORK/storescu.log" || { cat "$WORK/storescu.log"; exit 1; }
  t1=$(now)
  if grep -q "^E:" "$WORK/storescu.log"; then cat "$WORK/storescu.log"; exit 1; fi
  echo "$t1 - $t0" | bc -l
}

# The node's Prometheus text (/metrics).
scrape() { curl -sf "http://127.0.0.1:$HTTP_PORT/metrics"; }
# The mean of a histogram between two scrapes ($2 before, $3 after): per phase in ms for
# triage_ingest_phase_seconds ($1 = phases), rows per commit for triage_ingest_commit_batch
# ($1 = batch).
histogram_mean() {
  .venv/bin/python - "$@" <<'PY'
import re, sys
kind, before, after = sys.argv[1:4]
metric, scale = {"phases": ("triage_ingest_phase_seconds", 1000), "batch": ("triage_ingest_commit_batch", 1)}[kind]
def read(path):
    d = {}
    for line in open(path):
        m = re.match(re.escape(metric) + r'_(sum|count)(?:\{phase="(\w+)"\})? (\S+)', line)
        if m:
            d.setdefault(m[2] or "", {})[m[1]] = float(m[3])
    return d
a, b = read(before), read(after)
order = ["receive", "settle", "finish", "whole_scan", "whole_deid", "whole_write", "whole_digest", "whole_sync",
         "scan_and_sync", "disk", "seal", "commit", "total"]
out = []
for k in [k for k in order if k in b] + sorted(set(b) - set(order)):
    n = b[k]["count"] - a.get(k, {}).get("count", 0)
    if n > 0:
        mean = scale * (b[k]["sum"] - a.get(k, {}).get("sum", 0)) / n
        out.append(f"{k} {mean:.3f}" if k else f"{mean:.1f}")
print(", ".join(out) or "-")
PY
}
phases() { histogram_mean phases "$1" "$2"; }
commit_batch() { histogram_mean batch "$1" "$2"; }

# CPU seconds (user + system) the node process has used: steadier than wall time on a shared disk.
cpu_s() { awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) / hz}' "/proc/$1/stat"; }
declare -A T C PHASES PHASES_BEFORE
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
    scrape > "$WORK/metrics-before"
    T[node_$set]+="$(send "$NODE_PORT" TRIAGE "$WORK/corpus/$set") "
    C[node_$set]+="$(echo "$(cpu_s "$NODE_PID") - $c0" | bc -l) "
    scrape > "$WORK/metrics-after"
    PHASES[$set]+="round $r: $(phases "$WORK/metrics-before" "$WORK/metrics-after")"$'\n'
    T[scp_$set]+="$(send "$SCP_PORT" STORESCP "$WORK/corpus/$set") "
  done
  h=$(hwm_kb "$NODE_PID"); [ "$h" -gt "$PEAK_KB" ] && PEAK_KB=$h
  n_node=$(count "$WORK/node-$r/data/store"); n_scp=$(count "$SCP_DIR")
  [ "$n_node" -eq $((CT + DX)) ] || { echo "node stored $n_node of $((CT + DX))"; exit 1; }
  [ "$n_scp" -eq $((CT + DX)) ] || { echo "storescp stored $n_scp of $((CT + DX))"; exit 1; }
  stop_node; kill "$SCP_PID"; wait "$SCP_PID" 2>/dev/null || true
  if [ -n "${BEFORE_BIN:-}" ]; then
    start_node "$WORK/before-$r" "$BEFORE_BIN"
    for set in ct dx; do
      scrape > "$WORK/metrics-before"
      T[before_$set]+="$(send "$NODE_PORT" TRIAGE "$WORK/corpus/$set") "
      scrape > "$WORK/metrics-after"
      PHASES_BEFORE[$set]+="round $r: $(phases "$WORK/metrics-before" "$WORK/metrics-after")"$'\n'
    done
    stop_node
  fi
  if [ -n "$BASE_BIN" ]; then
    start_node "$WORK/base-$r" "$BASE_BIN"
    for set in ct dx; do
      c0=$(cpu_s "$NODE_PID")
      T[base_$set]+="$(send "$NODE_PORT" TRIAGE "$WORK/corpus/$set") "
      C[base_$set]+="$(echo "$(cpu_s "$NODE_PID") - $c0" | bc -l) "
    done
    stop_node
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
if [ -n "${BEFORE_BIN:-}" ]; then
  for set in ct dx; do
    tb=$(echo "${T[before_$set]}" | median); ts=$(echo "${T[scp_$set]}" | median)
    printf 'before (%s), %s set: %.2f s, node/storescp %.2f\n' "$BEFORE_BIN" "$set" "$tb" "$(echo "$ts / $tb" | bc -l)"
  done
fi
if [ -n "$BASE_BIN" ]; then
  for set in ct dx; do
    tn=$(echo "${T[node_$set]}" | median); tb=$(echo "${T[base_$set]}" | median)
    cn=$(echo "${C[node_$set]}" | median); cb=$(echo "${C[base_$set]}" | median)
    printf 'de-identification overhead, %s set: %.2f s with vs %.2f s without (%s): %+.1f%% ingest time; node CPU %.2f s vs %.2f s: %+.1f%%\n' \
      "$set" "$tn" "$tb" "$BASELINE" "$(echo "($tn / $tb - 1) * 100" | bc -l)" "$cn" "$cb" "$(echo "($cn / $cb - 1) * 100" | bc -l)"
  done
fi
printf 'node peak RSS over the CT+DX runs: %.1f MB\n' "$(echo "$PEAK_KB / 1024" | bc -l)"
for set in ct dx; do
  printf '\nnode time per instance by phase, %s set (ms, mean over the set; receive: first data byte to last;\ntotal: to the response sent; whole_*: an instance held in memory, scan_and_sync: one streamed):\n%s' "$set" "${PHASES[$set]}"
  [ -n "${BEFORE_BIN:-}" ] && printf 'before:\n%s' "${PHASES_BEFORE[$set]}"
done

# Concurrent senders: N storescu processes at once, each its own CT series.
if [ -n "$CONCURRENCY" ]; then
  declare -A CT_N CS_N CB_N BATCH_N RSS_N CPU_N CPUB_N
  send_many() {  # $1 port, $2 called AE, $3 senders -> prints seconds for all of them
    local t0 t1 k pids=()
    quiesce
    t0=$(now)
    for k in $(seq 0 $(($3 - 1))); do
      storescu -R -xe -aet STORESCU -aec "$2" +sd 127.0.0.1 "$1" "$WORK/corpus/par/$k" 2> "$WORK/storescu-$k.log" &
      pids+=($!)
    done
    for p in "${pids[@]}"; do wait "$p" || { cat "$WORK"/storescu-*.log; exit 1; }; done
    t1=$(now)
    if grep -q "^E:" "$WORK"/storescu-*.log; then cat "$WORK"/storescu-*.log; exit 1; fi
    echo "$t1 - $t0" | bc -l
  }
  for r in $(seq "$ROUNDS"); do
    for n in $CONCURRENCY; do
      start_node "$WORK/par-node-$r-$n"
      scrape > "$WORK/metrics-before"
      c0=$(cpu_s "$NODE_PID")
      CT_N[$n]+="$(send_many "$NODE_PORT" TRIAGE "$n") "
      CPU_N[$n]+="$(echo "($(cpu_s "$NODE_PID") - $c0) * 1000 / ($n * $PER_SENDER)" | bc -l) "
      scrape > "$WORK/metrics-after"
      BATCH_N[$n]+="$(commit_batch "$WORK/metrics-before" "$WORK/metrics-after") "
      RSS_N[$n]+="$(hwm_kb "$NODE_PID") "
      got=$(count "$WORK/par-node-$r-$n/data/store")
      stop_node
      [ "$got" -eq $((n * PER_SENDER)) ] || { echo "node stored $got of $((n * PER_SENDER))"; exit 1; }
      if [ -n "${BEFORE_BIN:-}" ]; then
        start_node "$WORK/par-before-$r-$n" "$BEFORE_BIN"
        c0=$(cpu_s "$NODE_PID")
        CB_N[$n]+="$(send_many "$NODE_PORT" TRIAGE "$n") "
        CPUB_N[$n]+="$(echo "($(cpu_s "$NODE_PID") - $c0) * 1000 / ($n * $PER_SENDER)" | bc -l) "
        stop_node
      fi
      SCP_DIR="$WORK/par-scp-$r-$n"; rm -rf "$SCP_DIR"; mkdir -p "$SCP_DIR"
      SCP_PORT=$(free_port)
      storescp --fork -aet STORESCP -od "$SCP_DIR" "$SCP_PORT" &
      SCP_PID=$!
      sleep 0.5
      CS_N[$n]+="$(send_many "$SCP_PORT" STORESCP "$n") "
      kill "$SCP_PID"; wait "$SCP_PID" 2>/dev/null || true
      got=$(count "$SCP_DIR")
      [ "$got" -eq $((n * PER_SENDER)) ] || { echo "storescp stored $got of $((n * PER_SENDER))"; exit 1; }
    done
  done
  printf '\nConcurrent senders (each %d CT slices, own association), %d rounds, median; fsync=%s\n' "$PER_SENDER" "$ROUNDS" "$FSYNC"
  printf '| senders | instances | triage-node s | inst/s | storescp --fork s | inst/s | node/storescp | rows per commit | node CPU ms/instance | node peak RSS MB |\n|---|---|---|---|---|---|---|---|---|---|\n'
  for n in $CONCURRENCY; do
    tn=$(echo "${CT_N[$n]}" | median); ts=$(echo "${CS_N[$n]}" | median)
    printf '| %d | %d | %.2f | %.0f | %.2f | %.0f | %.2f | %s | %.2f | %.1f |\n' "$n" $((n * PER_SENDER)) "$tn" "$(echo "$n * $PER_SENDER / $tn" | bc -l)" \
      "$ts" "$(echo "$n * $PER_SENDER / $ts" | bc -l)" "$(echo "$ts / $tn" | bc -l)" "$(echo "${BATCH_N[$n]}" | median)" "$(echo "${CPU_N[$n]}" | median)" "$(echo "$(echo "${RSS_N[$n]}" | median) / 1024" | bc -l)"
  done
  if [ -n "${BEFORE_BIN:-}" ]; then
    for n in $CONCURRENCY; do
      tb=$(echo "${CB_N[$n]}" | median); ts=$(echo "${CS_N[$n]}" | median)
      printf 'before, %d senders: %.2f s (%.0f inst/s), node/storescp %.2f, node CPU %.2f ms/instance\n' "$n" "$tb" "$(echo "$n * $PER_SENDER / $tb" | bc -l)" "$(echo "$ts / $tb" | bc -l)" "$(echo "${CPUB_N[$n]}" | median)"
    done
  fi
fi

# The same CT set into the node on PostgreSQL and on SQLite, interleaved.
if [ "$PG" = true ] && command -v psql >/dev/null && pg_isready -q -h 127.0.0.1 -p 5432; then
  declare -A PGT
  for r in $(seq "$ROUNDS"); do
    db="bench_ingest_$r"
    psql -q "$PG_ADMIN" -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db" >/dev/null
    start_node "$WORK/pg-node-$r" "$BIN" "${PG_ADMIN%/*}/$db"
    PGT[pg]+="$(send "$NODE_PORT" TRIAGE "$WORK/corpus/ct") "
    stop_node
    psql -q "$PG_ADMIN" -c "DROP DATABASE $db" >/dev/null
    start_node "$WORK/sq-node-$r"
    PGT[sqlite]+="$(send "$NODE_PORT" TRIAGE "$WORK/corpus/ct") "
    stop_node
  done
  tp=$(echo "${PGT[pg]}" | median); tq=$(echo "${PGT[sqlite]}" | median)
  printf '\nPostgreSQL: %d CT slices, one association, median of %d: PostgreSQL %.2f s (%.0f/s), SQLite %.2f s (%.0f/s): PostgreSQL/SQLite throughput %.2f\n' \
    "$CT" "$ROUNDS" "$tp" "$(echo "$CT / $tp" | bc -l)" "$tq" "$(echo "$CT / $tq" | bc -l)" "$(echo "$tq / $tp" | bc -l)"
fi

# One ~200 MB instance: peak RSS above the idle process.
start_node "$WORK/node-big"
storescu -aet STORESCU -aec TRIAGE 127.0.0.1 "$NODE_PORT" --repeat 1 >/dev/null 2>&1 || true  # warm the listener
IDLE=$(rss_kb "$NODE_PID")
t=$(send "$NODE_PORT" TRIAGE "$WORK/corpus/big")
PEAK=$(hwm_kb "$NODE_PID")
stop_node
printf '200 MB instance (%s MB): %.2f s; idle RSS %.1f MB, peak RSS %.1f MB, peak above idle %.1f MB\n' \
  "$(du -sb "$WORK/corpus/big" | awk '{printf "%.1f", $1/1e6}')" "$t" "$(echo "$IDLE/1024" | bc -l)" "$(echo "$PEAK/1024" | bc -l)" "$(echo "($PEAK-$IDLE)/1024" | bc -l)"
# Store folders are removed at the end, not between runs: ext4 skips inodes freed in the last
# few seconds when it allocates new ones, so a run right after a large delete is slower.
rm -rf "$WORK"/node-* "$WORK"/before-* "$WORK"/base-* "$WORK"/storescp-* "$WORK"/par-* "$WORK"/pg-node-* "$WORK"/sq-node-*
