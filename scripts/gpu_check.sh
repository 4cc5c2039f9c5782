#!/usr/bin/env bash
# GPU check: on a machine with one CUDA GPU, run the default recipe with bf16 and with DeepSpeed ZeRO-2,
# print throughput and peak GPU memory for each, and exit non-zero on any failure.
#   bash scripts/gpu_check.sh            (or: make gpu-check)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1} TOKENIZERS_PARALLELISM=false
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA GPU visible')"
"$PY" -c "import torch; print('GPU:', torch.cuda.get_device_name(0))"
OUT=${OUT:-outputs/gpu-check}
mkdir -p "$OUT"
STEPS=${STEPS:-200}
run() {  # name, then launcher arguments
  local name=$1; shift
  "$PY" -m accelerate.commands.launch "$@" -m hf_margin train recipes/stsb-adaptive.yaml \
    --output_dir "$OUT/$name" --run_name "gpu-$name" --max_steps "$STEPS" --eval_strategy no \
    --bf16 true --per_device_train_batch_size 64 --forward_chunk_size 0 --disable_tqdm true \
    2>&1 | tee "$OUT/$name.log"
  "$PY" - "$OUT/$name" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
state = json.loads((out / "trainer_state.json").read_text())
summary = next(h for h in reversed(state["log_history"]) if "train_runtime" in h)
metrics = json.loads((out / "metrics.json").read_text())
print(f"{out.name}: {summary['train_samples_per_second']:.1f} examples/s, peak GPU memory "
      f"{metrics['peak_gpu_memory_mb']:.0f} MiB, STS-B test Spearman {metrics['stsb_test_spearman']['after']:.2f}")
PY
}
run bf16 --num_processes 1 --mixed_precision bf16
run zero2 --config_file recipes/accelerate/zero2.yaml --num_processes 1
PYTHONPATH=. "$PY" benchmarks/gpu.py   # throughput vs sentence-transformers, ZeRO-2/3, default recipe wall time
