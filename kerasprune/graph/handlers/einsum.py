"""EinsumDense layers that compute what a Dense layer computes.

An ``EinsumDense`` whose equation contracts the input's last axis with the first axis
of a 2-D kernel and puts the kernel's second axis last, all other axes passed through
in order (``"btd,df->btf"``, ``"...x,xy->...y"``), with a bias over that last axis or
none, is a Dense layer with ``units = output_shape[-1]``: its units are produced
channels, its kernel rows read the input's channels (keras-hub's Gemma feed-forward
blocks are built so). Any other equation mixes axes in ways this handler does not read:
the channels through it are frozen.
"""

from __future__ import annotations

from typing import Optional

from keras import layers

from kerasprune.graph.handlers._common import mixes_channels, prod
from kerasprune.graph.handlers.dense import DenseHandler
from kerasprune.graph.registry import register_handler

__all__ = ["EinsumDenseHandler", "dense_like"]


def dense_like(layer) -> Optional[str]:
    """None when ``layer`` (an EinsumDense) computes a Dense layer's product, else why not."""
    equation = str(layer.equation).replace(" ", "")
    operands, _, result = equation.partition("->")
    lhs, _, kernel = operands.partition(",")
    if (
        len(kernel) == 2
        and kernel[0] != kernel[1]
        and lhs.endswith(kernel[0])
        and result.endswith(kernel[1])
        and lhs[:-1] == result[:-1]
        and kernel[0] not in lhs[:-1]
        and kernel[1] not in lhs[:-1]
        and layer.bias_axes in (None, "", kernel[1])
    ):
        return None
    return f"its equation {equation!r} (bias axes {layer.bias_axes!r}) is not a Dense layer's product"


@register_handler(layers.EinsumDense)
class EinsumDenseHandler(DenseHandler):
    """A Dense-like EinsumDense: units produced along the last axis, kernel rows read the
    input's last axis (sliced as a Dense layer's); other equations are frozen."""

    def analyze(self, ctx):
        layer = ctx.layer
        why = dense_like(layer)
        if why is not None:
            reason = f"layer '{ctx.path}' (EinsumDense): {why}"
            for layout in ctx.inputs:
                ctx.freeze(layout, reason)
            return ctx.opaque_outputs(reason)
        rank = len(ctx.input_shapes[0])
        ctx.bind("in", ctx.channel_input(0, rank - 1))
        out = ctx.produce("out", int(layer.kernel.shape[-1]), rank - 1)
        if mixes_channels(getattr(layer, "activation", None)):
            ctx.freeze(out, f"layer '{ctx.path}' applies a softmax across its units")
        return [out]

    def edit_config(self, layer, config, masks):
        kept = masks.get("out")
        if kept is not None:
            shape = config["output_shape"]
            shape = [shape] if isinstance(shape, int) else list(shape)
            shape[-1] = int(kept.sum())
            config["output_shape"] = shape

    def macs(self, layer, node):
        in_shape = tuple(node.input_tensors[0].shape)
        return prod(in_shape[1:-1]) * prod(layer.kernel.shape)
