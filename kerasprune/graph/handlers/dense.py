"""Dense (on inputs of any rank), EinsumDense, Embedding and ReversibleEmbedding."""

from __future__ import annotations

import re
from typing import NamedTuple, Optional

import numpy as np
from keras import layers

from kerasprune.graph.handler import LayerHandler
from kerasprune.graph.handlers._common import (
    add_to_bias,
    call_arg,
    mixes_channels,
    positions_along,
    prod,
    slice_named,
)
from kerasprune.graph.registry import register_handler


@register_handler(layers.Dense)
class DenseHandler(LayerHandler):
    """Units are produced channels; kernel rows read the last axis of the input.

    After ``Flatten`` each input channel owns ``H*W`` rows (channels-last order); the
    layouts carry that mapping, so nothing here is special-cased.
    """

    def analyze(self, ctx):
        layer = ctx.layer
        rank = len(ctx.input_shapes[0])
        ctx.bind("in", ctx.channel_input(0, rank - 1))
        out = ctx.produce("out", layer.units, rank - 1)
        if mixes_channels(getattr(layer, "activation", None)):
            ctx.freeze(out, f"layer '{ctx.path}' applies a softmax across its units")
        return [out]

    def edit_config(self, layer, config, masks):
        if masks.get("out") is not None:
            config["units"] = int(masks["out"].sum())

    def slice_weights(self, layer, weights, masks):
        kin, kout = masks.get("in"), masks.get("out")
        rules = {}

        def kernel(k):
            if kin is not None:
                k = k[kin]
            return k if kout is None else k[:, kout]

        rules["kernel"] = kernel
        if kin is not None:
            rules["lora_kernel_a"] = lambda a: a[kin]
        if kout is not None:
            rules["bias"] = lambda b: b[kout]
            rules["lora_kernel_b"] = lambda b: b[:, kout]
        return slice_named(layer, weights, rules)

    def weight_positions(self, layer, slot, size):
        if slot == "out":  # unit o: kernel[:, o] and bias[o]
            return positions_along(layer, {"kernel": -1, "bias": 0}, size)
        if slot == "in":  # input channel i: kernel row i
            return positions_along(layer, {"kernel": 0, "bias": None}, size)
        return None

    def macs(self, layer, node):
        in_shape = tuple(node.input_tensors[0].shape)
        return prod(in_shape[1:-1]) * prod(layer.kernel.shape)

    def fold_inputs(self, layer, slot, values, weights, *, exact=True):
        """Input ``i`` constant at ``c``: the bias gains ``c * kernel[i]``."""
        if slot != "in" or not np.any(values):
            return super().fold_inputs(layer, slot, values, weights, exact=exact)
        return add_to_bias(layer, weights, lambda k: np.asarray(values, np.float64) @ k)


@register_handler(layers.Embedding)
class EmbeddingHandler(LayerHandler):
    """The embedding dimensions are produced channels (columns of the table)."""

    def analyze(self, ctx):
        rank = len(ctx.output_shapes[0])
        return [ctx.produce("out", ctx.layer.output_dim, rank - 1)]

    def edit_config(self, layer, config, masks):
        if masks.get("out") is not None:
            config["output_dim"] = int(masks["out"].sum())

    def slice_weights(self, layer, weights, masks):
        kout = masks.get("out")
        if kout is None:
            return list(weights)
        return slice_named(layer, weights, {"embeddings": lambda e: e[:, kout]})


def _quantized(layer) -> Optional[str]:
    """The quantization mode of ``layer`` (``"int8"``...), or None for float weights."""
    return getattr(layer, "quantization_mode", None) or None


def _freeze_all(ctx, reason: str) -> list:
    """Freeze every input of the call; fresh frozen outputs."""
    for layout in ctx.inputs:
        ctx.freeze(layout, reason)
    return ctx.opaque_outputs(reason)


class ReversibleEmbeddingHandler(EmbeddingHandler):
    """An Embedding that is also called with ``reverse=True`` to give logits.

    The forward call produces the embedding dimensions (slot ``"out"``, the columns of
    ``embeddings``). The reverse call multiplies its input by the transposed table (or,
    with ``tie_weights=False``, by ``reverse_embeddings``, whose rows are the embedding
    dimensions too, its width being the same ``output_dim``): its input channels are the
    same slot, so the hidden channels it reads are coupled to the embedding's and the
    table is sliced once for both calls. Its output, one logit per vocabulary entry (a
    row of the table), is frozen; ``logit_soft_cap`` acts on each logit alone.
    """

    def analyze(self, ctx):
        layer = ctx.layer
        mode = _quantized(layer)
        if mode:
            return _freeze_all(ctx, f"{ctx.describe()} holds a quantized ({mode}) table")
        if not call_arg(ctx.node, 1, "reverse"):
            return super().analyze(ctx)
        axis = len(ctx.input_shapes[0]) - 1
        table = ctx.produce("out", layer.output_dim, axis)
        if ctx.bind("out", ctx.channel_input(0, axis)) is None:
            ctx.freeze(table, f"{ctx.describe()} is called in reverse on channels kerasprune does not track")
        reason = f"{ctx.describe()} called with reverse=True gives one logit per vocabulary entry"
        return [ctx.frozen_layout(layer.input_dim, axis, reason)]

    def slice_weights(self, layer, weights, masks):
        kout = masks.get("out")
        if kout is None:
            return list(weights)
        return slice_named(
            layer, weights, {"embeddings": lambda e: e[:, kout], "reverse_embeddings": lambda r: r[kout]}
        )

    def macs(self, layer, node):
        if not call_arg(node, 1, "reverse"):
            return 0
        in_shape = tuple(node.input_tensors[0].shape)
        return prod(in_shape[1:]) * int(layer.input_dim)


if hasattr(layers, "ReversibleEmbedding"):  # newer Keras (before, keras-hub had its own)
    register_handler(layers.ReversibleEmbedding)(ReversibleEmbeddingHandler)


class _Einsum(NamedTuple):
    """An EinsumDense equation ``inputs,kernel->outputs``: the letters of each operand
    (after the ellipsis, if any, that leads the input and the output) and the bias
    letters."""

    inputs: str
    kernel: str
    outputs: str
    bias: str


_EQUATION = re.compile(r"^(\.\.\.)?([a-zA-Z]+),([a-zA-Z]+)->(\.\.\.)?([a-zA-Z]+)$")


def _einsum(layer) -> Optional[_Einsum]:
    """The parsed equation of an EinsumDense, or None for a form the handler does not
    take (an ellipsis on the right of an operand, or on one side only)."""
    found = _EQUATION.match(str(layer.equation).replace(" ", ""))
    if found is None or bool(found.group(1)) != bool(found.group(4)):
        return None
    return _Einsum(found.group(2), found.group(3), found.group(5), layer.bias_axes or "")


def _bias_axis(spec: _Einsum, letter: str) -> Optional[int]:
    """The axis of ``letter`` in the bias (which spans the output letters from its first
    bias letter on), or None when the bias does not run along it."""
    if letter not in spec.bias:
        return None
    first = min(spec.outputs.find(c) for c in spec.bias)
    return spec.outputs.index(letter) - first


@register_handler(layers.EinsumDense)
class EinsumDenseHandler(LayerHandler):
    """An ``EinsumDense`` whose kernel contracts its input's last axis and creates its
    output's last axis (``btd,df->btf``, ``...d,dnh->...nh``).

    The input channels (along the last axis) are the kernel entries along that axis's
    letter where the kernel contracts it (the letter is in the kernel, not in the
    output): slot ``"in"``. The output's last axis is produced (slot ``"out"``: the
    kernel and the bias along its letter) where that letter is the kernel's alone;
    ``output_shape[-1]`` follows it. Channels the einsum carries another way, an
    ellipsis that does not lead both the input and the output, LoRA and quantized
    kernels are frozen.
    """

    def analyze(self, ctx):
        layer = ctx.layer
        spec = _einsum(layer)
        if spec is None or getattr(layer, "lora_enabled", False) or _quantized(layer):
            why = "an equation" if spec is None else "LoRA or quantized weights"
            return _freeze_all(ctx, f"{ctx.describe()} has {why} kerasprune cannot slice")
        inp = ctx.channel_input(0)
        if spec.inputs[-1] in spec.kernel and spec.inputs[-1] not in spec.outputs:
            ctx.bind("in", inp)
        else:
            ctx.freeze(inp, f"{ctx.describe()} does not contract its input's last axis")
        rank = len(ctx.output_shapes[0])
        last = spec.outputs[-1]
        if last not in spec.kernel or last in spec.inputs:
            return [ctx.frozen_layout(ctx.output_shapes[0][-1], rank - 1, f"{ctx.describe()} does not create its last axis")]
        out = ctx.produce("out", int(layer.kernel.shape[spec.kernel.index(last)]), rank - 1)
        if mixes_channels(getattr(layer, "activation", None)):
            ctx.freeze(out, f"layer '{ctx.path}' applies a softmax across its units")
        return [out]

    def edit_config(self, layer, config, masks):
        kout = masks.get("out")
        if kout is None:
            return
        shape = config["output_shape"]
        config["output_shape"] = (
            int(kout.sum()) if isinstance(shape, int) else [*list(shape)[:-1], int(kout.sum())]
        )

    def slice_weights(self, layer, weights, masks):
        spec = _einsum(layer)
        kin, kout = masks.get("in"), masks.get("out")
        rules = {}
        k_in = spec.kernel.index(spec.inputs[-1])
        k_out = spec.kernel.index(spec.outputs[-1])
        b_out = _bias_axis(spec, spec.outputs[-1])

        def kernel(k):
            if kin is not None:
                k = np.compress(kin, k, axis=k_in)
            return k if kout is None else np.compress(kout, k, axis=k_out)

        rules["kernel"] = kernel
        if kout is not None and b_out is not None:
            rules["bias"] = lambda b: np.compress(kout, b, axis=b_out)
        return slice_named(layer, weights, rules)

    def weight_positions(self, layer, slot, size):
        spec = _einsum(layer)
        if slot == "out":  # unit o: the kernel and the bias at o along the output letter
            last = spec.outputs[-1]
            return positions_along(layer, {"kernel": spec.kernel.index(last), "bias": _bias_axis(spec, last)}, size)
        if slot == "in":  # input channel i: the kernel at i along the contracted letter
            return positions_along(layer, {"kernel": spec.kernel.index(spec.inputs[-1]), "bias": None}, size)
        return None

    def macs(self, layer, node):
        spec = _einsum(layer)
        out_shape = tuple(node.outputs[0].shape)
        if spec is None:
            return 0
        contracted = [d for c, d in zip(spec.kernel, layer.kernel.shape) if c not in spec.outputs]
        return prod(out_shape[1:]) * prod(contracted)
