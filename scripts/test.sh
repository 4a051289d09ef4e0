#!/usr/bin/env bash
# The test command (README): installs what the tests need on a fresh machine, then runs the
# whole suite: unit tests, and integration tests that launch the real binary against DCMTK,
# pynetdicom, SQLite and PostgreSQL.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v cargo >/dev/null || { echo "test.sh: cargo not found; install Rust with rustup first" >&2; exit 1; }
scripts/setup-test-env.sh
# libtorch for tch: the one in the venv's PyTorch wheel (its folders end up on the binary's rpath).
export LIBTORCH="$(.venv/bin/python -c 'import os, torch; print(os.path.dirname(torch.__file__))')"

# PostgreSQL for the shared-store tests (127.0.0.1:5432, trust auth, database `test`).
if command -v pg_isready >/dev/null && ! pg_isready -q -h 127.0.0.1 -p 5432; then
  if command -v pg_ctlcluster >/dev/null; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
  fi
fi

# Gates: the code is formatted as rustfmt.toml says, and lints clean (every clippy warning is an
# error). Both come with the toolchain (rustup's default profile).
command -v rustfmt >/dev/null && cargo clippy --version >/dev/null 2>&1 || { echo "test.sh: rustfmt and clippy are needed (rustup component add rustfmt clippy)" >&2; exit 1; }
cargo fmt --all --check
cargo build --locked --all-targets
cargo clippy --locked --all-targets -- -D warnings
cargo test --locked -- --test-threads 2
# Every fuzz target over its seeds and past findings, then a short mutation run (the long runs
# are scripts/fuzz.sh's job).
scripts/fuzz.sh smoke
