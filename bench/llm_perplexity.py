"""Perplexity of a small trained causal LM before and after pruning 30% and 50%.

A character-level keras-hub ``MistralCausalLM`` (random init, float32; sliding window
larger than the context, so it is a Llama) is trained for ``--train-seconds`` on the
English text of the Python standard library's ``pydoc_data.topics`` (about 465 KB,
shipped with every CPython), the last ``--val-fraction`` held out. The trained model is
cached under ``runs/llm_perplexity/`` (gitignored), so a rerun skips the training. It is
then pruned with ``kerasprune.prune(lm, ratio, uniform=True)`` and each model (the
original too, as a control) is fine-tuned for the same ``--finetune-steps``. Reported:
parameters and validation perplexity (exp of the mean token cross-entropy) of the
original, of each thin model right after pruning and after the fine-tune.

Usage::

    .venv/bin/python bench/llm_perplexity.py
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import warnings
from pathlib import Path
from typing import List

import common  # noqa: F401  (bench/common.py: environment first)
import keras
import numpy as np
from common import machine, print_table, versions

import kerasprune

CACHE = Path(__file__).resolve().parents[1] / "runs" / "llm_perplexity"


def corpus() -> str:
    from pydoc_data.topics import topics

    return "\n\n".join(topics[k] for k in sorted(topics))


def windows(ids: np.ndarray, length: int, stride: int) -> np.ndarray:
    starts = np.arange(0, len(ids) - length - 1, stride)
    return np.stack([ids[s:s + length + 1] for s in starts])


def batches(data: np.ndarray, batch: int, rng: np.random.Generator):
    while True:
        for i in rng.permutation(len(data) // batch):
            yield data[i * batch:(i + 1) * batch]


def build(args: argparse.Namespace, vocab: int) -> keras.Model:
    import keras_hub

    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.MistralBackbone(
        vocabulary_size=vocab, num_layers=args.layers, num_query_heads=args.heads,
        num_key_value_heads=args.kv_heads, hidden_dim=args.hidden,
        intermediate_dim=args.intermediate, head_dim=args.hidden // args.heads,
        sliding_window=4 * args.context,
    )
    return keras_hub.models.MistralCausalLM(backbone=backbone, preprocessor=None)


def compile_lm(lm: keras.Model, lr: float) -> None:
    lm.compile(
        optimizer=keras.optimizers.AdamW(lr, weight_decay=0.01),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=False,
    )


def step(lm: keras.Model, chunk: np.ndarray) -> float:
    x = {"token_ids": chunk[:, :-1], "padding_mask": np.ones_like(chunk[:, :-1], bool)}
    return float(np.ravel(lm.train_on_batch(x, chunk[:, 1:]))[0])


def perplexity(lm: keras.Model, val: np.ndarray, batch: int) -> float:
    total, count = 0.0, 0
    for i in range(0, len(val), batch):
        chunk = val[i:i + batch]
        x = {"token_ids": chunk[:, :-1], "padding_mask": np.ones_like(chunk[:, :-1], bool)}
        logits = np.asarray(lm.predict_on_batch(x), np.float64)
        logits -= logits.max(-1, keepdims=True)
        logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
        total -= np.take_along_axis(logp, chunk[:, 1:, None], -1).sum()
        count += chunk[:, 1:].size
    return math.exp(total / count)


def main(argv: List[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--intermediate", type=int, default=768)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--kv-heads", type=int, default=4)
    p.add_argument("--context", type=int, default=128)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--train-seconds", type=float, default=240)
    p.add_argument("--finetune-steps", type=int, default=40)
    p.add_argument("--val-fraction", type=float, default=0.05)
    p.add_argument("--val-windows", type=int, default=64)
    p.add_argument("--ratios", type=float, nargs="+", default=[0.3, 0.5])
    args = p.parse_args(argv)

    import keras_hub  # noqa: F401  (registers the classes for loading)

    text = corpus()
    chars = sorted(set(text))
    lookup = {c: i for i, c in enumerate(chars)}
    ids = np.fromiter((lookup[c] for c in text), np.int32, len(text))
    split = int(len(ids) * (1 - args.val_fraction))
    train = windows(ids[:split], args.context, args.context // 2)
    val = windows(ids[split:], args.context, args.context)[: args.val_windows]
    rng = np.random.default_rng(0)

    tag = (f"l{args.layers}-h{args.hidden}-f{args.intermediate}-{args.heads}x{args.kv_heads}"
           f"-c{args.context}-b{args.batch}-t{int(args.train_seconds)}")
    path = CACHE / f"mistral-char-{tag}.keras"
    if path.exists():
        print(f"loading {path}", file=sys.stderr)
        lm = keras.saving.load_model(path, compile=False)
        trained = "cached"
    else:
        lm = build(args, len(chars))
        compile_lm(lm, 2e-3)
        start, steps = time.perf_counter(), 0
        for chunk in batches(train, args.batch, rng):
            loss = step(lm, chunk)
            steps += 1
            if steps % 20 == 0:
                print(f"step {steps} loss {loss:.3f} {time.perf_counter() - start:.0f} s", file=sys.stderr)
            if time.perf_counter() - start > args.train_seconds:
                break
        trained = f"{steps} steps of batch {args.batch} in {time.perf_counter() - start:.0f} s"
        CACHE.mkdir(parents=True, exist_ok=True)
        lm.save(path)

    models = {"original": lm}
    for ratio in args.ratios:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            models[f"-{ratio:.0%}"] = kerasprune.prune(lm, ratio, uniform=True)

    base_params = kerasprune.count_params(lm).total
    rows = []
    for name, m in models.items():
        before = perplexity(m, val, args.batch)
        print(f"{name}: perplexity {before:.2f}, fine-tuning", file=sys.stderr)
        tuned = m  # the perplexity before was measured already
        compile_lm(tuned, 5e-4)
        ft_rng = np.random.default_rng(1)  # the same batches for every model
        for _, chunk in zip(range(args.finetune_steps), batches(train, args.batch, ft_rng)):
            step(tuned, chunk)
        after = perplexity(tuned, val, args.batch)
        params = kerasprune.count_params(m).total
        cfg = m.backbone
        rows.append((
            name, f"{cfg.intermediate_dim} / {cfg.num_query_heads}:{cfg.num_key_value_heads}",
            f"{params / 1e6:.2f} M ({params / base_params:.2f})",
            f"{before:.2f}", f"{after:.2f}",
        ))
    print(
        f"MistralCausalLM, characters ({len(chars)}) of pydoc_data.topics ({len(text)} chars): "
        f"{args.layers} blocks, hidden {args.hidden}, FFN {args.intermediate}, heads "
        f"{args.heads}:{args.kv_heads}, context {args.context}; trained: {trained}; "
        f"validation: {len(val)} windows of the last {args.val_fraction:.0%}"
    )
    print_table(
        ("model", "FFN / heads", "params (ratio)", "val ppl after pruning",
         f"after {args.finetune_steps} fine-tune steps"),
        rows,
    )
    print(f"machine: {machine()}")
    print(f"versions: {versions()}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
