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
export TF_CPP_MIN_LOG_LEVEL ?= 2
export KERAS_BACKEND ?= tensorflow
PYTEST_WORKERS ?= 2

.PHONY: venv test demo bench clean

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[test]"
	touch $(STAMP)

venv: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -n $(PYTEST_WORKERS) -q tests

demo: $(STAMP)
	$(PY) -m kerasprune.demo

bench: $(STAMP)
	$(PY) bench/rebuild_speed.py

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .hypothesis
