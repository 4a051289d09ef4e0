#!/usr/bin/env bash
# Inference benchmark (not a test): per-image latency and images/s on the CPU, at batch 1 and
# batched, for the demo model (128x128) and a DenseNet-121-sized model (224x224, random
# weights, the common chest X-ray architecture), each file triaged end to end (read, decode,
# Modality LUT, window, resize, forward). The same TorchScript file is driven from Python in
# the same run (pydicom + numpy + torch preprocessing, torch.jit.load), with the same number of
# torch threads.
#   scripts/bench-infer.sh [IMAGES]      (default 32 chest CR files of 512 rows, demo cases, cycled)
#   TORCH_THREADS=N scripts/bench-infer.sh   the node's inference.torch_threads (default 0: cores - 1)
#   NODE_BIN=path/to/triage-node scripts/bench-infer.sh   another build of the node
#   ONNX=only scripts/bench-infer.sh   just the ONNX table (ONNX=0: without it)
# The ONNX table: each model's ONNX twin (bench_infer.py onnx: torch.onnx.export of the same
# TorchScript file, a package of its own) through the node (ONNX Runtime 1.31.1, CPU provider,
# the wheel's library) against the node's TorchScript package and Python onnxruntime, same files.
# With a CUDA GPU, also the node on cuda:0 in fp32 and fp16 (allow_half) against Python torch on
# the same GPU (same precision), at each batch of BATCHES (default "1 8").
#   GPU=only scripts/bench-infer.sh   just the CUDA table (no CPU or ONNX tables)
#   SETUP=0 scripts/bench-infer.sh    skip scripts/setup-test-env.sh (a machine already set up)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-32}
unset RUST_BACKTRACE RUST_LIB_BACKTRACE
[ "${SETUP:-1}" = 0 ] || scripts/setup-test-env.sh >/dev/null
[ "${GPU:-}" = only ] && ONNX=0
BATCHES=${BATCHES:-1 8}
export LIBTORCH="$(.venv/bin/python -c 'import os, torch; print(os.path.dirname(torch.__file__))')"
# NODE_BIN: another build of the node (e.g. an earlier commit's) for an A/B run.
if [ -n "${NODE_BIN:-}" ]; then BIN=$NODE_BIN; else cargo build --release --locked -q; BIN=$PWD/target/release/triage-node; fi
WORK=${BENCH_DIR:-$PWD/.bench}/infer
mkdir -p "$WORK"
[ -f "$WORK/models/densenet121-random/model.pt" ] || .venv/bin/python scripts/bench_infer.py densenet "$WORK/models/densenet121-random"
rm -rf "$WORK/models/demo-nodule" && cp -r models/demo-nodule "$WORK/models/"
# The ONNX twins live in a folder of their own, so the TorchScript figures load no ONNX model.
ONNX_MODELS=$WORK/onnx-models
if [ "${ONNX:-1}" != 0 ]; then
  for m in demo-nodule densenet121-random; do
    if [ ! -f "$ONNX_MODELS/$m-onnx/model.onnx" ] || [ "$WORK/models/$m/model.pt" -nt "$ONNX_MODELS/$m-onnx/model.onnx" ]; then
      echo "bench: $m exported to ONNX, largest difference from TorchScript $(.venv/bin/python scripts/bench_infer.py onnx "$WORK/models/$m" "$ONNX_MODELS/$m-onnx")"
    fi
  done
fi
# The demo cases, cycled to N files (a few hundred images make the figures steadier).
mapfile -t CASES < <(ls .testdata/demo-cases/case*.dcm)
FILES=(); for i in $(seq 0 $((N - 1))); do FILES+=("${CASES[$((i % ${#CASES[@]}))]}"); done
THREADS=$(.venv/bin/python -c 'import torch; print(torch.get_num_threads())')
echo "bench: ${#FILES[@]} chest CR files (512 rows, explicit VR LE), $(nproc) cores; Python torch threads $THREADS; node inference.torch_threads ${TORCH_THREADS:-0} (0: cores - 1), OMP_WAIT_POLICY ${OMP_WAIT_POLICY:-unset}"

rust() {  # model batch [device]
  TRIAGE__INFERENCE__MODELS_DIR="${MODELS:-$WORK/models}" TRIAGE__INFERENCE__DEVICE="${3:-cpu}" TRIAGE__INFERENCE__TORCH_THREADS="${TORCH_THREADS:-0}" "$BIN" bench-infer --model "$1" --batch "$2" "${FILES[@]}"
}
python() {  # model size batch
  .venv/bin/python scripts/bench_infer.py run "$WORK/models/$1/model.pt" "$2" "$3" "${FILES[@]}"
}
field() { .venv/bin/python -c "import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])" "$1" "$2"; }

if [ "${ONNX:-1}" != only ] && [ "${GPU:-}" != only ]; then
printf '\n| model | batch | triage-node ms/image | img/s | preprocessing share | batch run | Python ms/image | img/s | preprocessing share | speed ratio |\n|---|---|---|---|---|---|---|---|---|---|\n'
for spec in "demo-nodule 128" "densenet121-random 224"; do
  set -- $spec
  for batch in $BATCHES; do
    r=$(rust "$1" "$batch"); p=$(python "$1" "$2" "$batch")
    .venv/bin/python - "$1" "$batch" "$r" "$p" <<'PY'
import json, sys
m, b, r, p = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), json.loads(sys.argv[4])
share = lambda x: x["preprocess_s"] / x["total_s"]
print(f"| {m} | {b} | {r['ms_per_image']:.2f} | {r['images_per_s']:.1f} | {share(r):.0%} | {r.get('mean_batch_run', float('nan')):.1f} | {p['ms_per_image']:.2f} | {p['images_per_s']:.1f} | {share(p):.0%} | {r['images_per_s'] / p['images_per_s']:.2f} |")
PY
  done
done
fi

if [ "${ONNX:-1}" != 0 ]; then
  printf '\nONNX (the same model exported; ms per image end to end, and of it the forward pass; CPU):\n| model | batch | node TorchScript | forward | node ONNX Runtime | forward | Python onnxruntime | forward | node ONNX / Python speed |\n|---|---|---|---|---|---|---|---|---|\n'
  for spec in "demo-nodule 128" "densenet121-random 224"; do
    set -- $spec
    for batch in $BATCHES; do
      t=$(rust "$1" "$batch"); o=$(MODELS=$ONNX_MODELS rust "$1-onnx" "$batch")
      p=$(.venv/bin/python scripts/bench_infer.py run "$ONNX_MODELS/$1-onnx/model.onnx" "$2" "$batch" "${FILES[@]}")
      .venv/bin/python - "$1" "$batch" "$t" "$o" "$p" <<'PY'
import json, sys
m, b, t, o, p = sys.argv[1], sys.argv[2], *(json.loads(x) for x in sys.argv[3:])
fwd = lambda x: x["forward_s"] * 1000 / x["images"]
print(f"| {m} | {b} | {t['ms_per_image']:.2f} | {fwd(t):.2f} | {o['ms_per_image']:.2f} | {fwd(o):.2f} | {p['ms_per_image']:.2f} | {fwd(p):.2f} | {o['images_per_s'] / p['images_per_s']:.2f} |")
PY
    done
  done
fi

if "$BIN" bench-infer --help >/dev/null 2>&1 && .venv/bin/python -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  printf '\nCUDA (cuda:0; ms per image end to end, and of it the forward pass):\n| model | batch | precision | triage-node ms/image | forward | img/s | Python torch ms/image | forward | img/s | speed ratio |\n|---|---|---|---|---|---|---|---|---|---|\n'
  for spec in "demo-nodule 128" "densenet121-random 224"; do
    set -- $spec; model=$1
    for batch in $BATCHES; do
      for half in false true; do
        sed -i "s/^allow_half = .*/allow_half = $half/" "$WORK/models/$model/model.toml" 2>/dev/null || true
        grep -q '^allow_half' "$WORK/models/$model/model.toml" || sed -i "1a allow_half = $half" "$WORK/models/$model/model.toml"
        r=$(rust "$model" "$batch" cuda:0)
        p=$(BENCH_DEVICE=cuda:0 BENCH_HALF=$([ $half = true ] && echo 1 || echo 0) python "$model" "$2" "$batch")
        .venv/bin/python - "$model" "$batch" "$([ $half = true ] && echo fp16 || echo fp32)" "$r" "$p" <<'PY'
import json, sys
m, b, prec, r, p = *sys.argv[1:4], *(json.loads(x) for x in sys.argv[4:])
fwd = lambda x: x["forward_s"] * 1000 / x["images"]
print(f"| {m} | {b} | {prec} | {r['ms_per_image']:.2f} | {fwd(r):.2f} | {r['images_per_s']:.1f} | {p['ms_per_image']:.2f} | {fwd(p):.2f} | {p['images_per_s']:.1f} | {r['images_per_s'] / p['images_per_s']:.2f} |")
PY
      done
    done
  done
fi
