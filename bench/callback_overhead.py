"""Epoch time of ``model.fit`` with the pruning callbacks, against plain ``fit``.

Not a test: prints a table. For each model the fits run interleaved, one epoch at a
time, on the same data with the same batch size: plain ``fit``, ``fit`` with
:class:`~kerasprune.callbacks.SaliencyAccumulator` for each criterion of ``--criteria``
(weight gradients: gsfp; feature-map gradients: mean_gradient, taylor) and ``fit`` with
:class:`~kerasprune.callbacks.SoftFilterPruning` (gsfp, ratio 0.3). Each model is compiled
and traced once before timing; every ``fit`` runs two epochs and only the second is timed
(a callback that hooks the train step re-traces it once per ``fit``, a cost per call, not
per epoch); the medians of the epoch times are compared. Target:
at most 1.05x plain ``fit`` for the weight-gradient criteria.

Epoch times on a shared machine drift by more than the hooks cost, so the script also
times the compiled train step itself: the same models' ``train_function`` (with each
accumulator's hook installed by its ``on_train_begin``) called on batches of a cached,
repeated dataset, ``--step-samples`` interleaved samples of ``--steps`` steps each, medians
of the time per step. The epoch-end work (reading the sums, normalizing, selecting and
masking) is outside the step and shows only in the epoch table.

    .venv/bin/python bench/callback_overhead.py [--epochs 5] [--models lenet5 resnet20]
        [--criteria gsfp mean_gradient taylor]

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
from common import machine, print_table, versions  # noqa: E402

from kerasprune.callbacks import SaliencyAccumulator, SoftFilterPruning  # noqa: E402
from kerasprune.models import get_model  # noqa: E402


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


def step_times(models, extra, ds, steps: int, samples: int, name: str):
    """Median seconds per compiled train step of each model, its callbacks' hooks installed."""
    iterators = {}
    for label, m in models.items():
        for cb in extra[label]:
            cb.set_model(m)
            cb.on_train_begin()  # installs the hook, forces a new train function
        m.make_train_function()
        iterators[label] = iter(ds.repeat())
        m.train_function(iterators[label])  # trace outside the timing
        m.optimizer.iterations.numpy()
    times = {label: [] for label in models}
    for i in range(samples):
        for label, m in models.items():
            fn, it = m.train_function, iterators[label]
            start = time.perf_counter()
            for _ in range(steps):
                fn(it)
            m.optimizer.iterations.numpy()  # wait for the last step
            times[label].append((time.perf_counter() - start) / steps)
        if (i + 1) % 10 == 0:
            print(f"[{name}] step samples {i + 1}/{samples}", file=sys.stderr, flush=True)
    for label, m in models.items():
        for cb in extra[label]:
            counted = int(cb._step_count.numpy())
            if counted != samples * steps + 1:  # the hook ran in every step (and the warm-up)
                raise RuntimeError(f"{label}: the hook counted {counted} of {samples * steps + 1} steps")
            cb.on_train_end()
    return {label: statistics.median(ts) for label, ts in times.items()}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["lenet5", "resnet20"])
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--examples", type=int, default=10000)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=20, help="train steps per step-timing sample")
    p.add_argument("--step-samples", type=int, default=30, help="interleaved step-timing samples")
    p.add_argument("--criteria", nargs="+", default=["gsfp", "mean_gradient", "taylor"],
                   help="SaliencyAccumulator criteria to time")
    args = p.parse_args()

    rows, step_rows = [], []
    for name in args.models:
        ds = data_for(name, args.examples, args.batch_size)
        variants = {"plain fit": lambda: []}
        for criterion in args.criteria:
            variants[f"SaliencyAccumulator({criterion})"] = lambda c=criterion: [SaliencyAccumulator(c)]
        variants["SoftFilterPruning(0.3, gsfp)"] = lambda: [SoftFilterPruning(ratio=0.3)]
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
        per_step = step_times(models, extra, ds, args.steps, args.step_samples, name)
        for label, t in per_step.items():
            step_rows.append((name, label, f"{t * 1e3:.2f}", f"{t / per_step['plain fit']:.3f}x"))
    print_table(("model", "fit with", "median epoch s", "vs plain fit"), rows, left=2)
    print(f"\n{args.epochs} interleaved epochs of {args.examples} examples, batch {args.batch_size}\n")
    print_table(("model", "train step with", "median ms per step", "vs plain step"), step_rows, left=2)
    print(f"\n{args.step_samples} interleaved samples of {args.steps} steps, batch {args.batch_size}")
    print(f"machine: {machine()}\nversions: {versions()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
