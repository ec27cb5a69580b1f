"""Convolutions: Conv1D/2D/3D (grouped too), their transposes, depthwise and separable."""

from __future__ import annotations

import numpy as np
from keras import layers

from kerasprune.graph.handler import LayerHandler
from kerasprune.graph.handlers._common import channel_axis, mixes_channels, positions_along, prod, slice_named
from kerasprune.graph.registry import register_handler


def _produce_out(ctx, size: int, axis: int):
    out = ctx.produce("out", size, axis)
    if mixes_channels(getattr(ctx.layer, "activation", None)):
        ctx.freeze(out, f"layer '{ctx.path}' applies a softmax across its channels")
    return out


@register_handler(layers.Conv1D, layers.Conv2D, layers.Conv3D)
class ConvHandler(LayerHandler):
    """Filters are produced channels; input channels are kernel axis -2.

    With ``groups > 1`` the input and output channels are split into ``groups`` blocks;
    pruning keeps the groups aligned (the same number of channels kept in each block),
    so ``groups`` never changes.
    """

    def analyze(self, ctx):
        layer = ctx.layer
        axis = channel_axis(layer, len(ctx.input_shapes[0]))
        inp = ctx.channel_input(0, axis)
        groups = int(getattr(layer, "groups", 1) or 1)
        ctx.require_blocks(inp, groups)
        ctx.bind("in", inp)
        out = _produce_out(ctx, layer.filters, axis)
        ctx.require_blocks(out, groups)
        return [out]

    def edit_config(self, layer, config, masks):
        if masks.get("out") is not None:
            config["filters"] = int(masks["out"].sum())

    def slice_weights(self, layer, weights, masks):
        kin, kout = masks.get("in"), masks.get("out")
        groups = int(getattr(layer, "groups", 1) or 1)

        def kernel(k):
            if groups == 1:
                if kin is not None:
                    k = k[..., kin, :]
                return k if kout is None else k[..., kout]
            per_out = k.shape[-1] // groups
            blocks = []
            for g in range(groups):
                kg = k[..., g * per_out : (g + 1) * per_out]
                if kin is not None:
                    kg = kg[..., kin.reshape(groups, -1)[g], :]
                if kout is not None:
                    kg = kg[..., kout.reshape(groups, -1)[g]]
                blocks.append(kg)
            return np.concatenate(blocks, axis=-1)

        rules = {"kernel": kernel}
        if kout is not None:
            rules["bias"] = lambda b: b[kout]
        return slice_named(layer, weights, rules)

    def weight_positions(self, layer, slot, size):
        groups = int(getattr(layer, "groups", 1) or 1)
        if slot == "out":  # filter o: kernel[..., o] and bias[o], grouped or not
            return positions_along(layer, {"kernel": -1, "bias": 0}, size)
        if slot != "in":
            return None
        if groups == 1:
            return positions_along(layer, {"kernel": -2, "bias": None}, size)
        # kernel (*k, in/groups, out): entry (..., j, o) reads input g*per_in + j,
        # g = the block of output o; a probe cannot remove one input of one block only
        kshape = tuple(layer.kernel.shape)
        per_in, per_out = kshape[-2], kshape[-1] // groups
        j = np.arange(per_in)[:, None]
        g = (np.arange(kshape[-1]) // per_out)[None, :]
        pos = np.broadcast_to(g * per_in + j, kshape)
        return [np.array(pos) if v.name == "kernel" else None for v in layer.weights]

    def macs(self, layer, node):
        out_shape = tuple(node.outputs[0].shape)
        axis = channel_axis(layer, len(out_shape))
        spatial = [d for i, d in enumerate(out_shape[1:], start=1) if i != axis]
        return prod(layer.kernel.shape) * prod(spatial)


@register_handler(layers.Conv1DTranspose, layers.Conv2DTranspose, layers.Conv3DTranspose)
class ConvTransposeHandler(ConvHandler):
    """Transposed convolutions: the kernel is ``(*k, out, in)``."""

    def slice_weights(self, layer, weights, masks):
        kin, kout = masks.get("in"), masks.get("out")

        def kernel(k):
            if kin is not None:
                k = k[..., kin]
            return k if kout is None else k[..., kout, :]

        rules = {"kernel": kernel}
        if kout is not None:
            rules["bias"] = lambda b: b[kout]
        return slice_named(layer, weights, rules)

    def weight_positions(self, layer, slot, size):
        if slot == "out":
            return positions_along(layer, {"kernel": -2, "bias": 0}, size)
        if slot == "in":
            return positions_along(layer, {"kernel": -1, "bias": None}, size)
        return None

    def macs(self, layer, node):
        in_shape = tuple(node.input_tensors[0].shape)
        axis = channel_axis(layer, len(in_shape))
        spatial = [d for i, d in enumerate(in_shape[1:], start=1) if i != axis]
        return prod(layer.kernel.shape) * prod(spatial)


@register_handler(layers.DepthwiseConv1D, layers.DepthwiseConv2D)
class DepthwiseConvHandler(LayerHandler):
    """Channels pass through; with ``depth_multiplier`` m, channel c becomes c*m..c*m+m-1."""

    def analyze(self, ctx):
        layer = ctx.layer
        axis = channel_axis(layer, len(ctx.input_shapes[0]))
        inp = ctx.channel_input(0, axis)
        if inp is None:
            return ctx.opaque_outputs(f"the input channels of '{ctx.path}' are not tracked")
        inp = ctx.bind("channels", inp)
        m = int(layer.depth_multiplier)
        out = inp if m == 1 else inp.repeated(m, axis)
        if mixes_channels(getattr(layer, "activation", None)):
            ctx.freeze(out, f"layer '{ctx.path}' applies a softmax across its channels")
        return [out]

    def slice_weights(self, layer, weights, masks):
        mask = masks.get("channels")
        if mask is None:
            return list(weights)
        m = int(layer.depth_multiplier)
        return slice_named(
            layer,
            weights,
            {
                "kernel": lambda k: k[..., mask, :],
                "depthwise_kernel": lambda k: k[..., mask, :],
                "bias": lambda b: b[np.repeat(mask, m)],
            },
        )

    def macs(self, layer, node):
        out_shape = tuple(node.outputs[0].shape)
        axis = channel_axis(layer, len(out_shape))
        spatial = [d for i, d in enumerate(out_shape[1:], start=1) if i != axis]
        return prod(layer.kernel.shape) * prod(spatial)


@register_handler(layers.SeparableConv1D, layers.SeparableConv2D)
class SeparableConvHandler(LayerHandler):
    """Depthwise kernel ``(*k, in, m)`` then pointwise kernel ``(1.., in*m, out)``."""

    def analyze(self, ctx):
        layer = ctx.layer
        axis = channel_axis(layer, len(ctx.input_shapes[0]))
        ctx.bind("in", ctx.channel_input(0, axis))
        return [_produce_out(ctx, layer.filters, axis)]

    def edit_config(self, layer, config, masks):
        if masks.get("out") is not None:
            config["filters"] = int(masks["out"].sum())

    def slice_weights(self, layer, weights, masks):
        kin, kout = masks.get("in"), masks.get("out")
        m = int(layer.depth_multiplier)
        rules = {}
        if kin is not None:
            rules["depthwise_kernel"] = lambda k: k[..., kin, :]
        def pointwise(k):
            if kin is not None:
                k = k[..., np.repeat(kin, m), :]
            return k if kout is None else k[..., kout]
        rules["pointwise_kernel"] = pointwise
        if kout is not None:
            rules["bias"] = lambda b: b[kout]
        return slice_named(layer, weights, rules)

    def macs(self, layer, node):
        out_shape = tuple(node.outputs[0].shape)
        axis = channel_axis(layer, len(out_shape))
        spatial = prod([d for i, d in enumerate(out_shape[1:], start=1) if i != axis])
        return (prod(layer.depthwise_kernel.shape) + prod(layer.pointwise_kernel.shape)) * spatial
