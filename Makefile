# kerasprune: every target sets up what it needs on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-kerasprune
# The prepared offline MNIST, when the shared folder is beside the checkout.
SHARED_TFDS := $(abspath ../shared/data/tfds)
ifneq ($(wildcard $(SHARED_TFDS)),)
export TFDS_DATA_DIR ?= $(SHARED_TFDS)
endif
export TF_CPP_MIN_LOG_LEVEL ?= 3
export KERAS_BACKEND ?= tensorflow
PYTEST_WORKERS ?= 2
# The other Keras backends make test runs the backend-neutral tests on (CPU builds: this
# torch pin is a CPU wheel here; an unpinned torch pulls a multi-GB CUDA build).
TORCH_VERSION ?= 2.13.0
BACKENDS ?= jax torch
BACKEND_TESTS ?= tests/test_backends.py tests/test_analysis.py tests/test_callbacks_backends.py \
	tests/test_strip_backends.py tests/test_gradual_backends.py

.PHONY: venv test demo bench bench-rebuild bench-score bench-backends bench-lenet bench-lenet-flops bench-latency bench-profile bench-callbacks bench-epoch-end bench-soft bench-compensate bench-torch bench-llm bench-llm-ppl bench-llm-torch bench-llm-scale clean

$(STAMP): setup.cfg pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[test,jax]"
	$(PY) -m pip install -q "torch==$(TORCH_VERSION)"
	touch $(STAMP)

venv: $(STAMP)

# the whole suite on TensorFlow, then the backend-neutral tests on each of BACKENDS
test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -n $(PYTEST_WORKERS) -q --durations=25 tests
	for backend in $(BACKENDS); do \
		echo "== KERAS_BACKEND=$$backend: $(BACKEND_TESTS)"; \
		KERAS_BACKEND=$$backend $(PY) -m pytest -n $(PYTEST_WORKERS) -q $(BACKEND_TESTS) || exit 1; \
	done

# The main job, small: train LeNet-5 on MNIST briefly, prune it gradually (global AAWS,
# 15% of the neurons per round, fine-tuning after each), write a checkpoint per round,
# print the report. About 5 minutes on 2 CPU cores.
DEMO_DIR ?= runs/demo
demo: $(STAMP)
	$(VENV)/bin/kerasprune train --model lenet5 --dataset mnist --epochs 3 \
		--out $(DEMO_DIR)/baseline.keras
	rm -rf $(DEMO_DIR)/gradual
	$(VENV)/bin/kerasprune prune $(DEMO_DIR)/baseline.keras --dataset mnist \
		--dir $(DEMO_DIR)/gradual --ratio 0.15 --rounds 6 --target "val_accuracy>=0.97" \
		--criterion aaws --scope global --fine-tune-epochs 1 --take 20000
	$(VENV)/bin/kerasprune report $(DEMO_DIR)/baseline.keras $(DEMO_DIR)/gradual/pruned.keras

# Benchmarks (not run by the tests): each prints a table with the machine and versions.
bench: bench-rebuild bench-score

# a Llama-style causal LM (about 19 M parameters) pruned by 30% and 50% of its FFN units
# and heads: parameters, MACs per token, prefill and decode latency against the original
bench-llm: $(STAMP)
	$(PY) bench/llm_prune.py

# a character-level causal LM trained a few minutes on pydoc_data.topics (cached under
# runs/llm_perplexity/), pruned by 30% and 50%: validation perplexity before and after
# pruning and after the same short fine-tune
bench-llm-ppl: $(STAMP)
	$(PY) bench/llm_perplexity.py

# Torch-Pruning's LLM pruning of the same config (Hugging Face LlamaForCausalLM), in its
# own venv (not the test environment): torch pinned to the CPU wheel, and the versions
# that work together (torch-pruning 1.6.x never finishes building this model's
# dependency groups; transformers 5 is not what Torch-Pruning's examples/LLMs target).
# The stamp names the versions, so a venv with others is reinstalled.
TP_VENV ?= ../venv-tp
TP_TRANSFORMERS ?= 4.47.1
TP_TORCH_PRUNING ?= 1.5.2
TP_STAMP := $(TP_VENV)/.kerasprune-torch$(TORCH_VERSION)-transformers$(TP_TRANSFORMERS)-tp$(TP_TORCH_PRUNING)
$(TP_STAMP):
	test -x $(TP_VENV)/bin/python || $(PYTHON) -m venv $(TP_VENV)
	$(TP_VENV)/bin/python -m pip install -q "torch==$(TORCH_VERSION)" \
		"transformers==$(TP_TRANSFORMERS)" "torch-pruning==$(TP_TORCH_PRUNING)"
	touch $@

# TP_ARGS: e.g. --threads 1 on a shared machine (the README's table)
TP_ARGS ?=
bench-llm-torch: $(TP_STAMP)
	$(TP_VENV)/bin/python bench/llm_torch.py $(TP_ARGS)

# analyze + rebuild of a 1 B-parameter Llama-style backbone: wall time and peak memory
# (about 4 GB for the model, float32)
bench-llm-scale: $(STAMP)
	$(PY) bench/llm_scale.py

bench-rebuild: $(STAMP)
	$(PY) bench/rebuild_speed.py

bench-score: $(STAMP)
	$(PY) bench/score_speed.py

# scoring time on TensorFlow, JAX and PyTorch beside a training epoch, same run
bench-backends: $(STAMP)
	$(PY) bench/backend_scoring.py

# LeNet-5 beside Salama et al. (2019): parameters per round (goal >= 98% removed), then
# multiply-adds per round (goal >= 90% removed) from the same baseline; both at <= 0.80%
# error (57 and 22 minutes of pruning on 2 cores shared with other runs, see the README).
bench-lenet: $(STAMP)
	$(PY) bench/reproduce_lenet.py --unit params --ratio 0.2 --late-ratio 0.1 --taper-at 0.95 --stop-at 0.982 \
		--retries 3

bench-lenet-flops: $(STAMP)
	$(PY) bench/reproduce_lenet.py --unit flops --dir runs/reproduce_lenet_flops \
		--baseline runs/reproduce_lenet/baseline.keras --normalization layer_mean --target 0.99 \
		--ratio 0.2 --late-ratio 0.1 --taper-at 0.8 --stop-at 0.9 --fine-tune-epochs 2 \
		--final-epochs 12 --final-lr 1e-3

# thin models' measured latency (Keras b1/b32, TFLite b1), and where their time goes
bench-latency: $(STAMP)
	$(PY) bench/latency.py

bench-profile: $(STAMP)
	$(PY) bench/latency_profile.py

# the callbacks' cost per train step, and soft pruning of LeNet-5 (Xu et al. (2018), Table 2;
# needs the trained LeNet-5 of bench-lenet)
bench-callbacks: $(STAMP)
	$(PY) bench/callback_overhead.py

bench-epoch-end: $(STAMP)
	$(PY) bench/epoch_end.py --old

bench-soft: $(STAMP)
	$(PY) bench/soft_lenet.py --epochs 100 --patience 15 --finetune-epochs 60

# one-shot pruning at 30/50/70% with and without compensate="mean", before any fine-tuning:
# LeNet-5 and a ResNet-20 trained briefly on MNIST (cached under runs/compensate/; about
# 7 minutes on 2 busy CPU cores once cached, 19 from scratch)
bench-compensate: $(STAMP)
	$(PY) bench/compensate.py

# kerasprune beside Torch-Pruning (optional extra, not needed by the tests): installs
# torch (CPU wheel) and torch-pruning into the venv, then prunes ResNet-56 and VGG-16 in
# both. About 4 minutes on 2 idle CPU cores.
bench-torch: $(STAMP)
	$(PY) -m pip install -q -e ".[torch]"
	$(PY) bench/torch_side_by_side.py

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .hypothesis
