"""Globally soft filter pruning of LeNet-5 on MNIST at several ratios, beside Xu et al. (2018).

Not a test: prints a table. From one trained LeNet-5 (the baseline of
``bench/reproduce_lenet.py`` when its run directory exists, else trained here), for each
ratio P it retrains a copy with :class:`kerasprune.callbacks.SoftFilterPruning` (gsfp saliency
accumulated over each epoch, normalized per layer, ranked globally over the two
convolutions' filters, the lowest P masked at every epoch end), strips the masked filters
with :func:`kerasprune.strip` and reports the filters left per layer, the FLOPs left, the
test error and the epochs it took, beside Table 2 of Xu et al. (2018) (P = 70, 80, 85, 90%:
7-14, 6-8, 5-6, 3-4 filters; 0.72, 0.77, 0.83, 1.07% error; baseline 0.75%).

The retraining is the paper's: SGD at lr 0.01 (momentum 0.9), up to ``--epochs`` (the
paper: 100), here stopped early when the validation loss of the *masked* model (measured
after each epoch-end mask, so it is the loss of the model that would be stripped) has not
improved for ``--patience`` epochs, and the weights of the best epoch restored. (The
validation error, 6,000 images, moves in steps of 0.017% and stops a run at its first
plateau: at P = 70% it stopped at epoch 16 with its best at epoch 6, 0.87% test error.)

The number of filters masked is the paper's, ``floor(P * 70)`` of the 70 filters (its
P = 85% row keeps 11, 5-6); :class:`~kerasprune.callbacks.SoftFilterPruning` itself masks
``round(P * N)``, which at 59.5 would be 60, so the ratio passed is ``floor(P * 70) / 70``.
Validation is the last 10% of the training split, never the test set; the first 90% is
trained on, with random crops unless ``--no-augment`` (as the baseline was trained).

With ``--finetune-epochs N`` the stripped model is then fine-tuned, no longer masked, with
SGD at ``--finetune-lr`` (default 0.001) for at most N epochs and never past ``--epochs`` in
all (the paper's budget of 100), stopped early on the validation loss
(``--finetune-patience``, best weights restored). The paper reports the model as stripped;
both errors are printed. Each row's stripped model is saved as ``p<P>_stripped.keras``.

    .venv/bin/python bench/soft_lenet.py [--ratios 0.7 0.8 0.85 0.9] [--epochs 100] [--patience 15]
        [--finetune-epochs 60]

References:

- Xu et al. (2018), globally soft filter pruning (GSFP): Ke Xu, Xiaoyun Wang, Qun Jia,
  Jianjing An and Dong Wang, "Globally Soft Filter Pruning For Efficient Convolutional
  Neural Networks", submitted to ICLR 2019, OpenReview id H1fevoAcKX, 2018.
"""

from __future__ import annotations

import argparse
import json
import math
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


def paper_ratio(model: keras.Model, ratio: float) -> float:
    """The ratio that makes :class:`SoftFilterPruning` mask ``floor(ratio * N)`` of the N
    filters of ``conv1`` and ``conv2``, as Xu et al. (2018) count them."""
    n = sum(model.get_layer(name).filters for name in ("conv1", "conv2"))
    return math.floor(ratio * n + 1e-9) / n


def error(model: keras.Model, test) -> float:
    return 100.0 * (1.0 - float(model.evaluate(test, verbose=0, return_dict=True)["accuracy"]))


class MaskedValidation(keras.callbacks.Callback):
    """After the epoch-end mask (place it after :class:`SoftFilterPruning`), measure the
    masked model on ``val`` and write ``val_loss`` / ``val_accuracy`` into the epoch logs, for
    :class:`keras.callbacks.EarlyStopping` placed after it."""

    def __init__(self, val) -> None:
        super().__init__()
        self.val = val

    def on_epoch_end(self, epoch, logs=None) -> None:
        result = self.model.evaluate(self.val, verbose=0, return_dict=True)
        if logs is not None:
            logs["val_loss"] = float(result["loss"])
            logs["val_accuracy"] = float(result["accuracy"])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ratios", nargs="+", type=float, default=[0.7, 0.8, 0.85, 0.9])
    p.add_argument("--epochs", type=int, default=100, help="at most this many epochs per ratio (the paper: 100)")
    p.add_argument("--patience", type=int, default=15,
                   help="stop when the masked model's validation loss has not improved for this many epochs")
    p.add_argument("--monitor", default="val_loss", choices=["val_loss", "val_accuracy"])
    p.add_argument("--lr", type=float, default=0.01,
                   help="SGD learning rate (momentum 0.9), as in Xu et al. (2018)")
    p.add_argument("--finetune-epochs", type=int, default=0,
                   help="after the strip, fine-tune the thin model for at most this many epochs, within "
                        "the --epochs budget (0: none, as Xu et al. (2018))")
    p.add_argument("--finetune-lr", type=float, default=0.001, help="SGD learning rate of that fine-tuning")
    p.add_argument("--finetune-patience", type=int, default=5,
                   help="stop that fine-tuning when the validation loss has not improved for this many epochs")
    p.add_argument("--no-augment", action="store_true", help="retrain without random crops")
    p.add_argument("--baseline", default="runs/reproduce_lenet/baseline.keras")
    p.add_argument("--out", default="runs/soft_lenet", help="one JSON per finished ratio goes here")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    keras.utils.set_random_seed(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    def train_data():
        return load_dataset("mnist", "train[:90%]", batch_size=128, shuffle=True, seed=args.seed,
                            augment=not args.no_augment)

    val = load_dataset("mnist", "train[90%:]", batch_size=512)
    test = load_dataset("mnist", "test", batch_size=512)
    if Path(args.baseline).exists():
        base = keras.models.load_model(args.baseline)
    else:
        base = lenet5()
        base.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        base.fit(train_data(), epochs=10, shuffle=False, verbose=2)
    flops0 = kp.count_flops(base).total
    base_err = error(base, test)
    rows = [("baseline", "20-50", f"{base_err:.2f}", "100.0%", "", "", "", "20-50", "0.75")]
    print(f"baseline: test error {base_err:.2f}%", flush=True)
    for ratio in args.ratios:
        t0 = time.time()
        keras.utils.set_random_seed(args.seed)
        train = train_data()  # a new pipeline: each row sees the same data whichever rows ran before it
        model = keras.models.clone_model(base)
        model.set_weights(base.get_weights())
        model.compile(optimizer=keras.optimizers.SGD(args.lr, momentum=0.9),
                      loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        soft = SoftFilterPruning(ratio=paper_ratio(base, ratio), criterion="gsfp", scope="global",
                                 exclude=["fc1"])
        stop = keras.callbacks.EarlyStopping(monitor=args.monitor, patience=args.patience,
                                             restore_best_weights=True)
        hist = model.fit(train, epochs=args.epochs, callbacks=[soft, MaskedValidation(val), stop],
                         shuffle=False, verbose=2)
        epochs_run = len(hist.history["loss"])
        best_epoch = stop.best_epoch + 1
        thin = kp.strip(model)
        thin.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        widths = kp.report.layer_widths(thin)
        err = soft_err = error(thin, test)
        stem = f"p{round(100 * ratio)}"
        thin.save(out / f"{stem}_stripped.keras")
        tune_epochs = min(args.finetune_epochs, args.epochs - epochs_run)
        tuned = {}
        if tune_epochs > 0:
            thin.compile(optimizer=keras.optimizers.SGD(args.finetune_lr, momentum=0.9),
                         loss="sparse_categorical_crossentropy", metrics=["accuracy"])
            tune_stop = keras.callbacks.EarlyStopping(patience=args.finetune_patience,
                                                      restore_best_weights=True)
            tune_hist = thin.fit(train, validation_data=val, epochs=tune_epochs, callbacks=[tune_stop],
                                 shuffle=False, verbose=2)
            err = error(thin, test)
            tuned = {"finetune_best_epoch": tune_stop.best_epoch + 1,
                     "finetune_epochs_run": len(tune_hist.history["loss"]),
                     "finetune_val_loss": tune_hist.history["val_loss"], "test_error_stripped": soft_err}
        flops_left = 100.0 * kp.count_flops(thin).total / flops0
        paper_filters, paper_err = PAPER.get(ratio, ("", None))
        rows.append((
            f"P={ratio:.0%}", f"{widths['conv1']}-{widths['conv2']}", f"{err:.2f}", f"{flops_left:.1f}%",
            f"{best_epoch} of {epochs_run}",
            f"{soft_err:.2f}" if not tuned else
            f"{soft_err:.2f}, {tuned['finetune_best_epoch']} of {tuned['finetune_epochs_run']}",
            f"{(time.time() - t0) / 60:.1f}",
            paper_filters, "" if paper_err is None else f"{paper_err:.2f}",
        ))
        record = {"ratio": ratio, "widths": widths, "test_error": err, "flops_left": flops_left,
                  "best_epoch": best_epoch, "epochs_run": epochs_run, "minutes": (time.time() - t0) / 60,
                  "val_loss": hist.history["val_loss"], "val_accuracy": hist.history["val_accuracy"],
                  "paper": [paper_filters, paper_err], "args": vars(args), **tuned}
        (out / f"{stem}.json").write_text(json.dumps(record, indent=1))
        print(f"P={ratio:.0%}: {widths['conv1']}-{widths['conv2']} filters, test error {err:.2f}% "
              f"({soft_err:.2f}% stripped), "
              f"FLOPs left {flops_left:.1f}%, best epoch {best_epoch} of {epochs_run}, "
              f"{time.time() - t0:.0f}s", flush=True)
    header = ("ratio", "filters conv1-conv2", "test error %", "FLOPs left", "best epoch of run",
              "error % stripped, fine-tune best of run",
              "minutes", "Xu et al. (2018) filters", "Xu et al. (2018) error %")
    print_table(header, rows)
    print(f"\nsoft pruning per ratio: SGD lr {args.lr} momentum 0.9, batch 128, at most {args.epochs} "
          f"epochs, early stopping on the masked model's {args.monitor} (patience {args.patience}, best "
          f"weights restored), {'no augmentation' if args.no_augment else 'random crops'}, seed {args.seed}")
    if args.finetune_epochs:
        print(f"then the thin model: SGD lr {args.finetune_lr} momentum 0.9, at most {args.finetune_epochs} "
              f"epochs within the {args.epochs}, early stopping on val_loss (patience "
              f"{args.finetune_patience}, best weights restored)")
    print(f"machine: {machine()}\nversions: {versions()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
