#!/usr/bin/env bash
# GPU check (`make bench-gpu` runs the same script): on a machine with one CUDA GPU, run benchmarks/gpu.py, i.e.
# throughput against sentence-transformers at batch 32 and 256 x 1 and 4 negatives (bf16), the default recipe
# under DeepSpeed ZeRO-2 and ZeRO-3, and the default recipe's wall time; exit non-zero if any part fails.
#   bash scripts/gpu_check.sh            (PY=python3 on a machine without the project's .venv)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1} TOKENIZERS_PARALLELISM=false
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA GPU visible')"
"$PY" -c "import torch; print('GPU:', torch.cuda.get_device_name(0))"
PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH} "$PY" benchmarks/gpu.py "$@"
