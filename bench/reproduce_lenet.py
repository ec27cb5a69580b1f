"""The full gradual scheme on LeNet-5 / MNIST, beside the row of Salama et al. (2019).

Not a test: trains LeNet-5 (431,080 parameters) on MNIST, then prunes it with
:class:`kerasprune.GradualPruner` (global AAWS, the size-normalized L1 of Salama et al. (2019),
ranked across layers as is (``--normalization none``), a fixed fraction of
the *current parameters* removed per round, fine-tuning after each round, random-crop
augmentation throughout) while the validation accuracy holds ``--target``, fine-tunes the last model that held, and prints a table:
baseline and final test error, parameters, MACs, per-layer widths and wall time,
beside Salama et al. (2019): 97.40% of parameters removed at 0.75% test error, baseline 0.80%.
The run directory keeps every round's ``.keras`` checkpoint and ``history.json``; a
killed run continues where it stopped when started again with the same ``--dir``.

    make venv && TFDS_DATA_DIR=../shared/data/tfds .venv/bin/python bench/reproduce_lenet.py
        [--dir runs/reproduce_lenet] [--epochs 15] [--ratio 0.2] [--target 0.99]

References:

- Salama et al. (2019), global normalized-L1 pruning: Abdullah Salama, Oleksiy Ostapenko,
  Tassilo Klein and Moin Nabi, "Pruning at a Glance: Global Neural Pruning for Model
  Compression", arXiv preprint, 2019; arXiv:1912.00200.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import common  # noqa: E402,F401  (bench/common.py: environment first)
import keras  # noqa: E402
from common import machine, print_table, versions  # noqa: E402

import kerasprune as kp  # noqa: E402
from kerasprune.data import load_dataset  # noqa: E402
from kerasprune.models import lenet5  # noqa: E402
from kerasprune.pruning import ConstantRatio  # noqa: E402
from kerasprune.report import layer_widths  # noqa: E402

PAPER = {"baseline_error": 0.80, "error": 0.75, "params_removed": 97.40}


def compile_model(model: keras.Model, lr: float) -> None:
    model.compile(
        optimizer=keras.optimizers.Adam(lr), loss="sparse_categorical_crossentropy", metrics=["accuracy"]
    )


def test_error(model: keras.Model, test) -> float:
    return 100.0 * (1.0 - float(model.evaluate(test, verbose=0, return_dict=True)["accuracy"]))


def set_lr(model: keras.Model, lr: float) -> None:
    model.optimizer.learning_rate.assign(lr)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dir", default="runs/reproduce_lenet")
    p.add_argument("--epochs", type=int, default=15, help="baseline training epochs")
    p.add_argument("--no-augment", action="store_true", help="train without random crops")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--ratio", type=float, default=0.2, help="fraction of the current parameters removed per round")
    p.add_argument("--target", type=float, default=0.99,
                   help="validation accuracy each round must hold (default 0.99)")
    p.add_argument("--fine-tune-epochs", type=int, default=3)
    p.add_argument("--final-epochs", type=int, default=12, help="fine-tuning of the last model that held")
    p.add_argument("--final-lr", type=float, default=5e-4,
                   help="learning rate of the final fine-tuning's first half (the second half uses a tenth)")
    p.add_argument("--max-rounds", type=int, default=40)
    p.add_argument("--normalization", default="none",
                   help="Salama et al. (2019) rank the size-normalized L1 (AAWS) of all layers "
                        "as is: none")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    keras.utils.set_random_seed(args.seed)
    out = Path(args.dir)
    out.mkdir(parents=True, exist_ok=True)
    train = load_dataset(
        "mnist", "train[:90%]", batch_size=args.batch_size, shuffle=True, seed=args.seed, augment=not args.no_augment
    )
    val = load_dataset("mnist", "train[90%:]", batch_size=512)
    test = load_dataset("mnist", "test", batch_size=512)
    t_start = time.time()

    base_path = out / "baseline.keras"
    if base_path.exists():
        base = keras.models.load_model(base_path)
        print(f"baseline: reusing {base_path}")
    else:
        base = lenet5()
        compile_model(base, 1e-3)
        lr_drop = keras.callbacks.LearningRateScheduler(lambda e, lr: 1e-3 if e < args.epochs - 3 else 1e-4)
        base.fit(train, validation_data=val, epochs=args.epochs, callbacks=[lr_drop], shuffle=False, verbose=2)
        base.save(base_path)
    t_base = time.time() - t_start
    base_err = test_error(base, test)
    print(f"baseline: test error {base_err:.2f}%, {kp.count_params(base).total:,} parameters")

    base_val = float(base.evaluate(val, verbose=0, return_dict=True)["accuracy"])
    target = args.target
    print(f"baseline: validation accuracy {base_val:.4f}; pruning while it stays >= {target}")
    set_lr(base, 5e-4)
    t0 = time.time()
    pruner = kp.GradualPruner(
        out / "gradual", target=f"val_accuracy>={target}", rounds=args.max_rounds,
        ratio=ConstantRatio(args.ratio), unit="params", criterion="aaws", normalization=args.normalization,
        scope="global", fine_tune_epochs=args.fine_tune_epochs, verbose=1,
        fit_kwargs={"verbose": 0},
    )
    best = pruner.run(base, train, val, resume=True)
    t_prune = time.time() - t0

    t0 = time.time()
    final_path = out / "final.keras"
    if args.final_epochs:
        half = args.final_epochs // 2
        decay = keras.callbacks.LearningRateScheduler(lambda e, lr: args.final_lr if e < half else args.final_lr / 10)
        best.fit(train, validation_data=val, epochs=args.final_epochs, callbacks=[decay], shuffle=False, verbose=2)
    best.save(final_path)
    t_final = time.time() - t0
    err = test_error(best, test)

    p0, p1 = kp.count_params(base).total, kp.count_params(best).total
    f0, f1 = kp.count_flops(base).total, kp.count_flops(best).total
    w0, w1 = layer_widths(base), layer_widths(best)
    removed = 100.0 * (1 - p1 / p0)
    rows = [
        ("", "baseline", "kerasprune", "Salama et al. (2019)"),
        ("test error (%)", f"{base_err:.2f}", f"{err:.2f}", f"{PAPER['baseline_error']:.2f} -> {PAPER['error']:.2f}"),
        ("parameters", f"{p0:,}", f"{p1:,}", "431K -> 11.2K"),
        ("parameters removed (%)", "", f"{removed:.2f}", f"{PAPER['params_removed']:.2f}"),
        ("MACs", f"{f0:,}", f"{f1:,}", ""),
        ("MACs removed (%)", "", f"{100.0 * (1 - f1 / f0):.2f}", ""),
    ]
    for name in w0:
        rows.append((f"width {name}", str(w0[name]), str(w1.get(name, "")), ""))
    rows.append(("rounds", "", str(len(pruner.history) - 1), ""))
    rows.append(("wall time (min)", f"{t_base / 60:.1f}", f"{(t_prune + t_final) / 60:.1f}", "< 45 total"))
    print()
    print_table(rows[0], rows[1:], rule=False)
    print(f"\nmachine: {machine()}\nversions: {versions()}")
    target_met = removed >= PAPER["params_removed"] and err <= PAPER["baseline_error"]
    print(f"target (>= 97.40% removed at <= 0.80% error): {'met' if target_met else 'NOT met'}")
    (out / "result.json").write_text(json.dumps({
        "baseline_error": base_err, "error": err, "params": [p0, p1], "flops": [f0, f1],
        "widths": [w0, w1], "minutes": (time.time() - t_start) / 60, "target_met": target_met,
    }, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
