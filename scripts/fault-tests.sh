#!/usr/bin/env bash
# Fault tests (scripts, not timed tests): the node under real faults, release build.
#   scripts/fault-tests.sh [disk-full] [postgres] [sigkill] [sigkill-concurrent] [--kills N] [--seed S]
#     disk-full  data directory on a 48 MiB tmpfs filled up mid-transfer (needs root for mount)
#     postgres   PostgreSQL (127.0.0.1:5432, trust auth) restarted during ingest (pg_ctlcluster)
#     sigkill    SIGKILL at random points, 20 times by default, during ingest + inference +
#                delivery to a DCMTK storescp
#     sigkill-concurrent  SIGKILL at random points while 6 associations store at once (their rows
#                share group commits): nothing acknowledged lost, every row's file whole
# Each check prints PASS or FAIL; the exit status is non-zero if any failed. See
# scripts/fault_tests.py for what each one asserts.
set -euo pipefail
cd "$(dirname "$0")/.."
export TCP_NODELAY=1
scripts/setup-test-env.sh >/dev/null
export LIBTORCH="$(.venv/bin/python -c 'import os, torch; print(os.path.dirname(torch.__file__))')"
cargo build --release --locked -q
exec .venv/bin/python scripts/fault_tests.py "$@"
