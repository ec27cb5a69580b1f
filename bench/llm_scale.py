"""Analyze and rebuild a large Llama-style model: wall time and peak memory.

A keras-hub ``LlamaBackbone`` of about ``--params`` parameters (random weights,
float32) is analyzed and rebuilt with 30% of its FFN units and key/value heads removed,
the same number in every block (``uniform=True``, so the thin model is built by the
class's own constructor). Beside it, the floor any rebuild pays: building the thin
class from its config and setting its weights (prepared outside the timed region).

Memory is the resident set size of this process, sampled every 5 ms by a thread: the
peak during each step minus the resident size before it, as a multiple of the
original model's own size (its float32 weights). The target is at most 2x: the new
model's variables (at most 1x) plus a bounded working set, not several full copies.

Usage::

    .venv/bin/python bench/llm_scale.py                  # about 1 B parameters, ~4 GB
    .venv/bin/python bench/llm_scale.py --params 2e8     # quicker

Progress goes to stderr, the report to stdout.
"""

from __future__ import annotations

import argparse
import gc
import sys
import threading
import time
import warnings
from typing import Callable, List, Tuple

import common  # noqa: E402,F401  (bench/common.py: environment first)
import keras  # noqa: E402
import numpy as np  # noqa: E402
from common import machine, print_table, versions  # noqa: E402

import kerasprune  # noqa: E402


def rss() -> int:
    """Resident set size of this process, in bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def measured(fn: Callable[[], object]) -> Tuple[object, float, int]:
    """``(result, seconds, peak extra bytes)`` of calling ``fn``."""
    gc.collect()
    base = rss()
    peak = [base]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], rss())
            time.sleep(0.005)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    start = time.perf_counter()
    out = fn()
    seconds = time.perf_counter() - start
    done.set()
    thread.join()
    peak[0] = max(peak[0], rss())
    return out, seconds, peak[0] - base


def config_for(params: float) -> dict:
    """A Llama-style config of about ``params`` parameters (hidden 2048 scale)."""
    hidden = 2048 if params >= 5e8 else 1024
    intermediate = int(hidden * 8 / 3) // 256 * 256
    vocab = 32000
    per_block = 4 * hidden * hidden * 3 // 4 + 3 * hidden * intermediate  # q,o + k,v (kv=heads/4)
    layers = max(1, int(round((params - 2 * vocab * hidden) / per_block)))
    return dict(
        vocabulary_size=vocab, num_layers=layers, num_query_heads=hidden // 64,
        num_key_value_heads=hidden // 256, hidden_dim=hidden, intermediate_dim=intermediate,
    )


def main(argv: List[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--params", type=float, default=1e9)
    p.add_argument("--ratio", type=float, default=0.3)
    args = p.parse_args(argv)
    import keras_hub

    cfg = config_for(args.params)
    print(f"building {cfg} ...", file=sys.stderr)
    keras.utils.set_random_seed(0)
    model = keras_hub.models.LlamaBackbone(**cfg)
    size = sum(int(np.prod(w.shape)) * 4 for w in model.weights)
    print(f"  {size / 2**30:.2f} GiB", file=sys.stderr)

    rows = []
    print("analyze ...", file=sys.stderr)
    graph, t_analyze, m_analyze = measured(lambda: kerasprune.analyze(model))
    rows.append(("analyze", t_analyze, m_analyze))
    scores = kerasprune.score(model, "l1", graph=graph)
    keep = kerasprune.select(graph, scores, args.ratio, uniform=True)
    print("rebuild ...", file=sys.stderr)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        thin, t_rebuild, m_rebuild = measured(lambda: kerasprune.rebuild(model, keep, graph=graph))
    rows.append(("rebuild", t_rebuild, m_rebuild))
    thin_config, thin_weights = thin.get_config(), [np.asarray(w) for w in thin.get_weights()]
    thin_cls = type(thin)
    del thin
    gc.collect()

    def floor() -> keras.Model:
        built = thin_cls.from_config(thin_config)
        built.set_weights(thin_weights)
        return built

    print("floor ...", file=sys.stderr)
    _, t_floor, m_floor = measured(floor)
    rows.append(("floor: from_config + set_weights", t_floor, m_floor))

    print(
        f"LlamaBackbone, {sum(int(np.prod(w.shape)) for w in model.weights) / 1e9:.2f} B "
        f"parameters ({size / 2**30:.2f} GiB float32): {cfg}; rebuild removes "
        f"{args.ratio:.0%} of the FFN units and key/value heads of every block"
    )
    print_table(
        ("step", "wall", "vs floor", "peak extra memory", "x model size"),
        [(n, f"{t:.1f} s", f"{t / t_floor:.2f}x", f"{m / 2**30:.2f} GiB", f"{m / size:.2f}x")
         for n, t, m in rows],
    )
    print(f"\nmachine: {machine()}")
    print(f"versions: {versions()}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
