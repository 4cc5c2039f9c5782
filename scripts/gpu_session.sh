#!/usr/bin/env bash
# The prepared GPU session that produced BENCHMARKS.md's GPU figures (sections 6, 8), as one call within a time
# budget, on an offline GPU machine whose python3 has torch/transformers/accelerate/sentence-transformers:
#   1. the kit in $KIT (default .gpu-kit, an ignored folder you fill: its setup.sh, the wheels the machine lacks,
#      and extra/ with the ir-measures and pytrec-eval-terrier wheels);
#   2. scripts/gpu_check.sh (= make bench-gpu): ours vs sentence-transformers, ZeRO-2/3, the default recipe;
#   3. the cross-encoder teacher (make teacher), then benchmarks/methods.py (both settings) until the deadline.
#     BUDGET=540 bash scripts/gpu_session.sh [gpu.py options]
# Result files are copied to $OUT (the device tool's return folder) whatever happens.
set -uo pipefail
cd "$(dirname "$0")/.."
deadline=$((SECONDS + ${BUDGET:-540}))
KIT=${KIT:-.gpu-kit}
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT" outputs
collect() { cp benchmarks/results/*.jsonl outputs/*.log "$OUT/" 2>/dev/null; true; }
trap collect EXIT
[ -f "$KIT/setup.sh" ] || { echo "no GPU kit at $KIT (set KIT=folder with setup.sh)" >&2; exit 2; }
source "$KIT/setup.sh" . || exit 1
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "$KIT"/extra/*.whl || exit 1
export PY=python3 HF_DATASETS_CACHE=$PWD/outputs/hf-datasets-cache
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, transformers, accelerate, sentence_transformers as st, deepspeed; print('torch', torch.__version__, 'transformers', transformers.__version__, 'accelerate', accelerate.__version__, 'sentence-transformers', st.__version__, 'deepspeed', deepspeed.__version__)"
quiet() { grep -v "it/s\]\|s/it\]\|batch/s\]\|examples/s\]\|Warning\|warn\|train_runtime\|^\s*$"; }

start=$SECONDS
timeout $((deadline - SECONDS - 200)) bash scripts/gpu_check.sh "$@" > outputs/gpu_check.log 2>&1
check=$?
quiet < outputs/gpu_check.log | tail -25
echo "== gpu_check: exit $check, $((SECONDS - start)) s"

start=$SECONDS
timeout $((deadline - SECONDS - 150)) python3 -m hf_margin train-teacher recipes/teacher-cross-encoder-stsb.yaml \
  --output_dir outputs/teacher-cross-encoder-stsb > outputs/teacher.log 2>&1
echo "== teacher: exit $?, $((SECONDS - start)) s"; quiet < outputs/teacher.log | tail -2

start=$SECONDS
timeout $((deadline - SECONDS)) python3 benchmarks/methods.py > outputs/methods.log 2>&1
echo "== methods: exit $?, $((SECONDS - start)) s"; quiet < outputs/methods.log | tail -40
exit "$check"
