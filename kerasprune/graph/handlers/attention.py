"""MultiHeadAttention: whole heads are pruned; its input and output channels are tracked.

Keras builds four (five with ``use_gate``) ``EinsumDense`` sublayers:

* ``query``, ``key``, ``value`` (and ``gate``): kernel ``(in, heads, key_dim)`` (value
  and gate: ``value_dim``), bias ``(heads, key_dim)``;
* ``attention_output``: kernel ``(heads, value_dim, *out)``, bias ``(*out)``.

Slots:

* ``"heads"`` (produced, ``num_heads`` channels): head ``h`` is slice ``[:, h]`` of the
  query, key, value and gate kernels and biases and slice ``[h]`` of the output kernel.
  Every head runs its own softmax, so dropping a head removes exactly its term of the
  output projection; ``num_heads`` changes, ``key_dim`` and ``value_dim`` stay (and so
  does the score scaling ``1/sqrt(key_dim)``).
* ``"query"``, ``"key"``, ``"value"``: the input channels each projection reads (kernel
  rows). With ``key`` omitted the key projection reads the value tensor.
* ``"out"`` (produced): the last axis of the output. With ``output_shape`` given it is
  a group of its own (``output_shape[-1]`` follows the kept width); with
  ``output_shape=None`` the output width *is* the query's width, so the output channels
  are coupled to the query's input channels (one group, like a residual ``Add``).

Returned attention scores (``return_attention_scores=True``) carry the heads on their
head axis; anything reading them sees the head group. Explicit mask tensors are frozen.

Multiply-adds: the projections (query, key, value, gate, output: ``positions * in *
heads * dim``) and the two attention products (scores ``Q K^T`` and the weighted sum of
values: ``heads * T * S * (key_dim + value_dim)`` over the attended positions); softmax
and scaling are not counted.
"""

from __future__ import annotations

from typing import Dict, List, Tuple

import numpy as np
from keras import layers

from kerasprune.graph.handler import LayerHandler
from kerasprune.graph.handlers._common import call_arg, input_index, prod
from kerasprune.graph.registry import register_handler

__all__ = ["MultiHeadAttentionHandler"]

_ROLES = (
    ("_query_dense", "query"),
    ("_key_dense", "key"),
    ("_value_dense", "value"),
    ("_gate_dense", "gate"),
    ("_output_dense", "output"),
)


def _roles(layer) -> Dict[int, Tuple[str, str]]:
    """id(variable) -> (projection, variable name) for the layer's sublayer weights."""
    out: Dict[int, Tuple[str, str]] = {}
    for attr, role in _ROLES:
        sub = getattr(layer, attr, None)
        if sub is None:
            continue
        for v in sub.weights:
            out[id(v)] = (role, v.name)
    return out


def _heads_axis_in_scores(layer, query_rank: int) -> int:
    """Axis of the heads in the attention scores ``(<batch dims>, heads, <T>, <S>)``."""
    rank = query_rank + 1  # the projected query (B, ..., heads, dim)
    attn = tuple(int(a) for a in (layer._attention_axes or range(1, rank - 2)))
    batch_dims = [a for a in range(rank) if a not in attn and a != rank - 1]
    return len(batch_dims) - 1


@register_handler(layers.MultiHeadAttention)
class MultiHeadAttentionHandler(LayerHandler):
    """Heads of a MultiHeadAttention are one group; input and output channels tracked."""

    def analyze(self, ctx):
        layer = ctx.layer
        node = ctx.node
        iq = input_index(ctx, call_arg(node, 0, "query"))
        iv = input_index(ctx, call_arg(node, 1, "value"))
        ik = input_index(ctx, call_arg(node, 2, "key"))
        if iq is None or iv is None:
            reason = f"'{ctx.path}' is called in a way kerasprune cannot read"
            for l in ctx.inputs:
                ctx.freeze(l, reason)
            return ctx.opaque_outputs(reason)
        q = ctx.channel_input(iq)
        v = ctx.channel_input(iv)
        k = v if ik is None else ctx.channel_input(ik)
        ctx.bind("query", q)
        ctx.bind("value", v)
        ctx.bind("key", k)
        q_rank = len(ctx.input_shapes[iq])
        heads = ctx.produce("heads", layer.num_heads, q_rank - 1)
        for method in ("_compute_attention", "_masked_softmax"):
            if getattr(type(layer), method) is not getattr(layers.MultiHeadAttention, method):
                ctx.freeze(
                    heads,
                    f"'{ctx.path}' ({type(layer).__name__}) overrides {method}, which may "
                    "mix its heads",
                )
        out_rank = len(ctx.output_shapes[0])
        out_width = ctx.output_shapes[0][-1]
        if out_width is None:
            reason = f"the output width of '{ctx.path}' is unknown"
            ctx.freeze(q, reason)
            ctx.freeze(heads, reason)
            return ctx.opaque_outputs(reason)
        out = ctx.produce("out", out_width, out_rank - 1)
        if not layer._output_shape:
            if q is None:
                ctx.freeze(
                    out,
                    f"the output width of '{ctx.path}' follows its query input, whose "
                    "channels are not tracked",
                )
            else:
                ctx.unify([out, q], f"'{ctx.path}' (output width follows the query)")
        used = {id(ctx.input_tensors[i]) for i in (iq, iv, ik) if i is not None}
        for kt, layout in zip(ctx.input_tensors, ctx.inputs):
            if id(kt) not in used and layout is not None:
                ctx.freeze(layout, f"used as a mask by '{ctx.path}'")
        outs = [out]
        if len(ctx.output_shapes) == 2:  # attention scores
            outs.append(heads.moved(_heads_axis_in_scores(layer, q_rank)))
        elif len(ctx.output_shapes) != 1:
            reason = f"'{ctx.path}' returns outputs kerasprune cannot match"
            ctx.freeze(out, reason)
            ctx.freeze(heads, reason)
            return ctx.opaque_outputs(reason)
        return outs

    def edit_config(self, layer, config, masks):
        if masks.get("heads") is not None:
            config["num_heads"] = int(masks["heads"].sum())
        if masks.get("out") is not None and config.get("output_shape"):
            shape = config["output_shape"]
            shape = [shape] if isinstance(shape, int) else list(shape)
            shape[-1] = int(masks["out"].sum())
            config["output_shape"] = tuple(shape)

    def slice_weights(self, layer, weights, masks):
        roles = _roles(layer)
        heads = masks.get("heads")
        kout = masks.get("out")
        rows = {
            "query": masks.get("query"),
            "gate": masks.get("query"),
            "key": masks.get("key"),
            "value": masks.get("value"),
        }
        out: List[np.ndarray] = []
        for var, w in zip(layer.weights, weights):
            role, name = roles.get(id(var), (None, None))
            if role == "output":
                if name == "kernel":
                    if heads is not None:
                        w = w[heads]
                    if kout is not None:
                        w = w[..., kout]
                elif name == "bias" and kout is not None:
                    w = w[..., kout]
            elif role is not None:
                if name == "kernel":
                    if rows[role] is not None:
                        w = w[rows[role]]
                    if heads is not None:
                        w = w[:, heads]
                elif name == "bias" and heads is not None:
                    w = w[heads]
            out.append(w)
        return out

    def macs(self, layer, node):
        q = call_arg(node, 0, "query")
        v = call_arg(node, 1, "value")
        k = call_arg(node, 2, "key")
        k = v if k is None else k
        q_shape, v_shape, k_shape = (tuple(t.shape) for t in (q, v, k))
        total = 0
        positions = {"query": prod(q_shape[1:-1]), "gate": prod(q_shape[1:-1]),
                     "key": prod(k_shape[1:-1]), "value": prod(v_shape[1:-1]),
                     "output": prod(q_shape[1:-1])}
        for attr, role in _ROLES:
            sub = getattr(layer, attr, None)
            if sub is not None:
                total += positions[role] * prod(sub.kernel.shape)
        # attention products over the attended axes, per head
        rank = len(q_shape) + 1
        attn = tuple(int(a) for a in (layer._attention_axes or range(1, rank - 2)))
        free = prod(q_shape[a] for a in range(1, len(q_shape) - 1) if a not in attn)
        t = prod(q_shape[a] for a in attn)
        s = prod(v_shape[a] for a in attn)
        total += layer.num_heads * free * t * s * (layer.key_dim + layer.value_dim)
        return total
