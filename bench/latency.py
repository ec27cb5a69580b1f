"""Measured CPU latency of thin models against their originals, beside the FLOPs cut.

Not a test: prints a table. For each network it prunes one-shot by global AAWS to a
FLOPs target (``unit="flops"``), then times the original and the thin model in the same
run, interleaved, and reports medians:

* Keras: a compiled (``tf.function``) forward call at batch 1 and batch 32;
* TFLite: the LiteRT interpreter (float32) at batch 1.

Speed-up = original time / thin time; FLOPs reduction = original MACs / thin MACs;
efficiency = speed-up / FLOPs reduction (1.0: the thin model is exactly as much faster
as its MACs say). TensorFlow's intra-op threads and the interpreter's threads are fixed
to ``--threads`` (printed).

    .venv/bin/python bench/latency.py [--models vgg16_bn resnet56 lenet5] [--targets 0.5 0.8]
        [--round-to 1 8] [--speedups 2] [--speedup-batch 32] [--threads 2] [--samples 7]

``--speedups``: besides the FLOPs targets, thin models found by
:func:`kerasprune.prune_for_speedup` (the smallest FLOPs cut measured at least that many
times faster in Keras at ``--speedup-batch``), timed like the others.

LeNet-5 is the gradually pruned model of ``bench/reproduce_lenet.py`` when its run
directory exists (``--lenet-dir``), else pruned one-shot like the others.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Callable, Dict, List

import common  # noqa: E402,F401  (bench/common.py: environment first)
import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from common import machine, print_table, versions  # noqa: E402

import kerasprune as kp  # noqa: E402
from kerasprune.costs.latency import seconds_per_call  # noqa: E402
from kerasprune.export import export_tflite, interpreter_name, make_interpreter, run_tflite  # noqa: E402
from kerasprune.models import get_model  # noqa: E402


def timer(fn: Callable[[], object], min_seconds: float = 0.25, min_calls: int = 3) -> float:
    """Seconds per call of ``fn``: repeated until both minimums are reached."""
    return seconds_per_call(fn, min_seconds, min_calls)


def keras_fn(model: keras.Model, x: np.ndarray) -> Callable[[], object]:
    fn = tf.function(lambda t: model(t, training=False))
    t = tf.constant(x)
    fn(t)  # trace once, outside the timing
    return lambda: fn(t).numpy()


def tflite_fn(model: keras.Model, x: np.ndarray, threads: int, tmp: str) -> Callable[[], object]:
    path = os.path.join(tmp, f"{model.name}_{id(model)}.tflite")
    export_tflite(model, path, check_data=x)
    interp = make_interpreter(path, num_threads=threads)
    run_tflite(interp, [x])
    return lambda: run_tflite(interp, [x])


def measure(pairs: Dict[str, Dict[str, Callable[[], object]]], samples: int) -> Dict[str, Dict[str, float]]:
    """Median seconds per call for each setting and variant, the variants interleaved."""
    times: Dict[str, Dict[str, List[float]]] = {s: {v: [] for v in fns} for s, fns in pairs.items()}
    for _ in range(samples):
        for setting, fns in pairs.items():
            for variant, fn in fns.items():
                times[setting][variant].append(timer(fn))
    return {s: {v: statistics.median(ts) for v, ts in d.items()} for s, d in times.items()}


def lenet_pair(directory: Path):
    base, final = directory / "baseline.keras", directory / "final.keras"
    if base.exists() and final.exists():
        return keras.models.load_model(base), keras.models.load_model(final), "gradual (bench/reproduce_lenet.py)"
    return None


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["lenet5", "vgg16_bn", "resnet56"])
    p.add_argument("--targets", nargs="+", type=float, default=[0.5, 0.8], help="fractions of FLOPs to remove")
    p.add_argument("--round-to", nargs="+", type=int, default=[1, 8], help="widths rounded to these multiples")
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 2)
    p.add_argument("--samples", type=int, default=7)
    p.add_argument("--speedups", nargs="*", type=float, default=[2.0],
                   help="also prune to these measured Keras speed-ups (kerasprune.prune_for_speedup)")
    p.add_argument("--speedup-batch", type=int, default=32)
    p.add_argument("--lenet-dir", default="runs/reproduce_lenet")
    args = p.parse_args()

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    keras.utils.set_random_seed(0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            base = get_model(name)
            shape = tuple(int(d) for d in base.inputs[0].shape[1:])
            variants = []
            pair = lenet_pair(Path(args.lenet_dir)) if name == "lenet5" else None
            if pair is not None:
                base, thin, how = pair
                variants.append((how, thin))
            else:
                for target in args.targets:
                    for rt in args.round_to:
                        print(f"[{name}] pruning {target:.0%} of FLOPs, round_to={rt}", file=sys.stderr, flush=True)
                        thin = kp.prune(base, target, unit="flops", round_to=rt)
                        variants.append((f"one-shot AAWS, {target:.0%} FLOPs, round_to {rt}", thin))
                for want in args.speedups:
                    print(f"[{name}] pruning for a {want:g}x measured speed-up", file=sys.stderr, flush=True)
                    found = kp.prune_for_speedup(base, want, batch_size=args.speedup_batch)
                    variants.append((f"prune_for_speedup({want:g}) at b{args.speedup_batch}: "
                                     f"{found.ratio:.0%} FLOPs", found.model))
            rng = np.random.default_rng(0)
            x1 = rng.normal(size=(1,) + shape).astype("float32")
            x32 = rng.normal(size=(32,) + shape).astype("float32")
            flops0 = kp.count_flops(base).total
            for how, thin in variants:
                print(f"[{name}] timing: {how}", file=sys.stderr, flush=True)
                pairs = {
                    "keras b1": {"orig": keras_fn(base, x1), "thin": keras_fn(thin, x1)},
                    "keras b32": {"orig": keras_fn(base, x32), "thin": keras_fn(thin, x32)},
                    "tflite b1": {"orig": tflite_fn(base, x1, args.threads, tmp), "thin": tflite_fn(thin, x1, args.threads, tmp)},
                }
                med = measure(pairs, args.samples)
                reduction = flops0 / kp.count_flops(thin).total
                for setting, t in med.items():
                    speed = t["orig"] / t["thin"]
                    rows.append((name, how, setting, f"{t['orig'] * 1e3:.2f}", f"{t['thin'] * 1e3:.2f}",
                                 f"{speed:.2f}x", f"{reduction:.2f}x", f"{speed / reduction:.2f}"))
    header = ("model", "thin model", "runtime", "orig ms", "thin ms", "speed-up", "FLOPs cut", "efficiency")
    print_table(header, rows, left=3)
    print(f"\nthreads: {args.threads} (TensorFlow intra-op and {interpreter_name()} interpreter); "
          f"medians of {args.samples} interleaved samples")
    print(f"machine: {machine()}\nversions: {versions()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
