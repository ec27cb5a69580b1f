"""The ``kerasprune`` command: train a zoo model, analyze it, prune it gradually, softly during
training or to a measured speed-up, report and export the result.

The parser is built in two stages, so that ``kerasprune --help`` imports neither Keras nor
TensorFlow: :func:`build_parser` gives the top-level parser, whose subcommands are empty
until one of them is parsed; only then does that subcommand add its arguments, reading the
choices it lists from the registries that define them (criteria from
:func:`kerasprune.importance.available_criteria`, normalizations from
:mod:`kerasprune.importance.normalize`, scopes, units, methods and hierarchies from
:mod:`kerasprune.selection`, models from the zoo, datasets from :mod:`kerasprune.data`, ...).

``--data`` reads a user's data (:func:`kerasprune.data.load_data`: a directory of images in
class folders, a ``.npz``, ``module:function`` or a tensorflow-datasets name); ``prune`` and
``soft`` train with the loss, metrics and optimizer saved in the ``.keras`` file, replaced
only by ``--loss``, ``--metrics``, ``--optimizer`` and ``--lr``.

Every argument error is one line, ``kerasprune: error: ...``, naming the flag and what it
accepts, with exit status 1; numeric ranges and the flags that only make sense together are
checked while parsing, before anything is read or written, and the rest (data, loss,
exclude patterns, the target's metric) before ``prune`` writes to its run directory.

References:

- Xu et al. (2018), globally soft filter pruning (GSFP): Ke Xu, Xiaoyun Wang, Qun Jia,
  Jianjing An and Dong Wang, "Globally Soft Filter Pruning For Efficient Convolutional
  Neural Networks", submitted to ICLR 2019, OpenReview id H1fevoAcKX, 2018.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, NoReturn, Optional, Sequence, Tuple

from kerasprune.backend import configured as configured_backend
from kerasprune.errors import KerasPruneError, UsageError, first_line

__all__ = ["main", "build_parser", "Command", "COMMANDS", "OPTIMIZERS"]

#: the optimizers ``--optimizer`` names as examples (it takes any Keras optimizer; ``sgd``
#: gets momentum 0.9)
OPTIMIZERS = ("adam", "sgd")


# --------------------------------------------------------------------------- the commands


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
        reason = first_line(exc, type(exc).__name__)
        raise UsageError(f"cannot load {path} as a Keras model: {reason[:200]}") from None


def _save(model, path: Path) -> None:
    """Write ``model`` to ``path`` atomically (a kill leaves the old file or none)."""
    from kerasprune.runs.rundir import atomic_save_model

    atomic_save_model(model, path)


def _data(args: argparse.Namespace, input_shape: Optional[Sequence[Optional[int]]]):
    """The ``(train, val)`` of the data flags (:func:`kerasprune.data.load_data`).

    A directory's images are read at ``--image-size``, else at the size of
    ``input_shape`` (the model's own input), with its number of channels.
    """
    from kerasprune import data

    shape = tuple(input_shape) if input_shape is not None else ()
    image_size = args.image_size
    if image_size is None and len(shape) == 3 and None not in shape[:2]:
        image_size = (int(shape[0]), int(shape[1]))
    channels = int(shape[-1]) if len(shape) == 3 and shape[-1] is not None else 3
    return data.load_data(
        _source(args), batch_size=args.batch_size, train_split=args.train_split,
        val_split=args.val_split, val_fraction=args.val_fraction, image_size=image_size,
        channels=channels, rescale=args.rescale, take=args.take, val_take=args.val_take,
        augment=args.augment, seed=args.seed, data_dir=args.data_dir,
    )


def _source(args: argparse.Namespace) -> str:
    """The data source of ``--data`` or ``--dataset`` (default mnist)."""
    return args.data or args.dataset or "mnist"


def _fits(splits, model, source: str) -> None:
    """Refuse data whose inputs or classes do not fit the model, naming both."""
    expected = tuple(model.input_shape[1:]) if len(model.inputs) == 1 else None
    got = splits.input_shape
    if expected is not None and got is not None and (
        len(got) != len(expected)
        or any(e is not None and g is not None and e != g for e, g in zip(expected, got))
    ):
        hint = " (--image-size sets the size images are read at)" if splits.kind in (
            "directory", "tfds") else ""
        raise UsageError(f"--data {source} gives inputs of shape {tuple(got)}, and "
                         f"{model.name} takes {expected}{hint}")
    out = model.output_shape
    if splits.num_classes and isinstance(out, tuple) and len(out) == 2 and out[-1] not in (
            None, 1, splits.num_classes):
        raise UsageError(f"--data {source} has {splits.num_classes} classes, and {model.name} "
                         f"outputs {out[-1]} scores per example")


def _optimizer(name: str, lr: float):
    """A new optimizer named ``name`` with learning rate ``lr`` (``sgd``: momentum 0.9)."""
    import keras

    if name == "sgd":
        return keras.optimizers.SGD(lr, momentum=0.9)
    cls = type(keras.optimizers.get(name))
    return cls(learning_rate=lr)


def _compile(model, args: argparse.Namespace) -> None:
    """``train``: the zoo model's setup, ``--optimizer`` (default adam) at ``--lr`` (0.001),
    ``--loss`` (default sparse categorical cross-entropy), ``--metrics`` (accuracy)."""
    model.compile(optimizer=_optimizer(args.optimizer or "adam", args.lr or 1e-3),
                  loss=args.loss or "sparse_categorical_crossentropy",
                  metrics=args.metrics or ["accuracy"])


def _training_setup(model, args: argparse.Namespace) -> str:
    """``prune`` and ``soft``: the compile configuration saved in the ``.keras`` file, with
    ``--loss``, ``--metrics``, ``--optimizer`` and ``--lr`` replacing its parts.

    Returns:
        One line saying which loss, optimizer and metrics are used, and where they come from.

    Raises:
        UsageError: the model has no loss and ``--loss`` is not given.
    """
    import keras

    from kerasprune.pruning.preflight import has_loss

    compiled = bool(getattr(model, "compiled", False))
    if not has_loss(model) and args.loss is None:
        how = "without a loss" if compiled else "uncompiled (no loss, optimizer or metrics)"
        raise UsageError(
            f"{args.model} was saved {how}: pass --loss, e.g. --loss "
            "sparse_categorical_crossentropy for integer labels and softmax outputs, and "
            "--metrics accuracy to measure accuracy (--optimizer and --lr default to adam, "
            "0.001)"
        )
    overrides = [f for f in ("loss", "metrics", "optimizer", "lr") if getattr(args, f)]
    if overrides:
        config = dict(model.get_compile_config() or {}) if compiled else {}
        if args.loss:
            config["loss"] = args.loss
        if args.metrics:
            config["metrics"] = list(args.metrics)
        saved = getattr(model, "optimizer", None) if compiled else None
        if args.optimizer or saved is None:
            lr = args.lr or (_learning_rate(saved) if saved is not None else None) or 1e-3
            optimizer = _optimizer(args.optimizer or "adam", lr)
        elif args.lr:
            optimizer = type(saved).from_config({**saved.get_config(), "learning_rate": args.lr})
        else:
            optimizer = saved
        config["optimizer"] = keras.optimizers.serialize(optimizer)
        model.compile_from_config(config)
    loss = getattr(model.loss, "name", None) or getattr(model.loss, "__name__", None) or str(
        model.loss)
    names = ", ".join(_metric_names(model)) or "none"
    lr = _learning_rate(model.optimizer)
    lr_text = f" (lr {lr:g})" if lr is not None else ""
    where = f"{Path(args.model).name}'s own" if not overrides else (
        f"{Path(args.model).name}'s, with --{', --'.join(overrides)}")
    return (f"training setup ({where}): loss {loss}, optimizer "
            f"{type(model.optimizer).__name__}{lr_text}, metrics {names}")


def _learning_rate(optimizer) -> Optional[float]:
    try:
        return float(optimizer.learning_rate)
    except (TypeError, ValueError, AttributeError):  # a schedule
        return None


def _metric_names(model) -> List[str]:
    config = model.get_compile_config() or {}
    metrics = config.get("metrics") or []
    if isinstance(metrics, dict):
        metrics = [m for ms in metrics.values() for m in (ms if isinstance(ms, list) else [ms])]
    out = []
    for m in metrics if isinstance(metrics, list) else [metrics]:
        if isinstance(m, dict):
            m = (m.get("config") or {}).get("name") or m.get("class_name")
        out.append(str(m))
    return out


def _verbose(args: argparse.Namespace) -> int:
    return 1 if args.verbose else 2


def cmd_train(args: argparse.Namespace) -> int:
    """``kerasprune train``: a zoo model trained on a dataset, saved as a baseline.

    Args:
        args: the parsed arguments of ``train``.

    Returns:
        The exit status, 0.
    """
    import keras

    from kerasprune import data, models

    keras.utils.set_random_seed(args.seed)
    source = _source(args)
    default_shape = None
    if args.image_size is None and data.data_kind(source) in ("directory", "tfds"):
        default_shape = models.get_model(args.model).input_shape[1:]  # the builder's own size
    splits = _data(args, default_shape)
    if splits.num_classes is None or splits.input_shape is None:
        raise UsageError(f"--data {source} does not say how many classes or what shape its "
                         f"inputs have, which train needs to build {args.model}: give a "
                         "directory, a .npz or a dataset name")
    train, val = splits
    model = models.get_model(args.model, num_classes=splits.num_classes,
                             input_shape=splits.input_shape)
    _compile(model, args)
    model.fit(train, validation_data=val, epochs=args.epochs, shuffle=False,
              verbose=_verbose(args))
    out = Path(args.out)
    _save(model, out)
    print(f"saved {out} (seed {args.seed})")
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    """``kerasprune prune``: gradual global pruning of a ``.keras`` file.

    Args:
        args: the parsed arguments of ``prune``.

    Returns:
        The exit status, 0.
    """
    import keras

    from kerasprune.pruning import GradualPruner
    from kerasprune.report import compare
    from kerasprune.runs.rundir import RunDirectory

    keras.utils.set_random_seed(args.seed)
    criterion = args.criterion or ("gsfp" if args.accumulate else "aaws")
    run_dir = RunDirectory(args.dir)
    resuming = bool(run_dir.history())
    if resuming and not args.resume:
        raise UsageError(
            f"{args.dir} already holds a run: add --resume to continue it, or pick another --dir"
        )
    model = None
    setup = None
    if not resuming:
        model = _load_model(args.model)
        setup = _training_setup(model, args)
    pruner = GradualPruner(
        args.dir, target=args.target, rounds=args.rounds,
        ratio=args.rising if args.rising is not None else args.ratio, criterion=criterion,
        normalization=args.normalization, options=_options(args),
        fine_tune_epochs=args.fine_tune_epochs, accumulate=args.accumulate,
        score_batches=args.score_batches, verbose=_verbose(args), tensorboard=args.tensorboard,
        compensate=args.compensate, fold_constants=args.fold_constants, retries=args.retries,
    )
    if model is None:
        model = _load_model(str(run_dir.checkpoint(0)))  # for the input size of the data
    splits = _data(args, model.input_shape[1:] if len(model.inputs) == 1 else None)
    _fits(splits, model, _source(args))
    if setup is not None:
        print(setup)
    train, val = splits
    best = pruner.run(None if resuming else model, train, val, resume=args.resume)
    out = run_dir.pruned_file  # written by the run, atomically
    baseline = _load_model(str(run_dir.checkpoint(0)))
    print(compare(baseline, best))
    print(f"pruned model: {out}")
    return 0


def cmd_soft(args: argparse.Namespace) -> int:
    """``kerasprune soft``: the GSFP of Xu et al. (2018) during ``fit``, then strip.

    Trains ``--epochs`` epochs with :class:`~kerasprune.callbacks.SoftFilterPruning`
    masking ``--ratio`` of the channels at every epoch end, then removes the channels
    still masked (:func:`~kerasprune.callbacks.strip`).

    Args:
        args: the parsed arguments of ``soft``.

    Returns:
        The exit status, 0.
    """
    import keras

    from kerasprune.callbacks import SoftFilterPruning, strip
    from kerasprune.report import compare

    keras.utils.set_random_seed(args.seed)
    out = Path(args.dir)
    if (out / "pruned.keras").exists():
        raise UsageError(f"{args.dir} already holds a result: pick another --dir")
    soft = SoftFilterPruning(
        ratio=args.ratio, criterion=args.criterion, normalization=args.normalization,
        options=_options(args), tensorboard_dir=args.tensorboard,
    )
    model = _load_model(args.model)
    setup = _training_setup(model, args)
    base = _load_model(args.model)  # the report's "before"
    splits = _data(args, model.input_shape[1:] if len(model.inputs) == 1 else None)
    _fits(splits, model, _source(args))
    print(setup)
    train, val = splits
    model.fit(train, validation_data=val, epochs=args.epochs, callbacks=[soft], shuffle=False,
              verbose=_verbose(args))
    thin = strip(model)
    _save(model, out / "masked.keras")
    _save(thin, out / "pruned.keras")
    metrics = thin.evaluate(val, return_dict=True, verbose=0)
    print(compare(base, thin))
    print(" ".join(f"val_{k}={v:.4f}" for k, v in metrics.items()))
    print(f"pruned model: {out / 'pruned.keras'} (masked model: {out / 'masked.keras'})")
    return 0


def cmd_analyze(args: argparse.Namespace) -> int:
    """``kerasprune analyze``: the channel groups of a ``.keras`` file, prunable or why not.

    Args:
        args: the parsed arguments of ``analyze``.

    Returns:
        The exit status, 0.
    """
    from kerasprune.graph import analyze

    model = _load_model(args.model)
    graph = analyze(model)
    graph.summary(show_frozen=not args.prunable_only)
    n = sum(g.size for g in graph.prunable)
    print(f"{len(graph.prunable)} prunable groups ({n} neurons), {len(graph.frozen)} frozen")
    return 0


def _calibration(args: argparse.Namespace, model):
    """``--calibration-data``: a ``.npy`` file of inputs, or data as ``--data`` takes it (its
    training batches; a directory's images at the model's input size)."""
    if args.calibration_data is None:
        return None
    src = args.calibration_data
    if src.endswith(".npy"):
        import numpy as np

        if not Path(src).exists():
            raise UsageError(f"no such file: {src}")
        return np.load(src)
    from kerasprune import data

    shape = tuple(model.input_shape[1:]) if len(model.inputs) == 1 else ()
    sized = len(shape) == 3 and None not in shape
    function = data.data_kind(src) == "function"
    return data.load_data(
        src, batch_size=32, take=None if function else args.calibration_steps,
        image_size=shape[:2] if sized and not function else None,
        channels=int(shape[2]) if sized else 3, data_dir=args.data_dir,
    ).train


def cmd_speedup(args: argparse.Namespace) -> int:
    """``kerasprune speedup``: one shot, the smallest FLOPs cut measured ``--to`` times faster.

    Args:
        args: the parsed arguments of ``speedup``.

    Returns:
        The exit status, 0.
    """
    from kerasprune.pruning.speedup import prune_for_speedup

    model = _load_model(args.model)
    print(f"searching the smallest cut of {Path(args.model).name} that runs {args.to:g}x faster "
          f"(Keras, batch {args.batch_size}, {args.samples} interleaved samples per trial)")
    found = prune_for_speedup(
        model, args.to, criterion=args.criterion, normalization=args.normalization,
        scope=args.scope, batch_size=args.batch_size, max_ratio_flops=args.max_ratio_flops,
        tolerance=args.tolerance, min_channels=args.min_channels, round_to=args.round_to,
        exclude=args.exclude or (), samples=args.samples, verbose=1,
    )
    out = Path(args.out)
    _save(found.model, out)
    print(f"{found.ratio:.1%} of the FLOPs removed: measured {found.speedup:.2f}x faster "
          f"(FLOPs cut {found.flops_cut:.2f}x, efficiency {found.efficiency:.2f}); wrote {out}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """``kerasprune export``: TFLite (checked against Keras) and/or SavedModel of a file.

    Args:
        args: the parsed arguments of ``export``.

    Returns:
        The exit status, 0.
    """
    from kerasprune.export import export_saved_model, export_tflite

    model = _load_model(args.model)
    if args.saved_model:
        path = export_saved_model(model, args.saved_model)
        print(f"SavedModel: {path}")
    if args.tflite:
        result = export_tflite(
            model, args.tflite, quantize=args.quantize,
            calibration_data=_calibration(args, model),
            calibration_steps=args.calibration_steps,
        )
        print(f"TFLite: {result}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """``kerasprune report``: widths, parameters and FLOPs of one model, or two compared.

    Args:
        args: the parsed arguments of ``report``.

    Returns:
        The exit status, 0.
    """
    from kerasprune.report import compare

    a = _load_model(args.before)
    b = _load_model(args.after) if args.after else None
    print(compare(a, b))
    if args.sizes:
        from kerasprune.export import disk_sizes

        before = disk_sizes(a)
        after = disk_sizes(b) if b is not None else None
        print("\nsize on disk (bytes)")
        for fmt, label in (("keras", ".keras"), ("saved_model", "SavedModel"),
                           ("tflite", "TFLite float32")):
            if after is None:
                print(f"  {label:<15} {before[fmt]:>12,}")
            else:
                cut = 100.0 * (1 - after[fmt] / before[fmt])
                print(f"  {label:<15} {before[fmt]:>12,} -> {after[fmt]:>12,}  (-{cut:.1f}%)")
    if args.plots:
        _report_plots(args, a, b)
    return 0


def _report_plots(args: argparse.Namespace, before, after) -> None:
    """``report --plots DIR``: the pattern (two models), the saliency of the first, the run."""
    from kerasprune.importance import score
    from kerasprune.report import plots

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
        title = f"aaws scores of {Path(args.before).name} ({args.normalization})"
        plots.plot_saliency(scores, written[-1], title=title)
    if args.run:
        from kerasprune.runs.rundir import RunDirectory

        history = RunDirectory(args.run).history_file
        if not history.exists():
            raise UsageError(f"no run history: {history} does not exist")
        written.append(out / f"run{ext}")
        plots.plot_run(history, written[-1], metric=args.metric, target=_run_target(args))
    for path in written:
        print(f"plot: {path}")


def _run_target(args: argparse.Namespace):
    """The target of ``report --run``: ``--target``, else the run's own (run.json)."""
    if args.target is not None:
        return args.target
    from kerasprune.runs.rundir import RunDirectory
    from kerasprune.runs.target import parse_target

    target = (RunDirectory(args.run).settings() or {}).get("target")
    if target and parse_target(target).metric == args.metric:
        return target
    return None


# --------------------------------------------------------------------------- argument types


def _integer(low: int) -> Callable[[str], int]:
    """An argparse type: an integer ``>= low``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer >= {low}, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be an integer >= {low}, got {text}")
        return value

    return parse


def _number(low: float, high: Optional[float] = None, *, low_in: bool = False,
            high_in: bool = False) -> Callable[[str], float]:
    """An argparse type: a finite float above ``low`` (and below ``high``), bounds as told."""
    lo, hi = ("<=" if low_in else "<"), ("<=" if high_in else "<")
    if high is None:
        rule = f"a number {'>=' if low_in else '>'} {low:g}"
    else:
        rule = f"between {low:g} and {high:g} ({low:g} {lo} x {hi} {high:g})"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {rule}, got {text!r}") from None
        ok = math.isfinite(value) and (value >= low if low_in else value > low)
        if high is not None:
            ok = ok and (value <= high if high_in else value < high)
        if not ok:
            raise argparse.ArgumentTypeError(f"must be {rule}, got {text}")
        return value

    return parse


_FRACTION = _number(0.0, 1.0)  # a ratio in (0, 1)


def _target(text: str) -> str:
    """An argparse type: a target such as ``val_accuracy>=0.99`` (kept as text)."""
    from kerasprune.runs.target import parse_target

    try:
        parse_target(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _rising(text: str):
    """An argparse type: ``START,STEP,FINAL`` of a rising cumulative percentile schedule."""
    from kerasprune.pruning import RisingPercentile

    try:
        start, step, final = (float(v) for v in text.split(","))
        return RisingPercentile(start, step, final)
    except ValueError as exc:
        why = str(exc) if "start and final" in str(exc) else "three numbers separated by commas"
        raise argparse.ArgumentTypeError(
            f"START,STEP,FINAL: {why} (e.g. 0.5,0.1,0.97), got {text!r}"
        ) from None


def _criterion(text: str) -> str:
    """An argparse type: any criterion registered with the importance registry."""
    from kerasprune.importance import get_criterion

    try:
        get_criterion(text)
    except KerasPruneError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _weight_criteria() -> List[str]:
    """The registered criteria computed from the weights alone (``needs="weights"``)."""
    from kerasprune.importance import available_criteria, get_criterion

    return [c for c in available_criteria() if get_criterion(c).needs == "weights"]


def _weight_criterion(text: str) -> str:
    """An argparse type: a registered criterion that needs no data (``speedup``)."""
    from kerasprune.importance import get_criterion

    _criterion(text)
    if get_criterion(text).needs != "weights":
        raise argparse.ArgumentTypeError(
            f"criterion {text!r} is computed from data, and speedup scores from the weights "
            f"alone: one of {', '.join(_weight_criteria())}"
        )
    return text


def _accumulable_criteria() -> List[str]:
    """The criteria that can be accumulated inside ``fit`` (``soft --criterion``,
    ``prune --accumulate``), from the registry."""
    from kerasprune.importance import accumulable_criteria

    return accumulable_criteria()


def _calibration_source(text: str) -> str:
    """An argparse type: a ``.npy`` file, or data as ``--data`` takes it."""
    from kerasprune.data import data_kind

    if text.endswith(".npy"):
        return text
    try:
        data_kind(text)
    except KerasPruneError as exc:
        raise argparse.ArgumentTypeError(
            f"must be a .npy file of inputs or data as --data takes it (a directory of images, "
            f"a .npz, module:function, or a dataset such as mnist): {exc}"
        ) from None
    return text


def _data_source(text: str) -> str:
    """An argparse type: a data source :func:`kerasprune.data.load_data` can read."""
    from kerasprune.data import data_kind

    try:
        data_kind(text)
    except KerasPruneError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _image_size(text: str) -> Tuple[int, int]:
    """An argparse type: ``HxW`` (or ``H,W``, or one number for a square) in pixels."""
    parts = text.lower().replace(",", "x").split("x")
    try:
        size = tuple(int(v) for v in parts)
    except ValueError:
        size = ()
    if len(size) == 1:
        size = size * 2
    if len(size) != 2 or min(size) < 1:
        raise argparse.ArgumentTypeError(f"must be HEIGHTxWIDTH in pixels, e.g. 32x32, got "
                                         f"{text!r}")
    return size  # type: ignore[return-value]


def _rescale(text: str) -> float:
    """An argparse type: a positive factor, as a number or a fraction (``1/255``)."""
    try:
        top, _, bottom = text.partition("/")
        value = float(top) / float(bottom) if bottom else float(top)
    except (ValueError, ZeroDivisionError):
        value = float("nan")
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive number or fraction, e.g. 1/255, "
                                         f"got {text!r}")
    return value


def _keras_name(kind: str, one: str, examples: str) -> Callable[[str], str]:
    """An argparse type: a name ``keras.<kind>.get`` knows (``one``: what it names)."""

    def parse(text: str) -> str:
        import keras

        try:
            getattr(keras, kind).get(text)
        except (ValueError, TypeError):
            raise argparse.ArgumentTypeError(
                f"Keras has no {one} named {text!r} (e.g. {examples})") from None
        return text

    return parse


_loss = _keras_name("losses", "loss", "sparse_categorical_crossentropy, categorical_crossentropy, "
                              "binary_crossentropy, mse")
_metric = _keras_name("metrics", "metric", "accuracy, sparse_top_k_categorical_accuracy, auc")
_optimizer_name = _keras_name("optimizers", "optimizer", ", ".join(OPTIMIZERS))


class _Moved(argparse.Action):
    """A flag that moved to another command: using it is a one-line error saying where.

    ``moved_to`` completes the sentence ``"kerasprune prune --soft ..."``.
    """

    def __init__(self, option_strings: Sequence[str], dest: str, *, moved_to: str,
                 **kwargs: Any) -> None:
        self.moved_to = moved_to
        super().__init__(option_strings, dest, default=argparse.SUPPRESS, help=argparse.SUPPRESS,
                         **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: Optional[str] = None) -> None:
        parser.error(f"{parser.prog} {option_string} {self.moved_to}")


# --------------------------------------------------------------------------- the arguments


def _choices_help(text: str, names: Sequence[str]) -> str:
    return f"{text}: {', '.join(names)}" if names else text


def _data_args(p: argparse.ArgumentParser) -> None:
    from kerasprune.data import available_datasets

    g = p.add_argument_group(
        "data", "inputs are fed as they are (pixels 0-255 for images), except those of the "
        "datasets kerasprune prepares (" + ", ".join(available_datasets()) + "): the model "
        "holds the preprocessing it expects, or --rescale gives it")
    g.add_argument("--data", type=_data_source, default=None, metavar="SOURCE",
                   help="a directory of images in class folders (DIR/<class>/<image>), a .npz "
                        "with arrays x, y (and x_val, y_val), module:function returning "
                        "(train, val) datasets, or a tensorflow-datasets name (default mnist)")
    g.add_argument("--dataset", default=None, choices=available_datasets(),
                   help="a dataset kerasprune prepares: the same as --data NAME")
    g.add_argument("--data-dir", default=None,
                   help="tfds data_dir (default: $TFDS_DATA_DIR or ~/tensorflow_datasets)")
    g.add_argument("--batch-size", type=_integer(1), default=128, help="(default 128)")
    g.add_argument("--train-split", default="train[:90%]",
                   help="tfds split trained on (default train[:90%%])")
    g.add_argument("--val-split", default="train[90%:]",
                   help="tfds split metrics are measured on (default train[90%%:])")
    g.add_argument("--val-fraction", type=_FRACTION, default=0.1,
                   help="fraction of a directory's images (or of a .npz without x_val) held "
                        "out for validation (default 0.1)")
    g.add_argument("--image-size", type=_image_size, default=None, metavar="HxW",
                   help="size images are read at (default: the model's input size)")
    g.add_argument("--rescale", type=_rescale, default=None, metavar="FACTOR",
                   help="multiply every input by FACTOR, e.g. 1/255 (for data whose "
                        "scaling is not inside the model)")
    g.add_argument("--take", type=_integer(1), default=None,
                   help="use only this many training examples")
    g.add_argument("--val-take", type=_integer(1), default=None,
                   help="use only this many validation examples")
    g.add_argument("--augment", action="store_true",
                   help="random crop (and flip, CIFAR-10) of a dataset kerasprune prepares")
    g.add_argument("--seed", type=_integer(0), default=0)
    t = p.add_argument_group(
        "training", "prune and soft use the loss, metrics and optimizer saved in the .keras "
        "file; these flags replace them (a model saved without a loss needs --loss)")
    t.add_argument("--loss", type=_loss, default=None, metavar="NAME",
                   help="a Keras loss, e.g. sparse_categorical_crossentropy")
    t.add_argument("--metrics", type=_metric, action="append", default=None, metavar="NAME",
                   help="a Keras metric, e.g. accuracy (repeatable)")
    t.add_argument("--optimizer", type=_optimizer_name, default=None, metavar="NAME",
                   help=f"a Keras optimizer, e.g. {', '.join(OPTIMIZERS)} (default adam)")
    t.add_argument("--lr", type=_number(0.0), default=None,
                   help="learning rate (default: the saved optimizer's, else 0.001)")
    t.add_argument("-q", "--quiet", dest="verbose", action="store_false",
                   help="one line per epoch instead of progress bars")


def _selection_args(p: argparse.ArgumentParser, *, gradual: bool) -> None:
    """The options of :func:`kerasprune.select`, with choices from its constants."""
    from kerasprune.importance.normalize import available_normalizations
    from kerasprune.selection import HIERARCHIES, METHODS, SCOPES, UNITS

    g = p.add_argument_group("selection")
    g.add_argument("--normalization", default="layer_mean", choices=available_normalizations(),
                   help="per-group normalization of the scores (default layer_mean)")
    g.add_argument("--scope", default="global", choices=list(SCOPES), help="(default global)")
    g.add_argument("--unit", default="neurons", choices=UNITS,
                   help="what --ratio counts (default neurons)")
    if gradual:
        g.add_argument("--hierarchy", default="channels", choices=HIERARCHIES,
                       help=f"hierarchical scope: share each level's budget by "
                            f"{' or '.join(HIERARCHIES)} (default channels)")
        g.add_argument("--method", default="count", choices=METHODS,
                       help="remove the lowest --ratio (count) or every channel below that "
                            "percentile of the scores (percentile; with --unit neurons)")
    g.add_argument("--min-channels", type=_integer(1), default=1,
                   help="no group keeps fewer channels (default 1)")
    g.add_argument("--max-ratio", type=_number(0.0, 1.0, high_in=True), default=1.0,
                   help="no group loses more than this fraction of its channels (default 1)")
    g.add_argument("--round-to", type=_integer(1), default=1,
                   help="every pruned group keeps a multiple of this many channels (default 1)")
    g.add_argument("--exclude", action="append", metavar="PATTERN",
                   help="a group or producing layer to leave alone, fnmatch patterns allowed "
                        "(repeatable)")
    g.add_argument("--uniform", action="store_true",
                   help="groups repeated from block to block lose the same number of channels")
    g.add_argument("--hidden-size", action="store_true",
                   help="also prune groups normalized together (a transformer's hidden size)")


def _options(args: argparse.Namespace) -> "SelectionOptions":  # noqa: F821
    """The :class:`~kerasprune.SelectionOptions` of the options :func:`_selection_args` added."""
    from kerasprune.selection import SelectionOptions

    return SelectionOptions(
        scope=args.scope, unit=args.unit, hierarchy=getattr(args, "hierarchy", "channels"),
        method=getattr(args, "method", "count"), min_channels=args.min_channels,
        max_ratio=args.max_ratio, round_to=args.round_to, exclude=args.exclude or (),
        uniform=args.uniform, hidden_size=args.hidden_size,
    )


def _train_args(p: argparse.ArgumentParser) -> None:
    from kerasprune.models import available_models

    p.add_argument("--model", default="lenet5", choices=available_models(),
                   help="zoo model (default lenet5)")
    p.add_argument("--epochs", type=_integer(1), default=2, help="(default 2)")
    p.add_argument("--out", required=True, help="where to write the trained .keras file")
    _data_args(p)


def _prune_args(p: argparse.ArgumentParser) -> None:
    from kerasprune.importance import available_criteria

    p.add_argument("model", help="the trained .keras file")
    p.add_argument("--dir", required=True, help="run directory for checkpoints and history")
    p.add_argument("--target", type=_target, default=None,
                   help="keep pruning while it holds, e.g. 'val_accuracy>=0.99'")
    p.add_argument("--rounds", type=_integer(1), default=None, help="at most this many rounds")
    ratio = p.add_mutually_exclusive_group()
    ratio.add_argument("--ratio", type=_FRACTION, default=0.05,
                       help="fraction removed per round, in (0, 1) (default 0.05)")
    ratio.add_argument("--rising", type=_rising, default=None, metavar="START,STEP,FINAL",
                       help="a rising cumulative percentile schedule instead of a constant ratio")
    p.add_argument("--criterion", type=_criterion, default=None, metavar="NAME",
                   help=_choices_help("importance criterion (default aaws, gsfp with "
                                      "--accumulate), one registered", available_criteria()))
    _selection_args(p, gradual=True)
    p.add_argument("--fine-tune-epochs", type=_integer(0), default=1,
                   help="epochs of fine-tuning after each round (default 1)")
    p.add_argument("--score-batches", type=_integer(1), default=None,
                   help="batches used by data-driven criteria")
    p.add_argument("--resume", action="store_true", help="continue the run in --dir")
    p.add_argument("--accumulate", action="store_true",
                   help=_choices_help("score each round by the saliency accumulated during the "
                                      "previous fine-tuning, for", _accumulable_criteria()))
    p.add_argument("--tensorboard", default=None, metavar="DIR",
                   help="write TensorBoard scalars and saliency histograms per round")
    p.add_argument("--compensate", choices=("none", "mean"), default=None,
                   help="mean: fold each removed channel's mean activation over the scoring "
                        "data into the next layers' biases")
    p.add_argument("--fold-constants", action="store_true",
                   help="also remove the channels that carry zero or a constant each round, "
                        "folding the constant into the next biases")
    p.add_argument("--retries", type=int, default=0, metavar="N",
                   help="when a round misses the target, prune the last model that met it again "
                        "with half the ratio, up to N times in a row (default 0: stop)")
    p.add_argument("--soft", action=_Moved, nargs=0,
                   moved_to="is now its own command: kerasprune soft MODEL --dir DIR --ratio R "
                            "(kerasprune soft -h)")
    p.add_argument("--soft-epochs", action=_Moved,
                   moved_to="is now --epochs of its own command, kerasprune soft "
                            "(kerasprune soft -h)")
    _data_args(p)


def _soft_args(p: argparse.ArgumentParser) -> None:
    criteria = _accumulable_criteria()
    p.add_argument("model", help="the trained .keras file")
    p.add_argument("--dir", required=True,
                   help="where to write pruned.keras (stripped) and masked.keras")
    p.add_argument("--ratio", type=_FRACTION, required=True,
                   help="fraction of the --unit masked at every epoch end, in (0, 1)")
    p.add_argument("--epochs", type=_integer(1), default=10,
                   help="training epochs, each ending with a new mask (default 10)")
    p.add_argument("--criterion", default="gsfp", choices=criteria,
                   help="saliency accumulated over each epoch's training steps (default gsfp)")
    _selection_args(p, gradual=False)
    p.add_argument("--tensorboard", default=None, metavar="DIR",
                   help="write TensorBoard scalars and saliency histograms per epoch")
    _data_args(p)


def _speedup_args(p: argparse.ArgumentParser) -> None:
    from kerasprune.importance.normalize import available_normalizations
    from kerasprune.selection import SCOPES

    p.add_argument("model", help="the trained .keras file")
    p.add_argument("--to", type=_number(1.0), required=True,
                   help="the speed-up wanted, > 1, e.g. 2")
    p.add_argument("--out", required=True, help="where to write the thin .keras file")
    p.add_argument("--batch-size", type=_integer(1), default=1,
                   help="batch the latency is measured at (default 1)")
    p.add_argument("--criterion", type=_weight_criterion, default="aaws", metavar="NAME",
                   help=_choices_help("a weight criterion (default aaws)", _weight_criteria()))
    p.add_argument("--normalization", default="layer_mean", choices=available_normalizations(),
                   help="(default layer_mean)")
    p.add_argument("--scope", default="global", choices=list(SCOPES), help="(default global)")
    p.add_argument("--min-channels", type=_integer(1), default=1)
    p.add_argument("--round-to", type=_integer(1), default=1)
    p.add_argument("--exclude", action="append", metavar="PATTERN",
                   help="a group or producing layer to leave alone, fnmatch patterns allowed "
                        "(repeatable)")
    p.add_argument("--max-ratio-flops", type=_FRACTION, default=0.95,
                   help="the largest fraction of FLOPs the search may remove (default 0.95)")
    p.add_argument("--tolerance", type=_number(0.0, 1.0), default=0.01,
                   help="stop when the bracket of ratios is this narrow (default 0.01)")
    p.add_argument("--samples", type=_integer(1), default=5,
                   help="interleaved timing samples per trial (default 5)")


def _analyze_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="a .keras file")
    p.add_argument("--prunable-only", action="store_true", help="leave out the frozen groups")


def _report_args(p: argparse.ArgumentParser) -> None:
    from kerasprune.importance.normalize import available_normalizations
    from kerasprune.report.plots import FORMATS

    p.add_argument("before", help="a .keras file")
    p.add_argument("after", nargs="?", default=None, help="a second .keras file to compare with")
    p.add_argument("--sizes", action="store_true", help="also bytes as .keras, SavedModel, TFLite")
    p.add_argument("--plots", default=None, metavar="DIR",
                   help="write plots: pattern (with two models), saliency of the first, "
                        "run curve (with --run)")
    p.add_argument("--run", default=None, metavar="RUN_DIR",
                   help="a gradual run directory to plot (history.json); needs --plots")
    p.add_argument("--metric", default="val_accuracy",
                   help="metric of the run plot (default val_accuracy)")
    p.add_argument("--target", type=_target, default=None,
                   help="target line of the run plot (default: the run's own target)")
    p.add_argument("--normalization", default="layer_mean", choices=available_normalizations(),
                   help="normalization of the saliency plot's scores (default layer_mean)")
    p.add_argument("--plot-format", default="png", choices=[f.lstrip(".") for f in FORMATS],
                   help="(default png)")


def _export_args(p: argparse.ArgumentParser) -> None:
    from kerasprune.data import available_datasets
    from kerasprune.export import QUANTIZATIONS

    p.add_argument("model", help="a .keras file (a thin model)")
    p.add_argument("--tflite", default=None, metavar="FILE", help="write a .tflite file")
    p.add_argument("--saved-model", default=None, metavar="DIR",
                   help="write a SavedModel directory")
    p.add_argument("--quantize", choices=[q for q in QUANTIZATIONS if q], default=None,
                   help="TFLite quantization (default none: float32)")
    p.add_argument("--calibration-data", type=_calibration_source, default=None,
                   metavar="NPY_OR_DATA",
                   help=_choices_help("int8 calibration inputs: a .npy file of inputs, or data "
                                      "as --data of prune takes it, such as", available_datasets()))
    p.add_argument("--calibration-steps", type=_integer(1), default=100,
                   help="calibration examples (default 100)")
    p.add_argument("--data-dir", default=None, help="tfds data_dir for --calibration-data")


# --------------------------------------------------------------------------- checks across flags


def _check_data(args: argparse.Namespace) -> None:
    from kerasprune import data

    if args.data is not None and args.dataset is not None:
        raise UsageError(f"give --data or --dataset, not both (--dataset {args.dataset} is "
                         f"--data {args.dataset})")
    source = _source(args)
    try:
        data.check_options(source, data.data_kind(source), augment=args.augment,
                           rescale=args.rescale, take=args.take, val_take=args.val_take,
                           image_size=args.image_size)
    except KerasPruneError as exc:
        raise UsageError(str(exc)) from None


def _check_prune(args: argparse.Namespace) -> None:
    _check_data(args)
    if args.accumulate:
        allowed = _accumulable_criteria()
        criterion = args.criterion or "gsfp"
        if criterion not in allowed:
            raise UsageError(f"--accumulate takes its scores from the training steps, which "
                             f"compute {', '.join(allowed)}; --criterion {criterion} is not one")
    if args.method == "percentile" and args.unit != "neurons":
        raise UsageError("--method percentile thresholds channel scores: use it with "
                         "--unit neurons")
    if args.target is None and args.rounds is None:
        raise UsageError("give --target (e.g. 'val_accuracy>=0.99') or --rounds N")
    if args.retries < 0:
        raise UsageError(f"--retries must be 0 or more, got {args.retries}")
    if args.retries and args.target is None:
        raise UsageError("--retries retries a round that misses the target: give --target too")


def _check_report(args: argparse.Namespace) -> None:
    if args.run and not args.plots:
        raise UsageError("--run draws into the --plots directory: give --plots DIR too")


def _check_export(args: argparse.Namespace) -> None:
    if not args.tflite and not args.saved_model:
        raise UsageError("nothing to do: give --tflite FILE and/or --saved-model DIR")
    if args.quantize and not args.tflite:
        raise UsageError("--quantize applies to the TFLite file: give --tflite FILE too")
    if args.quantize == "int8" and args.calibration_data is None:
        raise UsageError("--quantize int8 quantization needs calibration_data: give "
                         "--calibration-data, a .npy file of inputs or a dataset")


# --------------------------------------------------------------------------- the parser

# what TensorFlow's C++ runtime prints on stderr while it loads, whatever TF_CPP_MIN_LOG_LEVEL
_STARTUP_NOISE = (
    "WARNING: All log messages before absl::InitializeLog() is called",
    "oneDNN custom operations are on",
    "Could not find cuda drivers",
    "cpu_feature_guard.cc",
    "To enable the following instructions",
)


def _import_tensorflow_quietly() -> None:
    """Import TensorFlow with its start-up lines filtered out of stderr (when Keras will
    run on it).

    Only with ``TF_CPP_MIN_LOG_LEVEL=3`` (what :func:`main` sets unless told otherwise);
    every other line TensorFlow writes while loading (an error, a warning) is passed on.
    """
    if "tensorflow" in sys.modules or os.environ.get("TF_CPP_MIN_LOG_LEVEL") != "3":
        return
    if configured_backend() != "tensorflow":  # Keras will not import it
        return
    if importlib.util.find_spec("tensorflow") is None:
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no file descriptor 2 to redirect
        return
    with tempfile.TemporaryFile() as caught:
        os.dup2(caught.fileno(), 2)
        try:
            import tensorflow  # noqa: F401
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            caught.seek(0)
            for line in caught.read().decode(errors="replace").splitlines(keepends=True):
                if not any(noise in line for noise in _STARTUP_NOISE):
                    sys.stderr.write(line)


@dataclass(frozen=True)
class Command:
    """A subcommand of ``kerasprune``.

    Attributes:
        name: the subcommand's name.
        summary: its one line in ``kerasprune --help``.
        arguments: adds its arguments to its parser (importing the registries it lists).
        run: ``run(args) -> exit status``.
        check: raises :class:`~kerasprune.errors.UsageError` for flags that do not go together.
    """

    name: str
    summary: str
    arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    check: Optional[Callable[[argparse.Namespace], None]] = None


COMMANDS: Dict[str, Command] = {
    c.name: c
    for c in (
        Command("train", "train a zoo model to get a baseline .keras file", _train_args,
                cmd_train, _check_data),
        Command("prune", "gradual global pruning of a .keras file, round after round",
                _prune_args, cmd_prune, _check_prune),
        Command("soft", "soft filter pruning (GSFP) while training, then strip the masked "
                "channels", _soft_args, cmd_soft, _check_data),
        Command("speedup", "one-shot pruning to a speed-up measured on this machine",
                _speedup_args, cmd_speedup),
        Command("analyze", "the channel groups of a .keras file, prunable or why not",
                _analyze_args, cmd_analyze),
        Command("report", "layer widths, parameters and FLOPs, before and after; plots",
                _report_args, cmd_report, _check_report),
        Command("export", "TFLite (checked against Keras) and SavedModel of a .keras file",
                _export_args, cmd_export, _check_export),
    )
}


def _one_line(message: str) -> str:
    return " ".join(str(message).split())


class _Parser(argparse.ArgumentParser):
    """An argparse parser whose errors raise :class:`UsageError` instead of exiting."""

    def error(self, message: str) -> NoReturn:
        """Raise the argument error as a one-line :class:`UsageError`."""
        raise UsageError(_one_line(message))


class _CommandParser(_Parser):
    """A subcommand's parser: empty until it parses, then its arguments are added."""

    def __init__(self, *args: Any, command: Optional[Command] = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.command = command
        self._filled = command is None

    def fill(self) -> "_CommandParser":
        """Add the subcommand's arguments (once); returns the parser."""
        if not self._filled:
            self._filled = True
            _import_tensorflow_quietly()
            self.command.arguments(self)
            self.set_defaults(func=self.command.run)
        return self

    def parse_known_args(  # type: ignore[override]
        self, args: Optional[Sequence[str]] = None, namespace: Optional[argparse.Namespace] = None
    ) -> Tuple[argparse.Namespace, List[str]]:
        """Fill the parser, parse, then check the flags that must go together."""
        self.fill()
        namespace, extras = super().parse_known_args(args, namespace)
        if self.command is not None and self.command.check is not None and not extras:
            try:
                self.command.check(namespace)
            except UsageError as exc:
                self.error(str(exc))
        return namespace, extras

    def format_help(self) -> str:
        """The help of the filled parser."""
        self.fill()
        return super().format_help()


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``kerasprune`` command.

    Building it imports nothing beyond the standard library: each subcommand adds its
    arguments (and imports the registries its choices come from) when it is parsed, so
    ``kerasprune --help`` is fast and ``kerasprune prune --help`` lists the criteria
    registered at that moment, a user's own included.

    Returns:
        The parser; its errors raise :class:`~kerasprune.errors.UsageError` (one line)
        instead of exiting.
    """
    from kerasprune import __version__

    parser = _Parser(
        prog="kerasprune", description="Structured pruning for Keras 3.",
        epilog="kerasprune COMMAND -h lists the options of a command.",
    )
    parser.add_argument("--version", action="version", version=f"kerasprune {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                title="commands", parser_class=_CommandParser)
    for command in COMMANDS.values():
        sub.add_parser(command.name, help=command.summary, description=command.summary,
                       command=command)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of the ``kerasprune`` command.

    Args:
        argv: the arguments (default ``sys.argv[1:]``).

    Returns:
        The exit status: 0, 1 after an error (one line on stderr), 130 when interrupted.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        try:
            args = build_parser().parse_args(argv)
        except SystemExit as exc:  # --help and --version print, then exit
            return exc.code if isinstance(exc.code, int) else int(exc.code is not None)
        return args.func(args)
    except (KerasPruneError, ValueError, KeyError, FileNotFoundError) as exc:
        text = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
        print(f"kerasprune: error: {_one_line(text)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("kerasprune: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
