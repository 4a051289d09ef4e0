#!/usr/bin/env bash
# Similar-case lookup benchmark (not a test): for each size in SIZES (default 10000 100000) and
# each engine (SQLite in a fresh data directory, PostgreSQL in a fresh database on
# 127.0.0.1:5432), `triage-node bench-similar` seeds that many confirmed studies with synthetic
# E-dimensional embeddings (clustered: 256 directions plus noise), waits until no row is young
# (a warm refresh then reads only what is new, as in steady state), and times, ROUNDS times per
# method (exact, HNSW), the first lookup on an empty cache (every embedding and confirmation
# read; HNSW: the index built) and WARM warm lookups of other studies (the study's embedding, the
# incremental refresh, the search for the 15 candidates a k = 5 lookup takes). Prints medians
# over the rounds with the spread (min-max), and HNSW's recall of the exact 15.
# The per-candidate row checks and the audit entry of a real lookup cost the same at any size
# and are not included. Synthetic rows only.
#   scripts/bench-similar.sh [ROUNDS]   (env: SIZES="10000 100000" DIMS=128 WARM=20
#                                        ENGINES="sqlite postgresql"; NODE_BIN=path runs that build)
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
SIZES=${SIZES:-10000 100000}; DIMS=${DIMS:-128}; WARM=${WARM:-20}; ENGINES=${ENGINES:-sqlite postgresql}
PG_ADMIN=${TRIAGE_TEST_POSTGRES:-postgres://postgres@127.0.0.1:5432/test}
unset RUST_BACKTRACE RUST_LIB_BACKTRACE

scripts/setup-test-env.sh >/dev/null
export LIBTORCH="$(.venv/bin/python -c 'import os, torch; print(os.path.dirname(torch.__file__))')"
if [ -n "${NODE_BIN:-}" ]; then BIN=$(realpath "$NODE_BIN"); else cargo build --release --locked -q; BIN=$PWD/target/release/triage-node; fi
WORK=${BENCH_DIR:-$PWD/.bench}/similar
rm -rf "$WORK"; mkdir -p "$WORK"
DATABASES=()
psql_admin() { psql "$PG_ADMIN" -q -c "$1" >/dev/null; }
cleanup() { for name in "${DATABASES[@]}"; do psql_admin "DROP DATABASE IF EXISTS $name WITH (FORCE)" || true; done; }
trap cleanup EXIT

for size in $SIZES; do
  for engine in $ENGINES; do
    d=$WORK/$engine-$size; mkdir -p "$d"
    url=""
    if [ "$engine" = postgresql ]; then
      name=bench_similar_$RANDOM$RANDOM
      psql_admin "CREATE DATABASE $name"; DATABASES+=("$name")
      url="${PG_ADMIN%/*}/$name"
    fi
    cat > "$d/node.toml" <<TOML
[storage]
data_dir = "$d/data"
min_free_disk = "0"
[database]
url = "$url"
[deid]
demo_keys = true
[inference]
models_dir = "$d/no-models"
device = "cpu"
[log]
level = "warn"
TOML
    echo "bench: $engine, $size studies, E = $DIMS" >&2
    "$BIN" --config "$d/node.toml" bench-similar --studies "$size" --dims "$DIMS" --rounds "$ROUNDS" --warm "$WARM" > "$d/result.json"
  done
done

.venv/bin/python - "$WORK" "$ROUNDS" "$WARM" <<'PY'
import glob, json, statistics, sys
work, rounds, warm = sys.argv[1], sys.argv[2], sys.argv[3]
runs = sorted((json.load(open(f)) for f in glob.glob(work + "/*/result.json")), key=lambda r: (r["studies"], r["engine"]))
def cell(values):
    return f"{statistics.median(values):.1f} ({min(values):.1f}-{max(values):.1f})"
print()
print(f"## similar-case lookup, ms: median of {rounds} rounds (min-max); warm = the median of {warm} lookups per round")
print("| studies | engine | method | first lookup | of which reading | warm lookup | of which search | recall@15 |")
print("|---|---|---|---|---|---|---|---|")
for r in runs:
    for method in ("exact", "hnsw"):
        t = r[method]
        recall = f"{r['hnsw_recall']:.3f}" if method == "hnsw" else "1"
        print(f"| {r['studies']:,} | {r['engine']} | {method} | {cell(t['first_ms'])} | {cell(t['first_load_ms'])} | "
              f"{cell(t['warm_ms'])} | {cell(t['warm_search_ms'])} | {recall} |")
print()
print("seeding (s): " + ", ".join(f"{r['engine']} {r['studies']:,}: {r['seed_s']:.0f}" for r in runs))
PY
