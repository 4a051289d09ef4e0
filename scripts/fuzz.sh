#!/usr/bin/env bash
# Fuzzes every parser a peer reaches: the fuzz targets in tests/fuzz (cargo-fuzz, libFuzzer).
#
#   scripts/fuzz.sh                  every target to 10 million executions (the release bar)
#   RUNS=N scripts/fuzz.sh [T ...]   the named targets (default: all) to N executions each
#   scripts/fuzz.sh smoke            CI: every target over its seeds and past findings
#                                    (tests/fuzz/regressions), then 20,000 new executions
#
# Prints one row per target: executions, seconds, executions per second, corpus size, and what
# it found. New findings land in tests/fuzz/artifacts/<target>/; the growing corpus in
# tests/fuzz/work/<target>/ (both ignored by git; copy what matters into regressions/).
# Needs the test environment (scripts/setup-test-env.sh: the venv's libtorch, which the node
# links) and installs the pinned cargo-fuzz if it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
CARGO_FUZZ_VERSION=0.13.2
TARGETS=(association_request message_stream command_set dataset_scan deidentify query_identifier commitment_report multipart_body)

mode=${1:-full}
if [ "$mode" = smoke ]; then
  shift
  RUNS=${RUNS:-20000}
else
  [ "$mode" = full ] && shift || true
  RUNS=${RUNS:-10000000}
fi
[ $# -gt 0 ] && TARGETS=("$@")

[ -x .venv/bin/python ] || scripts/setup-test-env.sh
export LIBTORCH="$(.venv/bin/python -c 'import os, torch; print(os.path.dirname(torch.__file__))')"
export LD_LIBRARY_PATH="$LIBTORCH/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
if [ "$(cargo fuzz --version 2>/dev/null | awk '{print $2}')" != "$CARGO_FUZZ_VERSION" ]; then
  echo "fuzz: installing cargo-fuzz $CARGO_FUZZ_VERSION" >&2
  cargo install --locked --quiet cargo-fuzz --version "$CARGO_FUZZ_VERSION"
fi

cd tests/fuzz
# libFuzzer's instrumentation needs nightly flags; RUSTC_BOOTSTRAP lets this stable toolchain
# take them. No sanitizer: the code is safe Rust, and what we look for is panics, aborts,
# stack overflows, unbounded memory and failed properties.
RUSTC_BOOTSTRAP=1 cargo fuzz build --fuzz-dir . -s none -O --debug-assertions >&2
BIN=target/x86_64-unknown-linux-gnu/release

printf '%-20s %12s %8s %10s %7s  %s\n' target executions seconds exec/s corpus found
failed=0
for t in "${TARGETS[@]}"; do
  mkdir -p "work/$t" "artifacts/$t"
  log=$(mktemp)
  start=$(date +%s.%N)
  status=0
  if [ "$mode" = smoke ]; then
    # Every committed input once (seeds and past findings), then a short mutation run.
    inputs=(corpus/$t/*)
    [ -d "regressions/$t" ] && inputs+=(regressions/$t/*)
    "$BIN/$t" -rss_limit_mb=2048 -timeout=10 "${inputs[@]}" >"$log" 2>&1 || status=$?
  fi
  if [ $status -eq 0 ]; then
    "$BIN/$t" -runs="$RUNS" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 -artifact_prefix="artifacts/$t/" "work/$t" "corpus/$t" >>"$log" 2>&1 || status=$?
  fi
  secs=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | awk '{print $2}' | tail -1)
  runs=${runs:-0}
  found="nothing"
  if [ $status -ne 0 ]; then
    found="FAILED (exit $status): $(grep -m1 -E 'panicked|ERROR: libFuzzer' "$log" || echo see log) -> $(ls artifacts/$t | head -1)"
    failed=1
    cp "$log" "artifacts/$t/last.log"
  fi
  printf '%-20s %12s %8.0f %10.0f %7s  %s\n' "$t" "$runs" "$secs" "$(awk -v r="$runs" -v s="$secs" 'BEGIN { printf "%.0f", r / (s + 0.001) }')" "$(ls work/$t | wc -l)" "$found"
  rm -f "$log"
done
exit $failed
