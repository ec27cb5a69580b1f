"""Measured latency of Keras models: compiled inference calls, interleaved, medians.

Each backend's call is compiled its own way: a ``tf.function`` on TensorFlow, ``jax.jit``
of ``model.stateless_call`` on JAX, and ``model(x, training=False)`` under
``torch.inference_mode`` on PyTorch (eager); on any other backend
``model.predict_on_batch``. Every timed call ends with the outputs copied to NumPy, so
asynchronous dispatch is never timed short.
"""

from __future__ import annotations

import statistics
import time
from typing import Callable, Dict, List, Optional, Sequence

import keras
import numpy as np

from kerasprune.backend import current, require_tensorflow
from kerasprune.errors import OptionError

__all__ = ["LatencyMeter", "seconds_per_call", "compiled_call"]


def seconds_per_call(fn: Callable[[], object], min_seconds: float = 0.2, min_calls: int = 2) -> float:
    """Seconds per call of ``fn``, calling it until both ``min_seconds`` and ``min_calls``
    are reached."""
    calls, start = 0, time.perf_counter()
    while True:
        fn()
        calls += 1
        elapsed = time.perf_counter() - start
        if calls >= min_calls and elapsed >= min_seconds:
            return elapsed / calls


def compiled_call(model: keras.Model, inputs: object) -> Callable[[], object]:
    """A function that runs ``model`` on ``inputs`` in inference mode, compiled for the
    running backend (see the module documentation), and returns its outputs as NumPy.

    The compilation (a trace) happens here, outside any timing.
    """
    name = current()
    if name == "tensorflow":
        tf = require_tensorflow("the TensorFlow backend")
        fn = tf.function(lambda t: model(t, training=False))

        def call() -> object:
            return fn(inputs)

    elif name == "jax":
        import jax

        state = ([v.value for v in model.trainable_variables], [v.value for v in model.non_trainable_variables])
        jitted = jax.jit(lambda tv, ntv, t: model.stateless_call(tv, ntv, t, training=False)[0])

        def call() -> object:
            return jitted(state[0], state[1], inputs)

    elif name == "torch":
        import torch

        def call() -> object:
            with torch.inference_mode():
                return model(inputs, training=False)

    else:

        def call() -> object:
            return model.predict_on_batch(inputs)

    def run() -> object:
        return [keras.ops.convert_to_numpy(out) for out in keras.tree.flatten(call())]

    run()  # trace outside the timing
    return run


class LatencyMeter:
    """Times models on the same input: a compiled inference call each
    (:func:`compiled_call`, on every backend).

    Models given to one :meth:`time` call are measured interleaved (one sample of each in
    turn, ``samples`` times) and the median of each is returned, so a slow spell of a
    shared machine affects them all alike. Compiled functions are kept per model, so a
    model timed again (the original, against each candidate) is not traced again.

    Args:
        batch_size: rows of the random input (the model's own input shape otherwise).
        samples: interleaved samples per model.
        min_seconds: each sample repeats the call for at least this long.
        seed: seed of the random input.
    """

    def __init__(self, batch_size: int = 1, samples: int = 5, min_seconds: float = 0.2, seed: int = 0) -> None:
        if batch_size < 1 or samples < 1:
            raise OptionError("batch_size and samples must be at least 1")
        self.batch_size = int(batch_size)
        self.samples = int(samples)
        self.min_seconds = float(min_seconds)
        self.seed = seed
        self._fns: Dict[int, Callable[[], object]] = {}

    def _inputs(self, model: keras.Model) -> List[object]:
        rng = np.random.default_rng(self.seed)
        out = []
        for spec in model.inputs:
            shape = (self.batch_size,) + tuple(int(d) for d in spec.shape[1:])
            out.append(keras.ops.convert_to_tensor(rng.normal(size=shape).astype(spec.dtype or "float32")))
        return out

    def _fn(self, model: keras.Model) -> Callable[[], object]:
        key = id(model)
        if key not in self._fns:
            xs = self._inputs(model)
            self._fns[key] = compiled_call(model, xs if len(xs) > 1 else xs[0])
        return self._fns[key]

    def time(self, models: Sequence[keras.Model]) -> List[float]:
        """Median seconds per call of each model, measured interleaved."""
        fns = [self._fn(m) for m in models]
        samples: List[List[float]] = [[] for _ in fns]
        for _ in range(self.samples):
            for i, fn in enumerate(fns):
                samples[i].append(seconds_per_call(fn, self.min_seconds, 2))
        return [statistics.median(s) for s in samples]

    def speedup(self, original: keras.Model, thin: keras.Model) -> float:
        """How many times faster ``thin`` runs than ``original`` (interleaved medians)."""
        t_orig, t_thin = self.time([original, thin])
        return t_orig / t_thin

    def forget(self, model: Optional[keras.Model] = None) -> None:
        """Drop the compiled function of ``model`` (of every model when None)."""
        if model is None:
            self._fns.clear()
        else:
            self._fns.pop(id(model), None)
