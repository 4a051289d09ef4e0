#!/usr/bin/env bash
# The CUDA checks (issue 37), for ONE short run on a machine with an NVIDIA GPU (about 10
# minutes): the card, the node's outputs on cuda:0 against the CPU, then the GPU benchmark.
#   1. nvidia-smi: card, driver, CUDA; libtorch (the venv's torch) must see a CUDA device.
#   2. cargo build --release --locked (and the integration test binary).
#   3. the engine on cuda:0 against the CPU, demo-nodule and demo-ct-hyperdense, one batch of 8,
#      probabilities and class activation maps: fp32 within 1e-4, fp16 (allow_half) within 1e-2
#      (the CUDA test cuda_outputs_match_the_cpu, TRIAGE_TEST_CUDA=1: it fails without a GPU).
#   4. `triage-node infer` on the demo cases (.testdata/demo-cases) with
#      TRIAGE__INFERENCE__DEVICE=cpu and cuda:0 (fp32, then fp16): every file's probabilities
#      within 1e-4 (fp32) and 1e-2 (fp16) of the CPU's.
#   5. scripts/bench-infer.sh GPU=only: the node against Python torch on cuda:0, batch 1, 8, 32,
#      fp32 and fp16.
# Needs what scripts/setup-test-env.sh makes (.venv with torch 2.13.0 built for CUDA, .testdata);
# it does not run it (the GPU machine may have no network). SKIP_BENCH=1: steps 1-4 only.
# Exits 2, before building anything, where there is no usable GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
fail() { echo "gpu-check: $*" >&2; exit 2; }

command -v nvidia-smi >/dev/null || fail "no GPU: nvidia-smi is not installed (no NVIDIA driver on this machine); run this on a machine with an NVIDIA GPU"
nvidia-smi -L >/dev/null 2>&1 && [ -n "$(nvidia-smi -L 2>/dev/null)" ] || fail "no GPU: nvidia-smi lists no device"
echo "== card, driver, CUDA"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
nvidia-smi | grep -o 'CUDA Version: [0-9.]*' || true
[ -x .venv/bin/python ] || fail ".venv is missing: run scripts/setup-test-env.sh first (it installs torch, whose libtorch the node links)"
.venv/bin/python - <<'PY' || fail "the venv's torch sees no CUDA device (a CPU-only wheel, or a driver too old for its CUDA)"
import sys, torch
print(f"torch {torch.__version__}, built for CUDA {torch.version.cuda}, {torch.cuda.device_count()} device(s): {torch.cuda.get_device_name(0) if torch.cuda.is_available() else '-'}")
sys.exit(0 if torch.cuda.is_available() else 1)
PY
[ -d .testdata/demo-cases ] || fail ".testdata/demo-cases is missing: run scripts/setup-test-env.sh first"

export LIBTORCH="$PWD/.venv/lib/python3.11/site-packages/torch"
export LD_LIBRARY_PATH="$LIBTORCH/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
unset RUST_BACKTRACE RUST_LIB_BACKTRACE
echo "== build"
cargo build --release --locked -q
BIN=$PWD/target/release/triage-node

echo "== engine on cuda:0 against the CPU (probabilities and CAM; fp32 1e-4, fp16 1e-2)"
TRIAGE_TEST_CUDA=1 cargo test --release --locked -q --test it torch_runtime::cuda_outputs_match_the_cpu -- --nocapture 2>&1 | grep -E 'gpu-check|test result|panicked|differs' || { echo "gpu-check: FAILED: cuda:0 outputs differ from the CPU's (above)" >&2; exit 1; }

echo "== triage-node infer on the demo cases: cuda:0 against the CPU"
WORK=$(mktemp -d); trap 'rm -rf "$WORK"' EXIT
for prec in fp32 fp16; do
  mkdir -p "$WORK/$prec"
  for m in demo-nodule demo-ct-hyperdense; do
    cp -r "models/$m" "$WORK/$prec/"
    sed -i "1i allow_half = $([ $prec = fp16 ] && echo true || echo false)" "$WORK/$prec/$m/model.toml"
  done
done
infer() {  # models device out
  TRIAGE__STORAGE__DATA_DIR="$WORK/data" TRIAGE__INFERENCE__MODELS_DIR="$1" TRIAGE__INFERENCE__DEVICE="$2" \
    "$BIN" infer .testdata/demo-cases >"$3" 2>"$3.log" || { cat "$3.log" >&2; echo "gpu-check: FAILED: infer on $2" >&2; exit 1; }
  grep -q "inference device: $2" "$3.log" || { cat "$3.log" >&2; echo "gpu-check: FAILED: the log does not say inference device: $2" >&2; exit 1; }
}
infer "$WORK/fp32" cpu "$WORK/cpu.jsonl"
infer "$WORK/fp32" cuda:0 "$WORK/cuda-fp32.jsonl"
infer "$WORK/fp16" cuda:0 "$WORK/cuda-fp16.jsonl"
.venv/bin/python - "$WORK" <<'PY'
import json, sys
work = sys.argv[1]
def read(name):
    out = {}
    for line in open(f"{work}/{name}.jsonl"):
        r = json.loads(line)
        for m in r["results"]:
            for f in m["findings"]:
                out[(r["file"], m["model"], f["label"])] = f["probability"]
    return out
cpu = read("cpu")
assert cpu, "no findings on the CPU: the demo cases reached no model"
bad = False
for name, tol in [("cuda-fp32", 1e-4), ("cuda-fp16", 1e-2)]:
    got = read(name)
    assert got.keys() == cpu.keys(), f"{name}: other findings than the CPU's"
    worst = max(abs(got[k] - cpu[k]) for k in cpu)
    ok = worst <= tol
    bad |= not ok
    print(f"gpu-check {name}: {len(cpu)} probabilities, largest difference from the CPU {worst:.2e} (tolerance {tol:g}) {'ok' if ok else 'FAILED'}")
sys.exit(1 if bad else 0)
PY

if [ "${SKIP_BENCH:-0}" != 1 ]; then
  echo "== benchmark: the node against Python torch on cuda:0"
  NODE_BIN=$BIN GPU=only SETUP=0 BATCHES="1 8 32" scripts/bench-infer.sh "${BENCH_IMAGES:-96}"
fi
echo "gpu-check: done"
