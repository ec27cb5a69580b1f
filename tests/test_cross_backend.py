"""The cross-backend route of the README: train on JAX, prune and export on TensorFlow,
load the thin model back on JAX.

Each step runs in its own process with its own ``KERAS_BACKEND`` (a process has one
backend), on this checkout's kerasprune. The reference for the thin model on JAX is the
same thin model's outputs on TensorFlow, computed in the pruning process.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]

_TRAIN = """
import keras, numpy as np
rng = np.random.default_rng(0)
x = rng.normal(size=(64, 8, 8, 3)).astype("float32")
y = rng.integers(0, 3, 64)
inp = keras.Input((8, 8, 3))
h = keras.layers.Conv2D(8, 3, activation="relu", name="c1")(inp)
h = keras.layers.Conv2D(6, 3, activation="relu", name="c2")(h)
h = keras.layers.GlobalAveragePooling2D()(h)
model = keras.Model(inp, keras.layers.Dense(3, name="out")(h))
model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
model.fit(x, y, epochs=1, verbose=0)
model.save("trained.keras")
np.save("x.npy", x[:5])
print("trained")
"""

_PRUNE = """
import keras, numpy as np, kerasprune as kp
from kerasprune.export import export_tflite
model = keras.models.load_model("trained.keras")
thin = kp.prune(model, 0.4)
thin.save("thin.keras")
x = np.load("x.npy")
np.save("thin_tf.npy", np.asarray(thin(x)))
export_tflite(thin, "thin.tflite", check_data=x)
print(kp.count_params(model).total, kp.count_params(thin).total)
"""

_LOAD = """
import keras, numpy as np
thin = keras.models.load_model("thin.keras")
np.save("thin_jax.npy", np.asarray(thin(np.load("x.npy"))))
print(keras.backend.backend())
"""


def _run(script: str, backend: str, cwd: Path) -> str:
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3", JAX_PLATFORMS="cpu",
               PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-c", script], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip().splitlines()[-1]


@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="needs jax")
def test_trained_on_jax_pruned_and_exported_on_tensorflow_loads_back_on_jax_with_the_same_outputs(tmp_path):
    _run(_TRAIN, "jax", tmp_path)
    before, after = map(int, _run(_PRUNE, "tensorflow", tmp_path).split())
    assert after < before
    assert (tmp_path / "thin.tflite").stat().st_size > 0
    assert _run(_LOAD, "jax", tmp_path) == "jax"
    np.testing.assert_allclose(np.load(tmp_path / "thin_jax.npy"), np.load(tmp_path / "thin_tf.npy"),
                               rtol=1e-5, atol=1e-5)
