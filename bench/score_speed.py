"""How long scoring one MNIST training epoch takes, against one training epoch of LeNet-5.

Not a test: prints a table. For each data-driven criterion (``mean_response``,
``mean_gradient``, ``taylor``, ``gsfp``) it times ``kerasprune.importance.raw_scores`` over
the whole MNIST training set, and compares it with one epoch of ``model.fit`` of the same
model on the same ``tf.data`` pipeline with the same batch size, measured in the same run.
Both timings include their one-off ``tf.function`` tracing. The target is a ratio of at
most 2.

    TFDS_DATA_DIR=../shared/data/tfds python bench/score_speed.py [--batch-size 32]
        [--max-batches N] [--criteria mean_response,gsfp]
"""

from __future__ import annotations

import argparse
import os
import time

import common  # noqa: E402,F401  (bench/common.py: environment first)
import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
from common import machine, versions  # noqa: E402

from kerasprune.importance import raw_scores  # noqa: E402

CRITERIA = ("mean_response", "mean_gradient", "taylor", "gsfp")


def build_lenet5() -> keras.Model:
    """LeNet-5 from kerasprune.models, or the same network built here."""
    try:
        from kerasprune.models import lenet5

        return lenet5()
    except ImportError:
        L = keras.layers
        inp = keras.Input((28, 28, 1), name="input")
        x = L.Conv2D(20, 5, name="conv1")(inp)
        x = L.MaxPooling2D(2, name="pool1")(x)
        x = L.Conv2D(50, 5, name="conv2")(x)
        x = L.MaxPooling2D(2, name="pool2")(x)
        x = L.Flatten(name="flatten")(x)
        x = L.Dense(500, activation="relu", name="fc1")(x)
        return keras.Model(inp, L.Dense(10, activation="softmax", name="predictions")(x), name="lenet5")


def mnist_train(batch_size: int) -> tf.data.Dataset:
    """The MNIST training split as cached ``(image in [0, 1], label)`` batches."""
    try:
        from kerasprune.data import load_dataset

        return load_dataset("mnist", split="train", batch_size=batch_size)
    except ImportError:
        import tensorflow_datasets as tfds

        ds = tfds.load("mnist", split="train", as_supervised=True, data_dir=os.environ.get("TFDS_DATA_DIR"))
        ds = ds.map(lambda x, y: (tf.cast(x, tf.float32) / 255.0, tf.cast(y, tf.int32))).cache()
        return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-batches", type=int, default=None, help="limit both sides (quick runs)")
    parser.add_argument("--criteria", default=",".join(CRITERIA))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    keras.utils.set_random_seed(args.seed)

    ds = mnist_train(args.batch_size)
    if args.max_batches:
        ds = ds.take(args.max_batches)
    batches = sum(1 for _ in ds)  # also fills the in-memory cache before any timing
    model = build_lenet5()
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9), loss="sparse_categorical_crossentropy", metrics=["accuracy"])

    t0 = time.perf_counter()
    hist = model.fit(ds, epochs=1, verbose=0)
    fit_s = time.perf_counter() - t0
    acc = hist.history["accuracy"][-1]

    rows = []
    for crit in [c.strip() for c in args.criteria.split(",") if c.strip()]:
        t0 = time.perf_counter()
        s = raw_scores(model, crit, data=ds)
        sec = time.perf_counter() - t0
        rows.append((crit, sec, sec / fit_s, sum(v.size for v in s.values())))

    print(f"machine: {machine()}")
    print(f"versions: {versions()}")
    print(f"LeNet-5 on MNIST train: {batches} batches of {args.batch_size}; one fit epoch reached accuracy {acc:.4f}")
    print()
    print(f"| {'what':<32} | {'seconds':>8} | {'x fit epoch':>11} |")
    print(f"|{'-' * 34}|{'-' * 10}|{'-' * 13}|")
    print(f"| {'model.fit, 1 epoch':<32} | {fit_s:8.2f} | {1.0:11.2f} |")
    for crit, sec, ratio, n in rows:
        print(f"| {'score ' + crit + f' ({n} ch.)':<32} | {sec:8.2f} | {ratio:11.2f} |")
    worst = max((r[2] for r in rows), default=0.0)
    print()
    print(f"target: every ratio <= 2.00; worst {worst:.2f} -> {'met' if worst <= 2.0 else 'NOT met'}")


if __name__ == "__main__":
    main()
