"""How long analyze() and rebuild() take, against the cost of rebuilding a model at all.

For each model, the three measurements are interleaved in every repeat and the median
is reported:

* analyze: ``kerasprune.analyze(model)``;
* rebuild: ``kerasprune.rebuild(model, keep, graph=graph)``, with a keep-set that removes
  about 30% of the channels of every prunable group (the same number in each block of a
  grouped layer);
* floor: what any rebuild has to pay, ``keras.Model.from_config(config)`` and
  ``set_weights(weights)`` for the thin model, with its config and weights prepared
  outside the timed region.

Usage::

    TF_CPP_MIN_LOG_LEVEL=3 .venv/bin/python bench/rebuild_speed.py
    .venv/bin/python bench/rebuild_speed.py --models resnet20 resnet110 --repeats 3
    .venv/bin/python bench/rebuild_speed.py --models resnet110 --profile

Progress goes to stderr, the report to stdout.
"""

from __future__ import annotations

import argparse
import copy
import cProfile
import gc
import pstats
import statistics
import sys
import time
import warnings
from typing import Callable, Dict, List, Sequence

import common  # noqa: E402,F401  (bench/common.py: environment first)
import keras  # noqa: E402
import numpy as np  # noqa: E402
from common import machine, print_table, versions  # noqa: E402

import kerasprune  # noqa: E402
from kerasprune.graph.composite import iter_layers  # noqa: E402
from kerasprune.models import cifar_resnet  # noqa: E402

PRUNE_FRACTION = 0.3

MODELS: Dict[str, Callable[[], keras.Model]] = {
    "resnet20": lambda: cifar_resnet(20),
    "resnet56": lambda: cifar_resnet(56),
    "resnet110": lambda: cifar_resnet(110),
    "resnet1202": lambda: cifar_resnet(1202),
    "densenet121": lambda: keras.applications.DenseNet121(
        weights=None, input_shape=(32, 32, 3), classes=10
    ),
    # hard-swish and its gates are keras.ops operations in the graph
    "mobilenetv3small": lambda: keras.applications.MobileNetV3Small(
        weights=None, input_shape=(32, 32, 3), classes=10
    ),
    # depthwise Conv2D(groups=C), LayerScale and ops additions
    "convnexttiny": lambda: keras.applications.ConvNeXtTiny(
        weights=None, input_shape=(32, 32, 3), classes=10
    ),
}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def keep_set(graph: kerasprune.PruningGraph, fraction: float, seed: int = 0) -> Dict[str, np.ndarray]:
    """About ``fraction`` of every prunable group removed, equally in each of its blocks."""
    rng = np.random.default_rng(seed)
    keep = {}
    for group in graph.prunable:
        per_block = group.size // group.blocks
        kept = per_block - int(round(fraction * per_block))
        kept = min(per_block, max(1, kept))
        if kept == per_block:
            continue
        idx = [
            b * per_block + np.sort(rng.choice(per_block, kept, replace=False))
            for b in range(group.blocks)
        ]
        keep[group.name] = np.concatenate(idx)
    return keep


def timed(fn: Callable[[], object]) -> tuple:
    gc.collect()
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def bench_model(name: str, repeats: int) -> dict:
    log(f"[{name}] building")
    model = MODELS[name]()
    layers = sum(1 for _ in iter_layers(model))
    t_analyze: List[float] = []
    t_rebuild: List[float] = []
    t_floor: List[float] = []
    row: dict = {"model": name, "layers": layers}
    for r in range(repeats):
        dt, graph = timed(lambda: kerasprune.analyze(model))
        t_analyze.append(dt)
        keep = keep_set(graph, PRUNE_FRACTION)
        dt, thin = timed(lambda: kerasprune.rebuild(model, keep, graph=graph))
        t_rebuild.append(dt)
        if r == 0:
            row["groups"] = f"{len(graph.prunable)}/{len(graph.groups)}"
            row["params"] = (model.count_params(), thin.count_params())
        config = copy.deepcopy(thin.get_config())
        weights = thin.get_weights()
        del thin

        def floor():
            m = keras.Model.from_config(config)
            m.set_weights(weights)
            return m

        dt, _ = timed(floor)
        t_floor.append(dt)
        del graph, keep, config, weights, _
        log(
            f"[{name}] repeat {r + 1}/{repeats}: analyze {t_analyze[-1]:.3f}s, "
            f"rebuild {t_rebuild[-1]:.3f}s, floor {t_floor[-1]:.3f}s"
        )
    # median of the per-repeat sum, not sum of medians: both are reported consistently
    row["analyze"] = statistics.median(t_analyze)
    row["rebuild"] = statistics.median(t_rebuild)
    row["both"] = statistics.median(a + b for a, b in zip(t_analyze, t_rebuild))
    row["floor"] = statistics.median(t_floor)
    row["ratio"] = row["both"] / row["floor"]
    del model
    keras.backend.clear_session()
    gc.collect()
    return row


def print_results(rows: Sequence[dict]) -> None:
    head = ("model", "layers", "groups (prunable/total)", "analyze s", "rebuild s",
            "analyze+rebuild s", "floor s", "ratio (a+r)/floor")
    body = [
        (
            r["model"],
            str(r["layers"]),
            r["groups"],
            f"{r['analyze']:.3f}",
            f"{r['rebuild']:.3f}",
            f"{r['both']:.3f}",
            f"{r['floor']:.3f}",
            f"{r['ratio']:.2f}x",
        )
        for r in rows
    ]
    print_table(head, body)


def print_scaling(rows: Sequence[dict]) -> None:
    resnets = [r for r in rows if r["model"].startswith("resnet")]
    if not resnets:
        return
    print()
    print("time per layer (ResNets):")
    for r in resnets:
        print(
            f"  {r['model']:<11} {r['layers']:>5} layers: analyze+rebuild "
            f"{1e3 * r['both'] / r['layers']:.2f} ms/layer, floor "
            f"{1e3 * r['floor'] / r['layers']:.2f} ms/layer"
        )
    if len(resnets) < 2:
        return
    # exponent k of time ~ layers^k, least squares on log-log; 1 means linear
    x = np.log([r["layers"] for r in resnets])
    verdicts = []
    for key, label in (("analyze", "analyze"), ("rebuild", "rebuild"),
                       ("both", "analyze+rebuild"), ("floor", "floor")):
        y = np.log([r[key] for r in resnets])
        k = float(np.polyfit(x, y, 1)[0])
        verdicts.append((label, k))
    small, big = resnets[0], resnets[-1]
    growth = (big["both"] / big["layers"]) / (small["both"] / small["layers"])
    linear = all(k < 1.15 for _, k in verdicts[:3])
    print(
        "scaling exponent k in time ~ layers^k: "
        + ", ".join(f"{label} {k:.2f}" for label, k in verdicts)
    )
    print(
        f"linear in layer count: {'yes' if linear else 'NO'} (analyze+rebuild time per layer "
        f"changes {growth:.2f}x from {small['model']} to {big['model']}, "
        f"{big['layers'] / small['layers']:.0f}x the layers)"
    )


def profile(name: str, top: int) -> None:
    """cProfile one analyze+rebuild of ``name``, after a warm-up run."""
    model = MODELS[name]()
    graph = kerasprune.analyze(model)
    keep = keep_set(graph, PRUNE_FRACTION)
    kerasprune.rebuild(model, keep, graph=graph)  # warm-up
    gc.collect()
    prof = cProfile.Profile()
    prof.enable()
    graph = kerasprune.analyze(model)
    kerasprune.rebuild(model, keep, graph=graph)
    prof.disable()
    print(f"\nprofile of analyze+rebuild on {name}, top {top} by cumulative time:")
    stats = pstats.Stats(prof, stream=sys.stdout)
    stats.sort_stats("cumulative").print_stats(top)
    print(f"\ntop {top} by own time:")
    stats.sort_stats("tottime").print_stats(top)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS),
                        help="models to measure (default: all)")
    parser.add_argument("--repeats", type=int, default=5,
                        help="timed repeats per model; the median is reported (default 5)")
    parser.add_argument("--profile", action="store_true",
                        help="after the table, cProfile analyze+rebuild of each chosen model")
    parser.add_argument("--top", type=int, default=40, help="rows of the profile to print")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")

    warnings.filterwarnings("ignore", message="kerasprune: layer")  # unsupported layers
    print(f"machine: {machine()}")
    print(f"versions: {versions()}")
    print(f"keep-set: {PRUNE_FRACTION:.0%} of every prunable group removed; "
          f"median of {args.repeats} interleaved repeats")
    print()
    rows = []
    for name in args.models:
        rows.append(bench_model(name, args.repeats))
    print_results(rows)
    print_scaling(rows)
    if args.profile:
        for name in args.models:
            profile(name, args.top)
            keras.backend.clear_session()
            gc.collect()


if __name__ == "__main__":
    main()
