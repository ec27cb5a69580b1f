"""Measured CPU latency of Keras models: compiled inference calls, interleaved, medians."""

from __future__ import annotations

import statistics
import time
from typing import Callable, Dict, List, Optional, Sequence

import keras
import numpy as np
import tensorflow as tf

from kerasprune.errors import OptionError

__all__ = ["LatencyMeter", "seconds_per_call"]


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


class LatencyMeter:
    """Times models on the same input: a compiled (``tf.function``) inference call each.

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

    def _inputs(self, model: keras.Model) -> List[tf.Tensor]:
        rng = np.random.default_rng(self.seed)
        out = []
        for spec in model.inputs:
            shape = (self.batch_size,) + tuple(int(d) for d in spec.shape[1:])
            out.append(tf.constant(rng.normal(size=shape).astype(spec.dtype or "float32")))
        return out

    def _fn(self, model: keras.Model) -> Callable[[], object]:
        key = id(model)
        if key not in self._fns:
            xs = self._inputs(model)
            arg = xs if len(xs) > 1 else xs[0]
            call = tf.function(lambda t: model(t, training=False))
            call(arg)  # trace outside the timing

            def run() -> None:
                for out in keras.tree.flatten(call(arg)):
                    out.numpy()

            self._fns[key] = run
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
