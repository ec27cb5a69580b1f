"""Torch-Pruning's LLM pruning of the config of ``bench/llm_prune.py``, in PyTorch.

Runs in its own venv (``make bench-llm-torch`` creates ``$(TP_VENV)`` with torch 2.13.0
CPU, transformers 4.47.1 and torch-pruning 1.5.2), not in the test environment. A Hugging
Face ``LlamaForCausalLM`` of the same shape (vocabulary 8000, 6 blocks, hidden 384, FFN
1536, 8:4 heads, head size 48, untied embeddings; random weights, float32) is pruned the
way Torch-Pruning's ``examples/LLMs/prune_llm.py`` prunes a Llama: ``BasePruner`` (the
``MetaPruner`` of the example) with ``GroupMagnitudeImportance(p=2)``,
``global_pruning=False`` (every layer the same ratio), ``num_heads`` for q/k/v,
``prune_num_heads=True``, ``prune_head_dims=False``, ``head_pruning_ratio`` = the ratio,
``lm_head`` ignored; the token embedding is ignored as well, so the hidden size stays as
on the kerasprune side. After pruning, the attention modules and the config get their
new head counts and sizes (as the example does), and each thin model must run a forward
pass and ``generate()``.

Reported: parameters; multiply-adds per token of the projections (every ``nn.Linear``
kernel, ``lm_head`` included: what ``bench/llm_prune.py`` counts); prefill (``--prompt``
tokens, batch 1) and one decode step with the key/value cache of that prompt
(``torch.inference_mode``), medians of ``--samples`` interleaved samples of ``--calls``
calls, as ratios to the unpruned original of the same run; and the pruning wall time
(``BasePruner`` construction, which traces the model and builds the dependency graph,
plus ``step()``). A pruning that does not finish within ``--prune-timeout`` seconds is
reported as such (torch-pruning 1.6.1 never finishes this model: its
``DependencyGraph._fix_dependency_graph_non_recursive`` keeps adding index sets for the
q/k projections' group, through the rotary embedding's slices).
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import signal
import statistics
import sys
import time
from importlib.metadata import version


class Timeout(Exception):
    pass


def _raise_timeout(*_):
    raise Timeout()


def machine() -> str:
    cpu = platform.machine()
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return f"{cpu}, {len(os.sched_getaffinity(0))} usable cores, {platform.system()} {platform.release()}"


def linear_macs(model) -> int:
    import torch

    return sum(m.in_features * m.out_features for m in model.modules() if isinstance(m, torch.nn.Linear))


def prune(model, cfg, ids, ratio: float):
    """Prune ``model`` in place as Torch-Pruning's LLM example does; fix its head counts."""
    import torch_pruning as tp

    heads = {}
    for layer in model.model.layers:
        a = layer.self_attn
        heads[a.q_proj] = cfg.num_attention_heads
        heads[a.k_proj] = heads[a.v_proj] = cfg.num_key_value_heads
    pruner = tp.pruner.BasePruner(
        model, example_inputs=ids, importance=tp.importance.GroupMagnitudeImportance(p=2),
        global_pruning=False, pruning_ratio=ratio,
        ignored_layers=[model.lm_head, model.model.embed_tokens], num_heads=heads,
        prune_num_heads=True, prune_head_dims=False, head_pruning_ratio=ratio,
        output_transform=lambda out: out.logits,
    )
    pruner.step()
    head_dim = cfg.head_dim
    for layer in model.model.layers:  # the attention modules read their head counts
        a, mlp = layer.self_attn, layer.mlp
        a.hidden_size = a.q_proj.in_features
        a.num_heads = a.q_proj.out_features // head_dim
        a.num_key_value_heads = a.k_proj.out_features // head_dim
        a.num_key_value_groups = a.num_heads // a.num_key_value_heads
        mlp.hidden_size, mlp.intermediate_size = mlp.gate_proj.in_features, mlp.gate_proj.out_features
    a, mlp = model.model.layers[0].self_attn, model.model.layers[0].mlp
    c = model.config  # one object, shared by the layers; deepcopy keeps the sharing
    c.hidden_size, c.intermediate_size = model.lm_head.in_features, mlp.intermediate_size
    c.num_attention_heads, c.num_key_value_heads = a.num_heads, a.num_key_value_heads
    return model


def main(argv) -> int:
    import torch
    from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--prompt", type=int, default=64)
    p.add_argument("--ratios", type=float, nargs="+", default=[0.3, 0.5])
    p.add_argument("--samples", type=int, default=15)
    p.add_argument("--calls", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--prune-timeout", type=int, default=300)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    cfg = LlamaConfig(
        vocab_size=8000, hidden_size=384, intermediate_size=1536, num_hidden_layers=args.layers,
        num_attention_heads=8, num_key_value_heads=4, head_dim=48, max_position_embeddings=512,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    original = LlamaForCausalLM(cfg).eval()
    ids = torch.randint(1, cfg.vocab_size, (1, args.prompt))
    models, prune_s, notes = {"original": original}, {}, []
    for ratio in args.ratios:
        name = f"-{ratio:.0%} FFN units and heads"
        print(f"pruning {ratio:.0%} ...", file=sys.stderr)
        m = copy.deepcopy(original)
        signal.signal(signal.SIGALRM, _raise_timeout)
        signal.alarm(args.prune_timeout)
        start = time.perf_counter()
        try:
            prune(m, cfg, ids, ratio)
        except Timeout:
            notes.append(f"{name}: Torch-Pruning did not finish within {args.prune_timeout} s")
            print(notes[-1], file=sys.stderr)
            continue
        finally:
            signal.alarm(0)
        prune_s[name] = time.perf_counter() - start
        with torch.inference_mode():  # the thin model must still run, and generate
            logits = m(ids).logits
            out = m.generate(ids, max_new_tokens=8, do_sample=False, pad_token_id=0)
        assert logits.shape == (1, args.prompt, cfg.vocab_size) and torch.isfinite(logits).all()
        assert out.shape == (1, args.prompt + 8), out.shape
        print(f"  {prune_s[name]:.1f} s; forward and generate() run", file=sys.stderr)
        models[name] = m.eval()

    def prefill(m):
        cache = DynamicCache()
        with torch.inference_mode():
            m(ids, past_key_values=cache, use_cache=True)
        return cache

    caches = {n: prefill(m) for n, m in models.items()}
    token = ids[:, -1:]
    times = {n: {"prefill": [], "decode": []} for n in models}
    for i in range(args.samples):
        print(f"sample {i + 1}/{args.samples}", file=sys.stderr)
        for n, m in models.items():  # interleaved: drift on a shared machine hits all alike
            with torch.inference_mode():
                t = time.perf_counter()
                for _ in range(args.calls):
                    m(ids, use_cache=False)
                times[n]["prefill"].append((time.perf_counter() - t) / args.calls)
                total = 0.0
                for _ in range(args.calls):
                    t = time.perf_counter()
                    m(token, past_key_values=caches[n], use_cache=True)
                    total += time.perf_counter() - t
                    caches[n].crop(args.prompt)  # back to the prompt's cache, untimed
                times[n]["decode"].append(total / args.calls)
    base_params = sum(q.numel() for q in original.parameters())
    base_macs = linear_macs(original)
    base = {k: statistics.median(v) for k, v in times["original"].items()}
    print(f"LlamaForCausalLM: vocabulary {cfg.vocab_size}, {args.layers} blocks, hidden 384, "
          f"FFN 1536, heads 8:4 (query:kv); random weights, float32, batch 1, prompt {args.prompt}")
    print("| model | FFN / heads | params | MACs/token | prefill | decode step | pruning |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for n, m in models.items():
        c = m.config
        params, macs = sum(q.numel() for q in m.parameters()), linear_macs(m)
        med = {k: statistics.median(v) for k, v in times[n].items()}
        print(f"| {n} | {c.intermediate_size} / {c.num_attention_heads}:{c.num_key_value_heads} | "
              f"{params / 1e6:.2f} M ({params / base_params:.2f}) | "
              f"{macs / 1e6:.2f} M ({macs / base_macs:.2f}) | "
              f"{med['prefill'] * 1e3:.2f} ms ({med['prefill'] / base['prefill']:.2f}) | "
              f"{med['decode'] * 1e3:.2f} ms ({med['decode'] / base['decode']:.2f}) | "
              + (f"{prune_s[n]:.1f} s |" if n in prune_s else "|"))
    for note in notes:
        print(note)
    print(f"\nmedians of {args.samples} interleaved samples of {args.calls} calls each, "
          f"{torch.get_num_threads()} threads")
    print(f"machine: {machine()}")
    print(f"versions: python {platform.python_version()}, torch {torch.__version__}, "
          f"transformers {version('transformers')}, torch-pruning {version('torch-pruning')}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
