"""The ``kerasprune`` command: train a zoo model, analyze it, prune it gradually (or to a measured
speed-up), report and export the result.

References:

- Xu et al. (2018), globally soft filter pruning (GSFP): Ke Xu, Xiaoyun Wang, Qun Jia,
  Jianjing An and Dong Wang, "Globally Soft Filter Pruning For Efficient Convolutional
  Neural Networks", submitted to ICLR 2019, OpenReview id H1fevoAcKX, 2018.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import List, Optional

from kerasprune.errors import KerasPruneError, UsageError

__all__ = ["main", "build_parser"]


def _load_model(path: str):
    import keras

    p = Path(path)
    if not p.exists():
        raise UsageError(f"no such file: {path}")
    if p.suffix != ".keras":
        raise UsageError(f"{path} is not a .keras file")
    try:
        return keras.models.load_model(p)
    except Exception as exc:  # a corrupt or foreign file
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UsageError(f"cannot load {path} as a Keras model: {reason[:200]}") from None


def _data(args, split: str, *, augment: bool = False, take: Optional[int] = None, shuffle: bool = False):
    from kerasprune import data

    return data.load_dataset(
        args.dataset, split=split, batch_size=args.batch_size, data_dir=args.data_dir,
        augment=augment, take=take, shuffle=shuffle,
    )


def _compile(model, args) -> None:
    import keras

    if args.optimizer == "sgd":
        opt = keras.optimizers.SGD(args.lr, momentum=0.9)
    else:
        opt = keras.optimizers.Adam(args.lr)
    model.compile(optimizer=opt, loss="sparse_categorical_crossentropy", metrics=["accuracy"])


def cmd_train(args) -> int:
    """``kerasprune train``: a zoo model trained on a dataset, saved as a baseline."""
    import keras

    from kerasprune import data, models

    keras.utils.set_random_seed(args.seed)
    model = models.get_model(
        args.model, num_classes=data.num_classes(args.dataset), input_shape=data.input_shape(args.dataset)
    )
    _compile(model, args)
    train = _data(args, args.train_split, augment=args.augment, take=args.take, shuffle=True)
    val = _data(args, args.val_split, take=args.val_take)
    model.fit(train, validation_data=val, epochs=args.epochs, shuffle=False, verbose=1 if args.verbose else 2)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    model.save(out)
    print(f"saved {out} (seed {args.seed})")
    return 0


def cmd_prune(args) -> int:
    """``kerasprune prune``: gradual global pruning of a ``.keras`` file."""
    import keras

    from kerasprune.pruning import GradualPruner, RisingPercentile
    from kerasprune.report import compare
    from kerasprune.runs.rundir import RunDirectory

    keras.utils.set_random_seed(args.seed)
    if args.soft:
        return _soft_prune(args)
    criterion = args.criterion or ("gsfp" if args.accumulate else "aaws")
    run_dir = RunDirectory(args.dir)
    resuming = bool(run_dir.history())
    if resuming and not args.resume:
        raise UsageError(f"{args.dir} already holds a run: add --resume to continue it, or pick another --dir")
    model = None
    if not resuming:
        model = _load_model(args.model)
        if not getattr(model, "compiled", False):
            _compile(model, args)
    ratio = args.ratio
    if args.rising:
        start, step, final = (float(v) for v in args.rising.split(","))
        ratio = RisingPercentile(start, step, final)
    pruner = GradualPruner(
        args.dir, target=args.target, rounds=args.rounds, ratio=ratio, criterion=criterion,
        normalization=args.normalization, scope=args.scope, unit=args.unit,
        hierarchy=args.hierarchy, method=args.method, min_channels=args.min_channels, max_ratio=args.max_ratio, round_to=args.round_to,
        exclude=args.exclude or (), fine_tune_epochs=args.fine_tune_epochs, accumulate=args.accumulate,
        score_batches=args.score_batches, verbose=1 if args.verbose else 2,
        tensorboard=args.tensorboard,
    )
    train = _data(args, args.train_split, augment=args.augment, take=args.take, shuffle=True)
    val = _data(args, args.val_split, take=args.val_take)
    best = pruner.run(model, train, val, resume=args.resume)
    out = Path(args.dir) / "pruned.keras"
    best.save(out)
    baseline = _load_model(str(run_dir.checkpoint(0)))
    print(compare(baseline, best))
    print(f"pruned model: {out}")
    return 0


def _soft_prune(args) -> int:
    """``kerasprune prune --soft``: the GSFP of Xu et al. (2018) in ``fit``, then strip."""
    from kerasprune.callbacks import SoftFilterPruning, strip
    from kerasprune.report import compare

    out = Path(args.dir)
    if (out / "pruned.keras").exists():
        raise UsageError(f"{args.dir} already holds a result: pick another --dir")
    soft = SoftFilterPruning(
        args.ratio, criterion=args.criterion or "gsfp", scope=args.scope, normalization=args.normalization,
        min_channels=args.min_channels, max_ratio=args.max_ratio, round_to=args.round_to,
        exclude=args.exclude or (), unit=args.unit, tensorboard_dir=args.tensorboard,
    )
    model = _load_model(args.model)
    if not getattr(model, "compiled", False):
        _compile(model, args)
    base = _load_model(args.model)  # the report's "before"
    train = _data(args, args.train_split, augment=args.augment, take=args.take, shuffle=True)
    val = _data(args, args.val_split, take=args.val_take)
    model.fit(train, validation_data=val, epochs=args.soft_epochs, callbacks=[soft], shuffle=False,
              verbose=1 if args.verbose else 2)
    thin = strip(model)
    out.mkdir(parents=True, exist_ok=True)
    model.save(out / "masked.keras")
    thin.save(out / "pruned.keras")
    metrics = thin.evaluate(val, return_dict=True, verbose=0)
    print(compare(base, thin))
    print(" ".join(f"val_{k}={v:.4f}" for k, v in metrics.items()))
    print(f"pruned model: {out / 'pruned.keras'} (masked model: {out / 'masked.keras'})")
    return 0


def cmd_analyze(args) -> int:
    """``kerasprune analyze``: the channel groups of a ``.keras`` file, prunable or why not."""
    from kerasprune.graph import analyze

    model = _load_model(args.model)
    graph = analyze(model)
    graph.summary(show_frozen=not args.prunable_only)
    n = sum(g.size for g in graph.prunable)
    print(f"{len(graph.prunable)} prunable groups ({n} neurons), {len(graph.frozen)} frozen")
    return 0


def _calibration(args):
    """``--calibration-data``: a ``.npy`` file of inputs, or a dataset name."""
    if args.calibration_data is None:
        return None
    src = args.calibration_data
    if src.endswith(".npy"):
        import numpy as np

        if not Path(src).exists():
            raise UsageError(f"no such file: {src}")
        return np.load(src)
    from kerasprune import data

    return data.load_dataset(src, split="train", batch_size=32, take=args.calibration_steps, data_dir=args.data_dir)


def cmd_speedup(args) -> int:
    """``kerasprune speedup``: one shot, the smallest FLOPs cut measured ``--to`` times faster."""
    from kerasprune.pruning.speedup import prune_for_speedup

    model = _load_model(args.model)
    print(f"searching the smallest cut of {Path(args.model).name} that runs {args.to:g}x faster "
          f"(Keras, batch {args.batch_size}, {args.samples} interleaved samples per trial)")
    found = prune_for_speedup(
        model, args.to, criterion=args.criterion, normalization=args.normalization, scope=args.scope,
        batch_size=args.batch_size, max_ratio_flops=args.max_ratio_flops, tolerance=args.tolerance,
        min_channels=args.min_channels, round_to=args.round_to, exclude=args.exclude or (),
        samples=args.samples, verbose=1,
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    found.model.save(out)
    print(f"{found.ratio:.1%} of the FLOPs removed: measured {found.speedup:.2f}x faster "
          f"(FLOPs cut {found.flops_cut:.2f}x, efficiency {found.efficiency:.2f}); wrote {out}")
    return 0


def cmd_export(args) -> int:
    """``kerasprune export``: TFLite (checked against Keras) and/or SavedModel of a ``.keras`` file."""
    from kerasprune.export import export_saved_model, export_tflite

    if not args.tflite and not args.saved_model:
        raise UsageError("nothing to do: give --tflite FILE and/or --saved-model DIR")
    model = _load_model(args.model)
    if args.saved_model:
        path = export_saved_model(model, args.saved_model)
        print(f"SavedModel: {path}")
    if args.tflite:
        result = export_tflite(
            model, args.tflite, quantize=args.quantize, calibration_data=_calibration(args),
            calibration_steps=args.calibration_steps,
        )
        print(f"TFLite: {result}")
    return 0


def cmd_report(args) -> int:
    """``kerasprune report``: widths, parameters and FLOPs of one model, or two compared."""
    from kerasprune.report import compare

    a = _load_model(args.before)
    b = _load_model(args.after) if args.after else None
    print(compare(a, b))
    if args.sizes:
        from kerasprune.export import disk_sizes

        before = disk_sizes(a)
        after = disk_sizes(b) if b is not None else None
        print("\nsize on disk (bytes)")
        for fmt, label in (("keras", ".keras"), ("saved_model", "SavedModel"), ("tflite", "TFLite float32")):
            if after is None:
                print(f"  {label:<15} {before[fmt]:>12,}")
            else:
                cut = 100.0 * (1 - after[fmt] / before[fmt])
                print(f"  {label:<15} {before[fmt]:>12,} -> {after[fmt]:>12,}  (-{cut:.1f}%)")
    if args.plots or args.run:
        _report_plots(args, a, b)
    return 0


def _report_plots(args, before, after) -> None:
    """``report --plots DIR``: the pattern (two models), the saliency of the first, the run curve."""
    from kerasprune.importance import score
    from kerasprune.report import plots

    if not args.plots:
        raise UsageError("--run draws into the --plots directory: give --plots DIR too")
    out = Path(args.plots)
    out.mkdir(parents=True, exist_ok=True)
    ext = f".{args.plot_format}"
    written = []
    if after is not None:
        written.append(out / f"pattern{ext}")
        plots.plot_pattern(before, after, written[-1])
    scores = score(before, "aaws", normalization=args.normalization)
    if scores:
        written.append(out / f"saliency{ext}")
        plots.plot_saliency(scores, written[-1], title=f"aaws scores of {Path(args.before).name} ({args.normalization})")
    if args.run:
        from kerasprune.runs.rundir import RunDirectory

        history = RunDirectory(args.run).history_file
        if not history.exists():
            raise UsageError(f"no run history: {history} does not exist")
        written.append(out / f"run{ext}")
        plots.plot_run(history, written[-1], metric=args.metric, target=_run_target(args))
    for path in written:
        print(f"plot: {path}")


def _run_target(args):
    """The target of ``report --run``: ``--target``, else the run's own (run.json)."""
    if args.target is not None:
        return args.target
    from kerasprune.runs.rundir import RunDirectory
    from kerasprune.runs.target import parse_target

    target = (RunDirectory(args.run).settings() or {}).get("target")
    if target and parse_target(target).metric == args.metric:
        return target
    return None


def _add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", default="mnist", help="tfds dataset: mnist or cifar10 (default mnist)")
    p.add_argument("--data-dir", default=None, help="tfds data_dir (default: $TFDS_DATA_DIR or ~/tensorflow_datasets)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--train-split", default="train[:90%]")
    p.add_argument("--val-split", default="train[90%:]", help="the split the target is measured on")
    p.add_argument("--take", type=int, default=None, help="use only this many training examples")
    p.add_argument("--val-take", type=int, default=None, help="use only this many validation examples")
    p.add_argument("--augment", action="store_true", help="random crop and flip (CIFAR-10)")
    p.add_argument("--optimizer", choices=["adam", "sgd"], default="adam")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-q", "--quiet", dest="verbose", action="store_false",
                   help="one line per epoch instead of progress bars")


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``kerasprune`` command."""
    parser = argparse.ArgumentParser(prog="kerasprune", description="Structured pruning for Keras 3.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a zoo model to get a baseline .keras file")
    p.add_argument("--model", default="lenet5", help="zoo model name (lenet5, vgg16_bn, resnet20, ...)")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--out", required=True, help="where to write the trained .keras file")
    _add_data_args(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("prune", help="gradual global pruning of a .keras file")
    p.add_argument("model", help="the trained .keras file")
    p.add_argument("--dir", required=True, help="run directory for checkpoints and history")
    p.add_argument("--target", default=None, help="keep pruning while it holds, e.g. 'val_accuracy>=0.99'")
    p.add_argument("--rounds", type=int, default=None, help="at most this many rounds")
    p.add_argument("--ratio", type=_fraction, default=0.05, help="fraction removed per round (default 0.05)")
    p.add_argument("--rising", default=None, metavar="START,STEP,FINAL",
                   help="rising cumulative percentile schedule instead of a constant ratio")
    p.add_argument("--criterion", default=None,
                   help="aaws (default), l1, l2, bn_gamma, mean_response, std_response, apoz, mean_gradient, "
                        "taylor, gsfp (default with --accumulate and --soft)")
    p.add_argument("--normalization", default="layer_mean", choices=["layer_mean", "l2", "none"])
    p.add_argument("--scope", default="global", choices=["global", "layerwise", "hierarchical"])
    p.add_argument("--unit", default="neurons", choices=["neurons", "params", "flops"],
                   help="what --ratio counts (default neurons)")
    p.add_argument("--hierarchy", default="channels", choices=["channels", "flops"],
                   help="hierarchical scope: share each level's budget by channels or FLOPs")
    p.add_argument("--method", default="count", choices=["count", "percentile"],
                   help="remove the lowest --ratio (count) or all below that percentile of scores")
    p.add_argument("--min-channels", type=int, default=1)
    p.add_argument("--max-ratio", type=float, default=1.0)
    p.add_argument("--round-to", type=int, default=1)
    p.add_argument("--exclude", action="append",
                   help="a group or producing layer to leave alone, fnmatch patterns allowed (repeatable)")
    p.add_argument("--fine-tune-epochs", type=int, default=1)
    p.add_argument("--score-batches", type=int, default=None, help="batches used by data-driven criteria")
    p.add_argument("--resume", action="store_true", help="continue the run in --dir")
    p.add_argument("--accumulate", action="store_true",
                   help="score each round by the saliency (gsfp, mean_gradient or taylor) accumulated during "
                        "the previous fine-tuning")
    p.add_argument("--soft", action="store_true",
                   help="globally soft filter pruning (GSFP) of Xu et al. (2018): mask --ratio of "
                        "the filters at every epoch "
                        "end of --soft-epochs of training, then strip the masked ones")
    p.add_argument("--soft-epochs", type=int, default=10, help="training epochs of --soft (default 10)")
    p.add_argument("--tensorboard", default=None, metavar="DIR",
                   help="write TensorBoard scalars and saliency histograms per round (per epoch with --soft)")
    _add_data_args(p)
    p.set_defaults(func=cmd_prune)

    p = sub.add_parser("speedup", help="one-shot pruning to a speed-up measured on this machine")
    p.add_argument("model", help="the trained .keras file")
    p.add_argument("--to", type=float, required=True, help="the speed-up wanted, e.g. 2")
    p.add_argument("--out", required=True, help="where to write the thin .keras file")
    p.add_argument("--batch-size", type=int, default=1, help="batch the latency is measured at (default 1)")
    p.add_argument("--criterion", default="aaws", help="a weight criterion: aaws (default), l1, l2, bn_gamma")
    p.add_argument("--normalization", default="layer_mean", choices=["layer_mean", "l2", "none"])
    p.add_argument("--scope", default="global", choices=["global", "layerwise", "hierarchical"])
    p.add_argument("--min-channels", type=int, default=1)
    p.add_argument("--round-to", type=int, default=1)
    p.add_argument("--exclude", action="append",
                   help="a group or producing layer to leave alone, fnmatch patterns allowed (repeatable)")
    p.add_argument("--max-ratio-flops", type=_fraction, default=0.95,
                   help="the largest fraction of FLOPs the search may remove (default 0.95)")
    p.add_argument("--tolerance", type=float, default=0.01, help="stop when the bracket is this narrow")
    p.add_argument("--samples", type=int, default=5, help="interleaved timing samples per trial")
    p.set_defaults(func=cmd_speedup)

    p = sub.add_parser("analyze", help="the channel groups of a .keras file, prunable or why not")
    p.add_argument("model", help="a .keras file")
    p.add_argument("--prunable-only", action="store_true", help="leave out the frozen groups")
    p.set_defaults(func=cmd_analyze)

    p = sub.add_parser("report", help="layer widths, parameters and FLOPs, before and after")
    p.add_argument("before", help="a .keras file")
    p.add_argument("after", nargs="?", default=None, help="a second .keras file to compare with")
    p.add_argument("--sizes", action="store_true", help="also bytes as .keras, SavedModel and TFLite")
    p.add_argument("--plots", default=None, metavar="DIR",
                   help="write plots: pattern (with two models), saliency of the first, run curve (with --run)")
    p.add_argument("--run", default=None, metavar="RUN_DIR", help="a gradual run directory to plot (history.json)")
    p.add_argument("--metric", default="val_accuracy", help="metric of the run plot (default val_accuracy)")
    p.add_argument("--target", default=None, help="target line of the run plot (default: the run's own target)")
    p.add_argument("--normalization", default="layer_mean", choices=["layer_mean", "l2", "none"],
                   help="normalization of the saliency plot's scores (default layer_mean)")
    p.add_argument("--plot-format", default="png", choices=["png", "svg"])
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("export", help="TFLite (checked against Keras) and SavedModel of a .keras file")
    p.add_argument("model", help="a .keras file (a thin model)")
    p.add_argument("--tflite", default=None, metavar="FILE", help="write a .tflite file")
    p.add_argument("--saved-model", default=None, metavar="DIR", help="write a SavedModel directory")
    p.add_argument("--quantize", choices=["float16", "int8"], default=None, help="TFLite quantization")
    p.add_argument("--calibration-data", default=None, metavar="NPY_OR_DATASET",
                   help="int8 calibration inputs: a .npy file of inputs, or a dataset name (mnist, cifar10)")
    p.add_argument("--calibration-steps", type=int, default=100, help="calibration examples (default 100)")
    p.add_argument("--data-dir", default=None, help="tfds data_dir for --calibration-data")
    p.set_defaults(func=cmd_export)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of the ``kerasprune`` command; returns the exit status."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (KerasPruneError, ValueError, KeyError, FileNotFoundError) as exc:
        text = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
        print(f"kerasprune: error: {text}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("kerasprune: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
