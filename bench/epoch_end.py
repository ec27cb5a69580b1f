"""The epoch-end work of :class:`~kerasprune.callbacks.SoftFilterPruning` on large
models, beside a training epoch of the same model, in the same run.

Not a test: prints a table. For each of ``keras.applications`` ResNet50 and VGG16
(``weights=None``, 224x224 inputs, 1000 classes) the script fits one warm-up epoch and
then ``--epochs`` timed epochs of ``--steps`` steps on random images, once plain and once
with ``SoftFilterPruning(ratio=0.3)`` (gsfp), and times the callback's ``on_epoch_end``
(reading the saliency sums, normalizing, selecting, masking) by itself. It also times
``kp.mask_weights`` alone: for a new keep-set (the masks are built) and again for the
same one (the cached masks are applied), and, with ``--old``, the element-wise masking
kerasprune used before (flat indices merged with ``np.unique``, then a numpy copy of
each variable) for comparison.

    .venv/bin/python bench/epoch_end.py [--models resnet50 vgg16] [--steps 4]
        [--batch-size 4] [--epochs 2] [--old]
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

import kerasprune as kp  # noqa: E402
from kerasprune.callbacks import SoftFilterPruning  # noqa: E402
from kerasprune.graph.composite import iter_layers  # noqa: E402
from kerasprune.surgery.keep import keep_masks  # noqa: E402

BUILDERS = {"resnet50": keras.applications.ResNet50, "vgg16": keras.applications.VGG16}


class TimedSoft(SoftFilterPruning):
    """SoftFilterPruning that records the wall time of each ``on_epoch_end``."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.end_times = []

    def on_epoch_end(self, epoch, logs=None):
        start = time.perf_counter()
        super().on_epoch_end(epoch, logs)
        self.end_times.append(time.perf_counter() - start)


class EpochTimer(keras.callbacks.Callback):
    """Wall time of each epoch (the callbacks' epoch-end work included)."""

    def __init__(self) -> None:
        super().__init__()
        self.times = []

    def on_epoch_begin(self, epoch, logs=None):
        self._t = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.times.append(time.perf_counter() - self._t)


def old_mask_weights(model, keep, graph) -> int:
    """The masking of kerasprune before this benchmark: flat indices per entry, merged
    with ``np.unique``, assigned through a numpy copy of each variable."""
    masks = keep_masks(graph, keep)
    parts = {}
    for name, mask in masks.items():
        for e in graph.entries(name):
            gone = e.flat[~mask[e.channel]]
            if gone.size:
                parts.setdefault((e.layer, e.weight), []).append(gone)
    layers = dict(iter_layers(model))
    zeroed = 0
    for (path, i), v in parts.items():
        flat = np.unique(np.concatenate(v))
        var = layers[path].weights[i]
        value = np.array(var.numpy())
        value.reshape(-1)[flat] = 0
        var.assign(value)
        zeroed += int(flat.size)
    return zeroed


def random_keep(graph, ratio: float, seed: int):
    """A keep-set removing ``ratio`` of every prunable group, at random."""
    rng = np.random.default_rng(seed)
    keep = {}
    for g in graph.prunable:
        n = max(1, int(round(g.size * (1 - ratio))))
        if g.blocks > 1:
            continue
        keep[g.name] = np.sort(rng.choice(g.size, size=n, replace=False))
    return keep


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["resnet50", "vgg16"], choices=sorted(BUILDERS))
    p.add_argument("--steps", type=int, default=4, help="train steps per epoch")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--epochs", type=int, default=2, help="timed epochs per variant")
    p.add_argument("--old", action="store_true", help="also time the former element-wise masking")
    args = p.parse_args()

    rows, mask_rows = [], []
    rng = np.random.default_rng(0)
    n = args.steps * args.batch_size
    x = rng.normal(size=(n, 224, 224, 3)).astype("float32")
    y = rng.integers(0, 1000, size=n).astype("int32")
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(args.batch_size).cache()
    for name in args.models:
        epochs = {}
        soft = None
        for label in ("plain fit", "SoftFilterPruning(0.3, gsfp)"):
            keras.utils.set_random_seed(0)
            model = BUILDERS[name](weights=None)
            model.compile(optimizer=keras.optimizers.SGD(0.01), loss="sparse_categorical_crossentropy")
            timer = EpochTimer()
            extra = [TimedSoft(ratio=0.3)] if label != "plain fit" else []
            print(f"[{name}] {label}: {1 + args.epochs} epochs", file=sys.stderr, flush=True)
            model.fit(ds, epochs=1 + args.epochs, verbose=0, callbacks=[timer] + extra)
            epochs[label] = statistics.median(timer.times[1:])  # the first epoch traces
            if extra:
                soft = extra[0]
        end = statistics.median(soft.end_times[1:])
        base = epochs["plain fit"]
        rows.append((name, f"{args.steps}", f"{base:.2f}", f"{epochs['SoftFilterPruning(0.3, gsfp)']:.2f}",
                     f"{end:.3f}", f"{100 * end / base:.1f}%", f"{100 * end / (base / args.steps * 1000):.3f}%"))
        model = soft.model
        graph = soft.graph
        keep_a, keep_b = random_keep(graph, 0.3, 1), random_keep(graph, 0.3, 2)
        t_new, zeroed = timed(lambda: kp.mask_weights(model, keep_a, graph=graph))
        t_same, _ = timed(lambda: kp.mask_weights(model, keep_a, graph=graph))
        t_other, _ = timed(lambda: kp.mask_weights(model, keep_b, graph=graph))
        row = [name, f"{model.count_params() / 1e6:.1f}M", f"{zeroed / 1e6:.1f}M",
               f"{min(t_new, t_other):.3f}", f"{t_same:.3f}"]
        if args.old:
            t_old, z_old = timed(lambda: old_mask_weights(model, keep_a, graph))
            if z_old != zeroed:
                raise RuntimeError(f"{name}: the former masking zeroed {z_old} entries, the new {zeroed}")
            row.append(f"{t_old:.2f}")
        mask_rows.append(tuple(row))
    print_table(("model", "steps", "plain epoch s", "soft epoch s", "epoch end s", "of this epoch",
                 "of 1000 steps"), rows, left=1)
    print(f"\nbatch {args.batch_size}, 224x224 random images; medians of {args.epochs} epochs after a "
          "warm-up epoch; epoch end = SoftFilterPruning.on_epoch_end\n")
    header = ["model", "params", "entries zeroed", "mask new keep-set s", "same keep-set s"]
    if args.old:
        header.append("former masking s")
    print_table(tuple(header), mask_rows, left=1)
    print(f"\nmachine: {machine()}\nversions: {versions()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
