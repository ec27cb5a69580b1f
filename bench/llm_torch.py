"""Torch-Pruning's LLM pruning of the config of ``bench/llm_prune.py``, in PyTorch.

Runs in its own venv (``make bench-llm-torch`` creates ``/work/venv-tp``-style
``$(TP_VENV)`` with torch 2.13.0 CPU, transformers and torch-pruning), not in the test
environment. A Hugging Face ``LlamaForCausalLM`` of the same shape (vocabulary 8000,
6 blocks, hidden 384, FFN 1536, 8:4 heads, untied embeddings; random weights, float32)
is pruned the way Torch-Pruning's ``examples/LLMs`` prunes a Llama: ``BasePruner`` with
``global_pruning=False`` (every layer the same ratio), ``num_heads`` for q/k/v,
``prune_num_heads=True``, ``prune_head_dims=False``, ``head_pruning_ratio`` = the ratio,
``lm_head`` ignored; the embedding is ignored as well, so the hidden size stays as on
the kerasprune side. Reported: parameters, and prefill (``--prompt`` tokens) and decode
step latency (batch 1, ``torch.inference_mode``, KV cache), medians of interleaved
samples, as ratios to the unpruned original of the same run. A pruning that does not
finish within ``--prune-timeout`` seconds is reported as such.
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


class Timeout(Exception):
    pass


def machine() -> str:
    cpu = platform.machine()
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return f"{cpu}, {len(os.sched_getaffinity(0))} usable cores, {platform.system()} {platform.release()}"


def main(argv) -> int:
    import torch
    import torch_pruning as tp
    import transformers
    from transformers import LlamaConfig, LlamaForCausalLM

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
    models, notes = {"original": original}, []
    for ratio in args.ratios:
        m = copy.deepcopy(original)
        heads = {}
        for layer in m.model.layers:
            a = layer.self_attn
            heads[a.q_proj] = cfg.num_attention_heads
            heads[a.k_proj] = heads[a.v_proj] = cfg.num_key_value_heads
        signal.signal(signal.SIGALRM, lambda *_: (_ for _ in ()).throw(Timeout()))
        signal.alarm(args.prune_timeout)
        start = time.perf_counter()
        try:
            pruner = tp.pruner.BasePruner(
                m, example_inputs=ids, importance=tp.importance.GroupMagnitudeImportance(p=2),
                global_pruning=False, pruning_ratio=ratio,
                ignored_layers=[m.lm_head, m.model.embed_tokens], num_heads=heads,
                prune_num_heads=True, prune_head_dims=False, head_pruning_ratio=ratio,
                output_transform=lambda out: out.logits,
            )
            pruner.step()
        except Timeout:
            notes.append(f"-{ratio:.0%}: Torch-Pruning did not finish within {args.prune_timeout} s "
                         f"(in {time.perf_counter() - start:.0f} s)")
            print(notes[-1], file=sys.stderr)
            continue
        finally:
            signal.alarm(0)
        for layer in m.model.layers:  # the attention modules read their head counts
            a = layer.self_attn
            a.num_heads = pruner.num_heads[a.q_proj]
            a.num_key_value_heads = pruner.num_heads[a.k_proj]
            a.num_key_value_groups = a.num_heads // a.num_key_value_heads
        models[f"-{ratio:.0%}"] = m

    def prefill(m):
        with torch.inference_mode():
            return m(ids, use_cache=True).past_key_values

    caches = {n: prefill(m) for n, m in models.items()}
    times = {n: {"prefill": [], "decode": []} for n in models}
    for _ in range(args.samples):
        for n, m in models.items():
            with torch.inference_mode():
                t = time.perf_counter()
                for _ in range(args.calls):
                    m(ids, use_cache=True)
                times[n]["prefill"].append((time.perf_counter() - t) / args.calls)
                t = time.perf_counter()
                for _ in range(args.calls):
                    c = copy.deepcopy(caches[n])
                    m(ids[:, -1:], past_key_values=c, use_cache=True)
                times[n]["decode"].append((time.perf_counter() - t) / args.calls)
    base_params = sum(q.numel() for q in original.parameters())
    base = {k: statistics.median(v) for k, v in times["original"].items()}
    print(f"LlamaForCausalLM: vocabulary 8000, {args.layers} blocks, hidden 384, FFN 1536, "
          f"heads 8:4; random weights, float32, batch 1, prompt {args.prompt}")
    print("model | FFN / heads | params (ratio) | prefill (ratio) | decode step (ratio)")
    for n, m in models.items():
        a, mlp = m.model.layers[0].self_attn, m.model.layers[0].mlp
        params = sum(q.numel() for q in m.parameters())
        med = {k: statistics.median(v) for k, v in times[n].items()}
        print(f"{n} | {mlp.up_proj.out_features} / {a.q_proj.out_features // 48}:"
              f"{a.k_proj.out_features // 48} | {params / 1e6:.2f} M ({params / base_params:.2f}) | "
              f"{med['prefill'] * 1e3:.2f} ms ({med['prefill'] / base['prefill']:.2f}) | "
              f"{med['decode'] * 1e3:.2f} ms ({med['decode'] / base['decode']:.2f})")
    for note in notes:
        print(note)
    print(f"machine: {machine()}")
    print(f"versions: python {platform.python_version()}, torch {torch.__version__}, "
          f"transformers {transformers.__version__}, torch-pruning {tp.__version__}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
