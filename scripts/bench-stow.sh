#!/usr/bin/env bash
# STOW-RS ingest benchmark (not a test): the same 300 CT slices (scripts/make-bench-corpus.py,
# 512x512x16 bit, one study) into a fresh node, in ROUNDS rounds, each round all three ways in turn:
#   cstore   DCMTK storescu, one association (the Storage SCP path)
#   stow     one STOW-RS request, streamed (chunked, a file at a time; tests/peers/stow_client.py post)
#   client   PyPI dicomweb-client store_instances, one request (it builds the body in memory)
# Median and spread (min-max) of the wall time and instances/s, and an fdatasync probe of the
# data directory's disk (every instance is synced before its answer, so that bounds both).
#   scripts/bench-stow.sh [ROUNDS]   (env: CT=300 FSYNC=true BIN=path/to/triage-node)
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}; CT=${CT:-300}; FSYNC=${FSYNC:-true}
export TCP_NODELAY=1
unset RUST_BACKTRACE RUST_LIB_BACKTRACE
scripts/setup-test-env.sh >/dev/null
export LIBTORCH="$(.venv/bin/python -c 'import os, torch; print(os.path.dirname(torch.__file__))')"
WORK=${BENCH_DIR:-$PWD/.bench}
# BIN: another build to measure (a smoke run of this script with the debug build); else release.
if [ -z "${BIN:-}" ]; then
  cargo build --release --locked -q
  BIN=$PWD/target/release/triage-node
fi
CORPUS=$WORK/stow-corpus
if [ "$(cat "$CORPUS/VERSION" 2>/dev/null)" != "$CT" ]; then
  echo "bench: generating $CT CT slices in $CORPUS"
  rm -rf "$CORPUS"
  .venv/bin/python scripts/make-bench-corpus.py "$CORPUS" --ct "$CT" --dx 0 --no-big
  echo "$CT" > "$CORPUS/VERSION"
fi
TOKEN=bench-stow-token-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')
export TRIAGE_HTTP_TOKENS="bench-gateway:modality:$TOKEN"

now() { date +%s.%N; }
start_node() {  # $1 = dir; sets NODE_PID NODE_PORT HTTP_PORT
  local dir=$1
  rm -rf "$dir"; mkdir -p "$dir"
  cat > "$dir/node.toml" <<TOML
[dicom]
bind = "127.0.0.1"
port = 0
[storage]
data_dir = "$dir/data"
min_free_disk = "0"
fsync = $FSYNC
[deid]
demo_keys = true
[inference]
models_dir = "$dir/no-models"
[http]
port = 0
request_timeout = "600s"
[log]
level = "warn"
TOML
  TRIAGE__LOG__LEVEL=info "$BIN" --config "$dir/node.toml" ae add STORESCU >/dev/null
  TRIAGE__LOG__LEVEL=info "$BIN" --config "$dir/node.toml" serve 2> "$dir/node.log" &
  NODE_PID=$!
  NODE_PORT=""; HTTP_PORT=""
  for _ in $(seq 100); do
    NODE_PORT=$(grep -so 'listening port=[0-9]*' "$dir/node.log" | cut -d= -f2 || true)
    HTTP_PORT=$(grep -so 'http_port=[0-9]*' "$dir/node.log" | cut -d= -f2 || true)
    [ -n "$NODE_PORT" ] && [ -n "$HTTP_PORT" ] && break; sleep 0.1
  done
  [ -n "$HTTP_PORT" ] || { cat "$dir/node.log"; exit 1; }
}
stop_node() { kill -TERM "$NODE_PID"; wait "$NODE_PID" 2>/dev/null || true; }
stored() { find "$1/data/store" -type f 2>/dev/null | wc -l; }

run() {  # $1 = way -> prints seconds; checks that every slice was stored
  local dir=$WORK/stow-node t0 t1 out
  start_node "$dir"
  sync; sleep 0.5
  t0=$(now)
  case $1 in
    cstore) storescu -R -xe -aet STORESCU -aec TRIAGE +sd 127.0.0.1 "$NODE_PORT" "$CORPUS/ct" 2> "$WORK/storescu.log" || { cat "$WORK/storescu.log"; exit 1; } ;;
    stow) out=$(.venv/bin/python tests/peers/stow_client.py post "http://127.0.0.1:$HTTP_PORT/dicomweb" "$TOKEN" "$CORPUS/ct")
          [[ $out == "HTTP 200 stored=$CT failed=0" ]] || { echo "stow: $out" >&2; exit 1; } ;;
    client) out=$(.venv/bin/python tests/peers/stow_client.py store "http://127.0.0.1:$HTTP_PORT/dicomweb" "$TOKEN" "$CORPUS"/ct/*)
          [[ $out == \{* ]] || { echo "client: $out" >&2; exit 1; } ;;
  esac
  t1=$(now)
  local n; n=$(stored "$dir")
  stop_node
  [ "$n" = "$CT" ] || { echo "$1: $n of $CT stored" >&2; exit 1; }
  echo "$t1 - $t0" | bc -l
}

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
spread() { tr ' ' '\n' | grep -v '^$' | sort -g | awk 'NR==1 {lo=$1} {hi=$1} END {printf "%.2f-%.2f", lo, hi}'; }

declare -A T
for r in $(seq "$ROUNDS"); do
  for way in cstore stow client; do
    T[$way]+="$(run $way) "
  done
  echo "bench: round $r done" >&2
done

# fdatasync probe: 100 x (write 512 KiB, fdatasync) in the data directory's file system.
probe=$(.venv/bin/python - "$WORK" <<'PY'
import os, sys, time, statistics
path = os.path.join(sys.argv[1], "fdatasync-probe")
buf = os.urandom(512 * 1024)
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
times = []
for _ in range(100):
    os.write(fd, buf)
    t = time.perf_counter(); os.fdatasync(fd); times.append((time.perf_counter() - t) * 1000)
os.close(fd); os.remove(path)
print(f"{statistics.median(times):.2f} ms median, {max(times):.2f} ms max")
PY
)

printf '\nSTOW-RS vs C-STORE: %d CT slices (512x512x16 bit, %s), %d rounds; fsync=%s; %s cores\n' \
  "$CT" "$(du -sh "$CORPUS/ct" | cut -f1)" "$ROUNDS" "$FSYNC" "$(nproc)"
printf 'fdatasync probe (512 KiB writes): %s\n\n' "$probe"
printf '| way | median s | spread s | instances/s (median) |\n|---|---|---|---|\n'
for way in cstore stow client; do
  m=$(echo "${T[$way]}" | median)
  printf '| %s | %.2f | %s | %.0f |\n' "$way" "$m" "$(echo "${T[$way]}" | spread)" "$(echo "$CT / $m" | bc -l)"
done
