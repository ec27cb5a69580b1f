"""Epoch time of ``model.fit`` with the pruning callbacks, against plain ``fit``.

Not a test: prints a table. For each model three fits run interleaved, one epoch at a
time, on the same data with the same batch size: plain ``fit``, ``fit`` with
:class:`~kerasprune.callbacks.SaliencyAccumulator` (gsfp) and ``fit`` with
:class:`~kerasprune.callbacks.SoftFilterPruning` (gsfp, rate 0.3). Each model is compiled
and traced once before timing; every ``fit`` runs two epochs and only the second is timed
(a callback that hooks the train step re-traces it once per ``fit``, a cost per call, not
per epoch); the medians of the epoch times are compared. Target:
at most 1.05x plain ``fit`` for the weight-gradient criteria.

    .venv/bin/python bench/callback_overhead.py [--epochs 5] [--models lenet5 resnet20]

LeNet-5 trains on the first ``--examples`` MNIST training images, ResNet-20 on random
CIFAR-shaped data.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import common  # noqa: E402,F401  (bench/common.py: environment first)

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from kerasprune.callbacks import SaliencyAccumulator, SoftFilterPruning  # noqa: E402
from kerasprune.models import get_model  # noqa: E402
from common import machine, print_table, versions  # noqa: E402


class EpochTimer(keras.callbacks.Callback):
    """Wall time of each epoch."""

    def __init__(self) -> None:
        super().__init__()
        self.times = []

    def on_epoch_begin(self, epoch, logs=None):
        self._t = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if getattr(self, "skip", False):
            self.skip = False
            return
        self.times.append(time.perf_counter() - self._t)


def data_for(name: str, examples: int, batch: int):
    if name == "lenet5":
        from kerasprune.data import load_dataset

        return load_dataset("mnist", "train", batch_size=batch, take=examples)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(examples, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 10, size=examples).astype("int32")
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch).cache()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["lenet5", "resnet20"])
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--examples", type=int, default=10000)
    p.add_argument("--batch-size", type=int, default=128)
    args = p.parse_args()

    rows = []
    for name in args.models:
        ds = data_for(name, args.examples, args.batch_size)
        variants = {
            "plain fit": lambda: [],
            "SaliencyAccumulator(gsfp)": lambda: [SaliencyAccumulator("gsfp")],
            "SoftFilterPruning(0.3, gsfp)": lambda: [SoftFilterPruning(0.3)],
        }
        models, timers, extra = {}, {}, {}
        for label, make in variants.items():
            keras.utils.set_random_seed(0)
            m = get_model(name)
            m.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
                      loss="sparse_categorical_crossentropy", metrics=["accuracy"])
            models[label], timers[label], extra[label] = m, EpochTimer(), make()
            print(f"[{name}] warm-up: {label}", file=sys.stderr, flush=True)
            m.fit(ds.take(2), epochs=1, verbose=0, callbacks=extra[label])  # trace outside the timing
        for epoch in range(args.epochs):
            for label, m in models.items():
                # two epochs per fit, the second timed: a callback that hooks the train step
                # re-traces it at the start of every fit, which belongs to the fit, not the epoch
                timers[label].skip = True
                m.fit(ds, epochs=2, verbose=0, callbacks=[timers[label]] + extra[label])
            print(f"[{name}] epoch {epoch + 1}/{args.epochs}", file=sys.stderr, flush=True)
        base = statistics.median(timers["plain fit"].times)
        for label in variants:
            t = statistics.median(timers[label].times)
            rows.append((name, label, f"{t:.2f}", f"{t / base:.3f}x"))
    header = ("model", "fit with", "median epoch s", "vs plain fit")
    print_table(header, rows, left=2)
    print(f"\n{args.epochs} interleaved epochs of {args.examples} examples, batch {args.batch_size}")
    print(f"machine: {machine()}\nversions: {versions()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
