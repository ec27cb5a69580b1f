"""kerasprune installed where TensorFlow is not: a fresh virtual environment with Keras,
NumPy and JAX only (the package itself with ``--no-deps``), running on JAX.

The packages come from the package index, or from pip's cache and the wheels on disk that
pip is configured with; where none of them can be had the test is skipped and says why.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# what pip prints when it cannot reach the index (and has nothing cached)
_OFFLINE = (
    "No matching distribution found",
    "Could not find a version that satisfies",
    "Failed to establish a new connection",
    "Temporary failure in name resolution",
    "Network is unreachable",
    "Connection refused",
    "Read timed out",
)

_SCRIPT = r"""
import importlib.util, sys
assert importlib.util.find_spec("tensorflow") is None, "TensorFlow is installed in this venv"
import numpy as np
import keras
import kerasprune as kp
assert keras.config.backend() == "jax"
assert "site-packages" in kp.__file__, kp.__file__

L = keras.layers
inp = keras.Input((8, 8, 3))
x = L.Conv2D(6, 3, padding="same", activation="relu", name="c1")(inp)
x = L.BatchNormalization(name="bn")(x)
x = L.Conv2D(8, 3, padding="same", activation="relu", name="c2")(x)
x = L.GlobalAveragePooling2D(name="gap")(x)
model = keras.Model(inp, L.Dense(4, name="head")(x))
xs = np.random.default_rng(0).normal(size=(10, 8, 8, 3)).astype("float32")

graph = kp.analyze(model)
assert {g.name for g in graph.prunable} == {"c1", "c2"}
thin = kp.rebuild(model, {"c1": [0, 2, 4], "c2": [1, 3, 5, 7]}, graph=graph)
assert [thin.get_layer(n).filters for n in ("c1", "c2")] == [3, 4]

# mean_response: |mean over examples of the spatial mean| where the next conv reads c1
scores = kp.importance.raw_scores(model, "mean_response", data=xs, batch_size=4)
bn_out = keras.Model(inp, model.get_layer("bn").output).predict_on_batch(xs)
np.testing.assert_allclose(scores["c1"], np.abs(bn_out.mean(axis=(0, 1, 2))), rtol=1e-4, atol=1e-7)

pruned = kp.prune(model, 0.5, criterion="mean_response", data=xs)
assert kp.count_params(pruned).total < kp.count_params(model).total
assert pruned.predict_on_batch(xs).shape == (10, 4)

for call in (lambda: kp.data.load_dataset("mnist"),
             lambda: kp.export.export_saved_model(model, "never")):
    try:
        call()
    except kp.BackendError as err:
        assert "pip install kerasprune[tensorflow]" in str(err), err
    else:
        raise AssertionError("no BackendError")
print("tensorflow loaded:", "tensorflow" in sys.modules)
"""


def _pip(python: Path, *args: str) -> None:
    out = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *args],
        capture_output=True, text=True, timeout=900,
    )
    if out.returncode != 0:
        text = out.stderr + out.stdout
        if any(s in text for s in _OFFLINE):
            last = [line for line in text.splitlines() if line.strip()][-1]
            pytest.skip(f"the package index is unreachable and pip has no cached wheel: {last}")
        raise AssertionError(f"pip install {' '.join(args)} failed:\n{text[-3000:]}")


def _version(name: str, default: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return default


def test_kerasprune_without_tensorflow_analyzes_rebuilds_prunes_and_scores_on_jax(tmp_path):
    venv = tmp_path / "venv"
    made = subprocess.run([sys.executable, "-m", "venv", str(venv)], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot create a virtual environment here: {made.stderr.strip()[-300:]}")
    python = venv / "bin" / "python"
    # the versions this environment has, so that pip reuses the wheels it already has
    jax = _version("jax", "0.10.2")
    _pip(
        python,
        f"keras=={_version('keras', '3.15.1')}",
        f"numpy=={_version('numpy', '2.4.6')}",
        f"jax=={jax}",
        f"jaxlib=={_version('jaxlib', jax)}",
    )
    # the package from a copy of its sources (a build in the checkout would leave build/ there)
    src = tmp_path / "src"
    shutil.copytree(ROOT / "kerasprune", src / "kerasprune", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    _pip(python, "--no-deps", str(src))

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(KERAS_BACKEND="jax", JAX_PLATFORMS="cpu")
    run = subprocess.run(
        [str(python), "-c", _SCRIPT], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip().splitlines()[-1] == "tensorflow loaded: False"
