"""The Keras backend kerasprune runs on, and TensorFlow where a feature needs it.

kerasprune needs only Keras and NumPy: it runs on the TensorFlow, JAX and PyTorch
backends of Keras 3 (``KERAS_BACKEND``). TensorFlow is optional
(``pip install kerasprune[tensorflow]`` brings it and tensorflow-datasets), and
importing kerasprune, or any of its subpackages, never imports it on another backend.
What needs what:

- every backend, no TensorFlow: ``analyze``, ``rebuild``, the counters, every criterion
  of ``kp.score`` (weights, forward statistics, gradients), ``prune``,
  ``prune_for_speedup`` and :class:`~kerasprune.costs.LatencyMeter`, ``GradualPruner``
  (scores between rounds), ``mask_weights``, ``strip``, the model zoo, and the callbacks
  that accumulate saliency inside ``model.fit`` (``SaliencyAccumulator``,
  ``SoftFilterPruning``: optimizer variables on JAX and PyTorch, which Keras's stateless
  JAX step carries);
- TensorFlow installed, any backend: the tensorflow-datasets loaders
  (:mod:`kerasprune.data`), the TensorBoard writer, SavedModel export (on the
  TensorFlow or JAX backend);
- the TensorFlow backend: TFLite export.

A feature whose needs are not met raises :class:`~kerasprune.errors.BackendError`,
naming the extra to install or the backend to use.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import sys
from types import ModuleType
from typing import Any

from kerasprune.errors import BackendError

__all__ = [
    "TENSORFLOW_EXTRA",
    "current",
    "configured",
    "tensorflow_installed",
    "require_tensorflow",
    "require_backend",
    "lazy_tensorflow",
    "is_tf_dataset",
    "host_arrays",
    "accumulation_dtype",
]

#: how to install what the TensorFlow features need
TENSORFLOW_EXTRA = "pip install kerasprune[tensorflow]"


def current() -> str:
    """The running Keras backend: ``"tensorflow"``, ``"jax"``, ``"torch"``, ..."""
    import keras

    return keras.config.backend()


def configured() -> str:
    """The backend Keras will run on, read without importing Keras: ``KERAS_BACKEND``,
    else the ``backend`` of ``keras.json`` (in ``KERAS_HOME`` or ``~/.keras``), else
    ``"tensorflow"``."""
    if "keras" in sys.modules:
        return current()
    name = os.environ.get("KERAS_BACKEND")
    if name:
        return name
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    try:
        with open(os.path.join(home, "keras.json")) as f:
            return str(json.load(f).get("backend") or "tensorflow")
    except (OSError, ValueError, AttributeError):
        return "tensorflow"


def tensorflow_installed() -> bool:
    """Whether TensorFlow can be imported (it is not imported to find out)."""
    return "tensorflow" in sys.modules or importlib.util.find_spec("tensorflow") is not None


def require_tensorflow(feature: str) -> ModuleType:
    """The ``tensorflow`` module, imported now.

    Args:
        feature: what needs it, for the message (``"TFLite export"``).

    Raises:
        BackendError: TensorFlow is not installed.
    """
    try:
        return importlib.import_module("tensorflow")
    except ImportError as exc:
        raise BackendError(f"{feature} needs TensorFlow, which is not installed: {TENSORFLOW_EXTRA}") from exc


def require_backend(feature: str, *backends: str) -> None:
    """Check that Keras runs on one of ``backends``.

    Raises:
        BackendError: it runs on another; the message names the ones that work.
    """
    name = current()
    if name not in backends:
        wanted = " or ".join(f"KERAS_BACKEND={b}" for b in backends)
        raise BackendError(f"{feature} runs on the {'/'.join(backends)} backend only ({wanted}); Keras runs on {name}")


class _LazyTensorFlow:
    """Stands for the ``tensorflow`` module and imports it at the first attribute read."""

    def __init__(self, feature: str) -> None:
        self._feature = feature
        self._module = None

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        if self._module is None:
            self._module = require_tensorflow(self._feature)
        return getattr(self._module, name)

    def __repr__(self) -> str:
        state = "imported" if self._module is not None else "not imported yet"
        return f"<tensorflow, {state}, for {self._feature}>"


def lazy_tensorflow(feature: str) -> Any:
    """A stand-in for ``tensorflow`` (``tf = lazy_tensorflow(...)`` at module level) that
    imports it only when one of its names is read; a missing TensorFlow then raises
    :class:`~kerasprune.errors.BackendError` naming ``feature``."""
    return _LazyTensorFlow(feature)


def is_tf_dataset(obj: Any) -> bool:
    """Whether ``obj`` is a ``tf.data.Dataset`` (False, without importing TensorFlow,
    while TensorFlow is not imported: then nothing can be one)."""
    tf = sys.modules.get("tensorflow")
    data = getattr(tf, "data", None)
    return data is not None and isinstance(obj, data.Dataset)


def _is_tf_value(a: Any) -> bool:
    return type(a).__module__.startswith("tensorflow") and hasattr(a, "numpy")


def host_arrays(structure: Any) -> Any:
    """``structure`` with each TensorFlow tensor replaced by its NumPy value when Keras
    runs on another backend (batches of a ``tf.data.Dataset`` fed to a JAX or PyTorch
    model); unchanged on TensorFlow."""
    if structure is None or "tensorflow" not in sys.modules or current() == "tensorflow":
        return structure
    import keras

    return keras.tree.map_structure(lambda a: a.numpy() if _is_tf_value(a) else a, structure)


def accumulation_dtype() -> str:
    """The widest float of the running backend for sums over examples: ``"float64"``,
    except on JAX without ``jax_enable_x64`` (``"float32"``)."""
    if current() == "jax":
        import jax

        return "float64" if jax.config.jax_enable_x64 else "float32"
    return "float64"
