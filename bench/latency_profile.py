"""Where the speed-up of a thin model goes: CPU time by operation type, and convolution throughput by width.

Not a test: prints two tables, explaining the speed-up efficiency of ``bench/latency.py``
(measured speed-up / multiply-add reduction).

1. **By operation type.** For each network, the original and a thin model pruned one-shot
   by global AAWS to ``--target`` of its FLOPs (``unit="flops"``, each ``--round-to``) run
   as one compiled call (``tf.function``, inference) under TensorFlow's profiler, at batch
   1 and 32, ``--samples`` profiling sessions each, original and thin interleaved. The
   self time of every executed operation is summed by kind: convolutions and matrix
   products (the multiply-adds), element-wise operations (BatchNormalization's
   multiply-add, activations, residual additions, bias additions), the rest, and the time
   the executor was idle between operations (scheduling and per-operation overhead, which
   does not shrink with the widths). Per kind: time per call (median over sessions), share
   of the call, speed-up, and for the convolutions their own efficiency (speed-up / MAC
   reduction). The last rows give the model's wall time per call timed without the
   profiler.
2. **Convolution throughput by width.** A chain of ``--chain`` 3x3 convolutions on a
   ``--size`` feature map with ``c`` input and ``c`` output channels, for each ``c`` of
   ``--widths``: time per convolution and multiply-adds per second, showing the widths a
   thin network gets (not multiples of 8) against their neighbours that are.

    .venv/bin/python bench/latency_profile.py [--models resnet56 vgg16_bn] [--target 0.5]
        [--round-to 1 8] [--batches 1 32] [--threads 2] [--samples 3]
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import statistics
import sys
import tempfile
from typing import Callable, Dict, List, Tuple

import common  # noqa: E402,F401  (bench/common.py: environment first)
import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from common import machine, print_table, versions  # noqa: E402
from latency import keras_fn, timer  # noqa: E402
from tensorflow.python.profiler.internal import _pywrap_profiler_plugin as profiler_tools  # noqa: E402

import kerasprune as kp  # noqa: E402
from kerasprune.models import get_model  # noqa: E402

KINDS = ("convolution / matmul", "element-wise", "other", "idle")
_ELEMENTWISE = ("Mul", "Add", "AddV2", "AddN", "BiasAdd", "Relu", "Relu6", "Sub", "Rsqrt", "Maximum",
                "Minimum", "Sigmoid", "Tanh", "Cast", "FusedBatchNorm")


def kind_of(op_type: str) -> str:
    """Which of :data:`KINDS` an executed operation's time is counted under."""
    if op_type == "IDLE":
        return "idle"
    if "Conv" in op_type or "MatMul" in op_type:
        return "convolution / matmul"
    if any(op_type.replace("_Mkl", "").replace("Native", "").startswith(e) for e in _ELEMENTWISE):
        return "element-wise"
    return "other"


def op_times(fn: Callable[[], object], calls: int) -> Dict[str, float]:
    """Seconds per call of ``fn`` by kind of operation, from one profiling session."""
    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir)
        for _ in range(calls):
            fn()
        tf.profiler.experimental.stop()
        paths = glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True)
        data, ok = profiler_tools.xspace_to_tools_data(paths, "framework_op_stats", {})
    if not ok:
        raise RuntimeError("the profiler wrote no operation statistics")
    table = json.loads(data)[0]
    cols = [c["id"] for c in table["cols"]]
    out = {k: 0.0 for k in KINDS}
    for row in table["rows"]:
        r = {k: (c or {}).get("v") for k, c in zip(cols, row["c"])}
        out[kind_of(r["type"])] += float(r["total_self_time"]) * 1e-6 / calls
    return out


def profile_pair(base: keras.Model, thin: keras.Model, batch: int, samples: int) -> Dict[str, Dict[str, float]]:
    """Per kind (medians over sessions) and wall time per call of ``base`` and ``thin``."""
    rng = np.random.default_rng(0)
    shape = (batch,) + tuple(int(d) for d in base.inputs[0].shape[1:])
    x = rng.normal(size=shape).astype("float32")
    fns = {"orig": keras_fn(base, x), "thin": keras_fn(thin, x)}
    calls = max(3, 64 // batch)
    sessions: Dict[str, List[Dict[str, float]]] = {"orig": [], "thin": []}
    walls: Dict[str, List[float]] = {"orig": [], "thin": []}
    for _ in range(samples):
        for variant, fn in fns.items():
            sessions[variant].append(op_times(fn, calls))
            walls[variant].append(timer(fn))
    out = {}
    for variant in fns:
        per_kind = {k: statistics.median(s[k] for s in sessions[variant]) for k in KINDS}
        per_kind["total (profiled)"] = sum(per_kind[k] for k in KINDS)
        per_kind["wall time"] = statistics.median(walls[variant])
        out[variant] = per_kind
    return out


def conv_throughput(widths: List[int], size: int, batch: int, chain: int, samples: int) -> List[Tuple[int, float, float]]:
    """``(c, seconds per convolution, MACs per second)`` of a chain of 3x3, c -> c convolutions."""
    rng = np.random.default_rng(0)
    fns = {}
    for c in widths:
        inp = keras.Input((size, size, c))
        t = inp
        for _ in range(chain):
            t = keras.layers.Conv2D(c, 3, padding="same", use_bias=False)(t)
        model = keras.Model(inp, t)
        fns[c] = keras_fn(model, rng.normal(size=(batch, size, size, c)).astype("float32"))
    times: Dict[int, List[float]] = {c: [] for c in widths}
    for _ in range(samples):
        for c in widths:
            times[c].append(timer(fns[c]) / chain)
    out = []
    for c in widths:
        t = statistics.median(times[c])
        out.append((c, t, batch * size * size * 9 * c * c / t))
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["resnet56", "vgg16_bn"])
    p.add_argument("--target", type=float, default=0.5, help="fraction of FLOPs to remove")
    p.add_argument("--round-to", nargs="+", type=int, default=[1, 8])
    p.add_argument("--batches", nargs="+", type=int, default=[1, 32])
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 2)
    p.add_argument("--samples", type=int, default=3)
    p.add_argument("--chain", type=int, default=8, help="convolutions per compiled call in the width table")
    p.add_argument("--widths", nargs="+", type=int, default=[8, 11, 12, 16, 22, 24, 32, 45, 48, 64])
    p.add_argument("--size", type=int, default=16, help="feature map side of the width table")
    args = p.parse_args()

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    keras.utils.set_random_seed(0)
    rows = []
    for name in args.models:
        base = get_model(name)
        macs0 = kp.count_flops(base).total
        for rt in args.round_to:
            print(f"[{name}] pruning {args.target:.0%} of FLOPs, round_to={rt}", file=sys.stderr, flush=True)
            thin = kp.prune(base, args.target, unit="flops", round_to=rt)
            cut = macs0 / kp.count_flops(thin).total
            for batch in args.batches:
                print(f"[{name}] profiling batch {batch}", file=sys.stderr, flush=True)
                t = profile_pair(base, thin, batch, args.samples)
                for kind in KINDS + ("total (profiled)", "wall time"):
                    o, th = t["orig"][kind], t["thin"][kind]
                    speed = o / th if th > 0 else float("nan")
                    shares = (f"{o / t['orig']['total (profiled)']:.0%}", f"{th / t['thin']['total (profiled)']:.0%}") \
                        if kind in KINDS else ("", "")
                    eff = f"{speed / cut:.2f}" if kind in ("convolution / matmul", "total (profiled)", "wall time") else ""
                    rows.append((name, f"rt {rt}, b{batch}", kind, f"{o * 1e3:.3f}", f"{th * 1e3:.3f}",
                                 *shares, f"{speed:.2f}x", eff))
            rows.append((name, f"rt {rt}", "MAC cut", "", "", "", "", f"{cut:.2f}x", ""))
    header = ("model", "thin", "operations", "orig ms", "thin ms", "orig share", "thin share", "speed-up", "efficiency")
    print_table(header, rows, left=3)
    print(f"\nthin: one-shot global AAWS, {args.target:.0%} of FLOPs removed, widths rounded to rt; "
          f"self time per call by operation kind, medians of {args.samples} profiling sessions")

    print()
    for batch in args.batches:
        table = conv_throughput(args.widths, args.size, batch, args.chain, args.samples)
        best = max(r[2] for r in table)
        print_table(("c in = c out", f"ms per call (b{batch})", "GMAC/s", "of best"),
                    [(str(c), f"{t * 1e3:.3f}", f"{r / 1e9:.1f}", f"{r / best:.0%}") for c, t, r in table])
        print(f"3x3 convolution, {args.size}x{args.size} map, batch {batch}\n")
    print(f"threads: {args.threads}\nmachine: {machine()}\nversions: {versions()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
