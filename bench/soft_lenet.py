"""Globally soft filter pruning of LeNet-5 on MNIST at several ratios, beside Xu et al. (2018).

Not a test: prints a table. From one trained LeNet-5 (the baseline of
``bench/reproduce_lenet.py`` when its run directory exists, else trained here), for each
ratio P it trains a copy with :class:`kerasprune.callbacks.SoftFilterPruning` (gsfp saliency
accumulated over each epoch, normalized per layer, ranked globally over the two
convolutions' filters, the lowest P masked at every epoch end), strips the masked filters
with :func:`kerasprune.strip` and reports the filters left per layer, the FLOPs left and
the test error, beside Table 2 of Xu et al. (2018) (P = 70, 80, 85, 90%: 7-14, 6-8, 5-6, 3-4
filters; 0.72, 0.77, 0.83, 1.07% error; baseline 0.75%). The paper retrains 100 epochs at lr 0.01;
the default here is far shorter (``--epochs``).

    .venv/bin/python bench/soft_lenet.py [--ratios 0.7 0.8 0.85 0.9] [--epochs 8]

References:

- Xu et al. (2018), globally soft filter pruning (GSFP): Ke Xu, Xiaoyun Wang, Qun Jia,
  Jianjing An and Dong Wang, "Globally Soft Filter Pruning For Efficient Convolutional
  Neural Networks", submitted to ICLR 2019, OpenReview id H1fevoAcKX, 2018.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import common  # noqa: E402,F401  (bench/common.py: environment first)
import keras  # noqa: E402
from common import machine, print_table, versions  # noqa: E402

import kerasprune as kp  # noqa: E402
from kerasprune.callbacks import SoftFilterPruning  # noqa: E402
from kerasprune.data import load_dataset  # noqa: E402
from kerasprune.models import lenet5  # noqa: E402

PAPER = {0.7: ("7-14", 0.72), 0.8: ("6-8", 0.77), 0.85: ("5-6", 0.83), 0.9: ("3-4", 1.07)}


def error(model: keras.Model, test) -> float:
    return 100.0 * (1.0 - float(model.evaluate(test, verbose=0, return_dict=True)["accuracy"]))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ratios", nargs="+", type=float, default=[0.7, 0.8, 0.85, 0.9])
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--lr", type=float, default=0.01,
                   help="SGD learning rate (momentum 0.9), as in Xu et al. (2018)")
    p.add_argument("--baseline", default="runs/reproduce_lenet/baseline.keras")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    keras.utils.set_random_seed(args.seed)
    train = load_dataset("mnist", "train", batch_size=128, shuffle=True, seed=args.seed)
    test = load_dataset("mnist", "test", batch_size=512)
    if Path(args.baseline).exists():
        base = keras.models.load_model(args.baseline)
    else:
        base = lenet5()
        base.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        base.fit(train, epochs=10, shuffle=False, verbose=2)
    flops0 = kp.count_flops(base).total
    rows = [("baseline", "20-50", f"{error(base, test):.2f}", "100.0%", "", "0.75")]
    for ratio in args.ratios:
        t0 = time.time()
        model = keras.models.clone_model(base)
        model.set_weights(base.get_weights())
        model.compile(optimizer=keras.optimizers.SGD(args.lr, momentum=0.9),
                      loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        soft = SoftFilterPruning(ratio=ratio, criterion="gsfp", scope="global", exclude=["fc1"])
        model.fit(train, epochs=args.epochs, callbacks=[soft], shuffle=False, verbose=0)
        thin = kp.strip(model)
        thin.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        widths = kp.report.layer_widths(thin)
        paper_filters, paper_err = PAPER.get(ratio, ("", None))
        rows.append((
            f"P={ratio:.0%}", f"{widths['conv1']}-{widths['conv2']}", f"{error(thin, test):.2f}",
            f"{100.0 * kp.count_flops(thin).total / flops0:.1f}%",
            paper_filters, "" if paper_err is None else f"{paper_err:.2f}",
        ))
        print(f"P={ratio:.0%} done in {time.time() - t0:.0f}s", file=sys.stderr, flush=True)
    header = ("ratio", "filters conv1-conv2", "test error %", "FLOPs left",
              "Xu et al. (2018) filters", "Xu et al. (2018) error %")
    print_table(header, rows)
    print(f"\n{args.epochs} epochs of soft pruning per ratio, SGD lr {args.lr} momentum 0.9, "
          f"batch 128, seed {args.seed}")
    print(f"machine: {machine()}\nversions: {versions()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
