"""Bias compensation (``kp.prune(..., compensate="mean")``) right after one-shot pruning.

Not a test: prints a table. LeNet-5 and a CIFAR ResNet (ResNet-20 with 8-16-32 filters by
default, on 28x28x1 inputs) are trained briefly on MNIST (Adam; cached under ``--dir``, trained again only
when missing), then each is pruned in one shot at each ratio with each criterion (global
AAWS and global ``std_response`` by default, the same scoring data in every call) with and
without ``compensate="mean"``, which folds each removed channel's mean input, over the scoring data, into the biases of the layers that
read it (``b += mean * w``). No fine-tuning: the test error is the pruned model's as
rebuilt. Both columns prune the same channels: the script checks that the two models have
the same widths and the same weights except biases, and counts the layers whose bias
compensation changed.

    .venv/bin/python bench/compensate.py [--ratios 0.3 0.5 0.7] [--criteria aaws std_response]
        [--models lenet resnet] [--dir runs/compensate] [--lenet-epochs 3] [--resnet-width 8] [--resnet-epochs 4] [--resnet-take 10000]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import common  # noqa: E402,F401  (bench/common.py: environment first)
import keras  # noqa: E402
import numpy as np  # noqa: E402
from common import machine, print_table, versions  # noqa: E402

import kerasprune as kp  # noqa: E402
from kerasprune.data import load_dataset  # noqa: E402
from kerasprune.models import cifar_resnet, lenet5  # noqa: E402


def error(model: keras.Model, test) -> float:
    return 100.0 * (1.0 - float(model.evaluate(test, verbose=0, return_dict=True)["accuracy"]))


def trained(path: Path, build, epochs: int, take, seed: int) -> keras.Model:
    """The model cached at ``path``, else ``build()`` trained ``epochs`` on MNIST and saved."""
    if path.exists():
        return keras.models.load_model(path)
    keras.utils.set_random_seed(seed)
    model = build()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    train = load_dataset("mnist", "train", batch_size=128, take=take, shuffle=True, seed=seed)
    t0 = time.time()
    model.fit(train, epochs=epochs, shuffle=False, verbose=2)
    print(f"{model.name}: trained {epochs} epochs in {time.time() - t0:.0f}s", file=sys.stderr, flush=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(path)
    return model


def only_biases_differ(plain: keras.Model, comp: keras.Model) -> int:
    """Check that ``comp`` has ``plain``'s layers, widths and weights except biases; the
    number of layers whose bias differs."""
    if kp.report.layer_widths(plain) != kp.report.layer_widths(comp):
        raise AssertionError("compensation changed the pruned widths")
    changed = 0
    for a, b in zip(plain.layers, comp.layers):
        if a.name != b.name:
            raise AssertionError(f"layers differ: {a.name} / {b.name}")
        differs = False
        for va, vb in zip(a.weights, b.weights):
            same = np.array_equal(np.asarray(va), np.asarray(vb))
            if va.name.split("/")[-1] == "bias":
                differs |= not same
            elif not same:
                raise AssertionError(f"compensation changed {a.name}/{va.name}, not a bias")
        changed += differs
    return changed


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ratios", nargs="+", type=float, default=[0.3, 0.5, 0.7])
    p.add_argument("--criteria", nargs="+", default=["aaws", "std_response"],
                   help="criteria to prune with, one row per criterion and ratio")
    p.add_argument("--models", nargs="+", choices=["lenet", "resnet"], default=["lenet", "resnet"])
    p.add_argument("--scope", default="global")
    p.add_argument("--dir", default="runs/compensate", help="where the trained models are cached")
    p.add_argument("--lenet-epochs", type=int, default=3)
    p.add_argument("--resnet-depth", type=int, default=20)
    p.add_argument("--resnet-width", type=int, default=8,
                   help="filters of the ResNet's first stage (the CIFAR ResNets have 16)")
    p.add_argument("--resnet-epochs", type=int, default=4)
    p.add_argument("--resnet-take", type=int, default=10000,
                   help="train the ResNet on the first this many MNIST training images")
    p.add_argument("--score-batches", type=int, default=20,
                   help="batches of 128 training images for the scoring and the means")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    start = time.time()
    out = Path(args.dir)
    depth = args.resnet_depth
    models = []
    if "lenet" in args.models:
        models.append(("LeNet-5", trained(out / "lenet5.keras", lenet5, args.lenet_epochs, None, args.seed)))
    if "resnet" in args.models:
        models.append((f"ResNet-{depth}", trained(
            out / f"resnet{depth}_w{args.resnet_width}.keras",
            lambda: cifar_resnet(depth, input_shape=(28, 28, 1), width=args.resnet_width),
            args.resnet_epochs, args.resnet_take, args.seed)))
    score_data = load_dataset("mnist", "train", batch_size=128, take=128 * args.score_batches)
    test = load_dataset("mnist", "test", batch_size=500)
    rows = []
    for name, model in models:
        t0 = time.time()
        params0 = model.count_params()
        rows.append((name, "", "baseline", "100.0%", f"{error(model, test):.2f}", "", ""))
        for criterion in args.criteria:
            for ratio in args.ratios:
                kw = dict(criterion=criterion, scope=args.scope, data=score_data, max_batches=args.score_batches)
                plain = kp.prune(model, ratio, **kw)
                comp = kp.prune(model, ratio, compensate="mean", **kw)
                changed = only_biases_differ(plain, comp)
                rows.append((
                    name, criterion, f"{ratio:.0%}", f"{100.0 * plain.count_params() / params0:.1f}%",
                    f"{error(plain, test):.2f}", f"{error(comp, test):.2f}", str(changed),
                ))
        print(f"{name}: pruned and evaluated in {time.time() - t0:.0f}s", file=sys.stderr, flush=True)
    header = ("model", "criterion", "channels removed", "params left", "test error %",
              'test error % compensate="mean"', "layers with a compensated bias")
    print_table(header, rows, left=3)
    print(f"\none-shot kp.prune(model, ratio, criterion in {args.criteria}, scope={args.scope!r}), no "
          f"fine-tuning; scoring data and means: the first {128 * args.score_batches} MNIST training images; "
          f"LeNet-5 trained {args.lenet_epochs} epochs on MNIST, ResNet-{depth} (width {args.resnet_width}) "
          f"{args.resnet_epochs} epochs on {args.resnet_take} images (Adam, batch 128, seed {args.seed}); test error on the 10,000 test "
          f"images; {time.time() - start:.0f}s in all")
    print(f"machine: {machine()}\nversions: {versions()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
