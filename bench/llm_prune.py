"""Prune a small causal LM by 30% and 50% of its FFN units and heads.

A keras-hub ``MistralCausalLM`` (``--family``: or Gemma, or Llama, whose heads stay)
built from its constructor (random weights, float32; no
preset is downloaded) is pruned with ``kerasprune.prune(lm, ratio, uniform=True)``:
``ratio`` of the channels of its prunable groups (the FFN's intermediate units and the
attention's key/value heads with the query heads that share them; the hidden size is
left alone, the default), the same number in every block, so the thin model is again a
causal LM of its class (its ``generate()`` runs). For the original and each thin model the
table gives:

* parameters, and multiply-adds per token of the projections (every Dense and
  EinsumDense kernel, and the output embedding; the attention products, which grow
  with the context, are left out);
* latency of a prefill (one forward pass over a prompt of ``--prompt`` tokens, batch 1)
  and of one decode step (one token with the key/value cache of that prompt), each the
  median of ``--samples`` interleaved samples of compiled calls, as a ratio to the
  original measured in the same run.

Usage::

    .venv/bin/python bench/llm_prune.py                 # about 19 M parameters
    .venv/bin/python bench/llm_prune.py --layers 2 --hidden 64 --samples 5   # quick

Progress goes to stderr, the report to stdout.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from typing import Callable, Dict, List

import common  # noqa: E402,F401  (bench/common.py: environment first)
import keras  # noqa: E402
import numpy as np  # noqa: E402
from common import machine, print_table, versions  # noqa: E402

import kerasprune  # noqa: E402

#: family -> (backbone class, causal LM class, takes head_dim): Llama's attention sets
#: head_dim = hidden // heads, so its heads stay (only its FFN units go)
FAMILIES = {
    "mistral": ("MistralBackbone", "MistralCausalLM", True),
    "gemma": ("GemmaBackbone", "GemmaCausalLM", True),
    "llama": ("LlamaBackbone", "LlamaCausalLM", False),
}


def build(args: argparse.Namespace) -> keras.Model:
    """The causal LM of the command line, random weights."""
    import keras_hub

    backbone_name, lm_name, takes_head_dim = FAMILIES[args.family]
    keras.utils.set_random_seed(0)
    extra = {"head_dim": args.hidden // args.heads} if takes_head_dim else {}
    backbone = getattr(keras_hub.models, backbone_name)(
        vocabulary_size=args.vocab, num_layers=args.layers, num_query_heads=args.heads,
        num_key_value_heads=args.kv_heads, hidden_dim=args.hidden,
        intermediate_dim=args.intermediate, **extra,
    )
    return getattr(keras_hub.models, lm_name)(backbone=backbone, preprocessor=None)


def projection_macs(lm: keras.Model) -> int:
    """Multiply-adds per token of every Dense/EinsumDense kernel and the output embedding."""
    total = 0
    # every sublayer, the attention layers' own projections included (iter_layers stops
    # at a layer with a handler)
    for layer in lm._flatten_layers(include_self=False):
        if isinstance(layer, (keras.layers.Dense, keras.layers.EinsumDense)):
            total += int(np.prod(layer.kernel.shape))
    embedding = lm.backbone.token_embedding
    total += int(np.prod(embedding.embeddings.shape))  # the logits: hidden x vocabulary
    return total


def timers(lm: keras.Model, prompt: int) -> Dict[str, Callable[[], None]]:
    """Compiled prefill and decode-step calls of ``lm`` on batch 1."""
    import tensorflow as tf

    ids = tf.constant(np.random.default_rng(1).integers(1, lm.backbone.vocabulary_size, (1, prompt)))
    hidden, cache = lm._build_cache(ids)  # keras-hub's own cache layout
    prefill = tf.function(lambda x: lm._build_cache(x)[0])
    step = tf.function(lambda t, c: lm.call_with_cache(t, c, prompt - 1)[0])
    token = ids[:, -1:]
    prefill(ids)
    step(token, cache)  # trace both before timing

    def run_prefill() -> None:
        prefill(ids).numpy()

    def run_decode() -> None:
        step(token, cache).numpy()

    return {"prefill": run_prefill, "decode": run_decode}


def median_ms(fn: Callable[[], None], calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls * 1e3


def main(argv: List[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--family", choices=list(FAMILIES), default="mistral")
    p.add_argument("--vocab", type=int, default=8000)
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--hidden", type=int, default=384)
    p.add_argument("--intermediate", type=int, default=1536)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--kv-heads", type=int, default=4)
    p.add_argument("--prompt", type=int, default=64, help="prompt length of the prefill")
    p.add_argument("--ratios", type=float, nargs="+", default=[0.3, 0.5])
    p.add_argument("--samples", type=int, default=15)
    p.add_argument("--calls", type=int, default=5, help="calls per sample")
    args = p.parse_args(argv)

    lm = build(args)
    models = {"original": lm}
    for ratio in args.ratios:
        print(f"pruning {ratio:.0%} ...", file=sys.stderr)
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            thin = kerasprune.prune(lm, ratio, uniform=True)
        print(f"  {time.perf_counter() - start:.1f} s, {type(thin).__name__}", file=sys.stderr)
        models[f"-{ratio:.0%} FFN units and heads"] = thin

    calls = {name: timers(m, args.prompt) for name, m in models.items()}
    samples: Dict[str, Dict[str, List[float]]] = {n: {"prefill": [], "decode": []} for n in models}
    for i in range(args.samples):
        print(f"sample {i + 1}/{args.samples}", file=sys.stderr)
        for name in models:  # interleaved: drift on a shared machine hits every model alike
            for phase, fn in calls[name].items():
                samples[name][phase].append(median_ms(fn, args.calls))

    base = {ph: statistics.median(samples["original"][ph]) for ph in ("prefill", "decode")}
    base_params = kerasprune.count_params(lm).total
    base_macs = projection_macs(lm)
    rows = []
    for name, m in models.items():
        params = kerasprune.count_params(m).total
        macs = projection_macs(m)
        cfg = m.backbone
        ms = {ph: statistics.median(samples[name][ph]) for ph in ("prefill", "decode")}
        rows.append((
            name, type(m).__name__,
            f"{cfg.intermediate_dim} / {cfg.num_query_heads}:{cfg.num_key_value_heads}",
            f"{params / 1e6:.2f} M ({params / base_params:.2f})",
            f"{macs / 1e6:.2f} M ({macs / base_macs:.2f})",
            f"{ms['prefill']:.2f} ms ({ms['prefill'] / base['prefill']:.2f})",
            f"{ms['decode']:.2f} ms ({ms['decode'] / base['decode']:.2f})",
        ))
    print(
        f"{FAMILIES[args.family][1]}: vocabulary {args.vocab}, {args.layers} blocks, hidden "
        f"{args.hidden}, FFN {args.intermediate}, heads {args.heads}:{args.kv_heads} (query:kv); "
        f"random weights, float32, batch 1, prompt {args.prompt} tokens"
    )
    print_table(
        ("model", "class", "FFN / heads", "params (ratio)", "MACs/token (ratio)",
         "prefill (ratio)", "decode step (ratio)"),
        rows,
    )
    print(f"\nmedians of {args.samples} interleaved samples of {args.calls} calls each")
    print(f"machine: {machine()}")
    print(f"versions: {versions()}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
