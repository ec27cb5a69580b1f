"""Convolutions: Conv1D/2D/3D (grouped too), their transposes, depthwise and separable."""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Optional

import numpy as np
from keras import layers

from kerasprune.graph.handler import LayerHandler, NodeContext
from kerasprune.graph.handlers._common import (
    add_to_bias,
    channel_axis,
    mixes_channels,
    positions_along,
    prod,
    slice_named,
)
from kerasprune.graph.layout import Layout
from kerasprune.graph.registry import register_handler


def _produce_out(ctx, size: int, axis: int):
    out = ctx.produce("out", size, axis)
    if mixes_channels(getattr(ctx.layer, "activation", None)):
        ctx.freeze(out, f"layer '{ctx.path}' applies a softmax across its channels")
    return out


def _groups(layer: layers.Layer) -> int:
    return int(getattr(layer, "groups", 1) or 1)


def grouped_mode(ctx: NodeContext, per_in: int) -> str:
    """``"aligned"`` or ``"groups"``: how this call's grouped convolution is pruned, from
    the analysis option ``grouped_conv`` (see :class:`ConvHandler`)."""
    option = ctx.option("grouped_conv", "auto")
    mode = option if isinstance(option, str) else "auto"
    if not isinstance(option, str):
        for pattern, value in option.items():
            if fnmatchcase(ctx.path, pattern):
                mode = value
                break
    if mode == "auto":
        return "groups" if per_in == 1 else "aligned"
    return mode


@register_handler(layers.Conv1D, layers.Conv2D, layers.Conv3D)
class ConvHandler(LayerHandler):
    """Filters are produced channels; input channels are kernel axis -2.

    A convolution with ``groups > 1`` splits its input channels and its filters into
    ``groups`` blocks, block ``g`` of the filters reading block ``g`` of the inputs. It is
    pruned in one of two modes, chosen by the ``grouped_conv`` option of
    :func:`kerasprune.analyze`:

    * ``"aligned"``: the groups stay (``groups`` never changes); each block of the input
      and of the filters keeps the same number of channels (the groups of kerasprune's
      that they are part of get ``blocks``). Slots ``"in"`` and ``"out"``.
    * ``"groups"``: whole groups are removed and ``groups`` shrinks. With one input
      channel per group (a depthwise convolution written as ``Conv2D(groups=C)``),
      input channel ``c`` *is* group ``c``: the convolution passes its input's channels
      on, each repeated ``filters / groups`` times, like ``DepthwiseConv2D``. With more,
      the layer creates one channel per group (slot ``"groups"``, group
      ``<layer>/groups``), and the ``C / groups`` input channels of a group become
      views of it (the layer before loses them together).
    * ``"auto"`` (the default): ``"groups"`` with one input channel per group, where the
      aligned mode could remove nothing, ``"aligned"`` otherwise.

    In the groups mode the layer's only slot is ``"groups"``: one position per group.
    """

    def analyze(self, ctx):
        layer = ctx.layer
        axis = channel_axis(layer, len(ctx.input_shapes[0]))
        inp = ctx.channel_input(0, axis)
        groups = _groups(layer)
        if groups > 1 and inp is not None and len(inp) % groups == 0:
            if grouped_mode(ctx, len(inp) // groups) == "groups":
                return [self._analyze_groups(ctx, inp, groups, axis)]
        ctx.require_blocks(inp, groups)
        ctx.bind("in", inp)
        out = _produce_out(ctx, layer.filters, axis)
        ctx.require_blocks(out, groups)
        return [out]

    def _analyze_groups(self, ctx: NodeContext, inp: Layout, groups: int, axis: int) -> Layout:
        """The groups mode: one channel per group, removed with its inputs and filters."""
        per_in, per_out = len(inp) // groups, ctx.layer.filters // groups
        if per_in == 1:
            unit = ctx.bind("groups", inp)
        else:
            unit = ctx.produce("groups", groups, axis)
            ctx.observe(inp)
            ctx.unify(
                [inp, unit.repeated(per_in, axis)],
                f"grouped convolution '{ctx.path}' (whole groups removed)",
            )
        out = unit if per_out == 1 else unit.repeated(per_out, axis)
        if mixes_channels(getattr(ctx.layer, "activation", None)):
            ctx.freeze(out, f"layer '{ctx.path}' applies a softmax across its channels")
        return out

    def edit_config(self, layer, config, masks):
        kept_groups = masks.get("groups")
        if kept_groups is not None:
            n = int(kept_groups.sum())
            config["filters"] = n * (layer.filters // _groups(layer))
            config["groups"] = n
        elif masks.get("out") is not None:
            config["filters"] = int(masks["out"].sum())

    def slice_weights(self, layer, weights, masks):
        kin, kout = masks.get("in"), masks.get("out")
        groups = _groups(layer)
        if masks.get("groups") is not None:  # whole groups: filters g*per_out.. go
            keep = np.repeat(masks["groups"], layer.filters // groups)
            rules = {"kernel": lambda k: k[..., keep], "bias": lambda b: b[keep]}
            return slice_named(layer, weights, rules)

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
        groups = _groups(layer)
        if slot == "groups":  # filter o and its bias belong to group o // per_out
            return _group_positions(layer, groups)
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

    def passes(self, layer, slot):
        return slot == "groups"  # the groups mode with one input channel per group

    def fold_inputs(self, layer, slot, values, weights, *, exact=True):
        """Input ``j`` constant at ``c``: the bias gains ``c`` times the sum of the kernel
        over its window (``kernel[..., j, :]``). Exact where no zero padding reaches the
        window (``padding="valid"``, or a 1x1 kernel); with ``exact=False`` the padded
        borders are ignored. Grouped convolutions fold nothing."""
        if slot != "in" or not np.any(values) or _groups(layer) != 1:
            return super().fold_inputs(layer, slot, values, weights, exact=exact)
        padded = layer.padding != "valid" and any(int(k) > 1 for k in layer.kernel_size)
        if padded and exact:
            return None
        v = np.asarray(values, np.float64)
        return add_to_bias(layer, weights, lambda k: v @ k.reshape(-1, *k.shape[-2:]).sum(axis=0))


def _group_positions(layer: layers.Layer, groups: int) -> Optional[list]:
    per_out = layer.filters // groups
    out = []
    for v in layer.weights:
        name = v.name.split("/")[-1]
        if name not in ("kernel", "bias"):
            return None  # quantization scales and the like: derived from slicing
        shape = tuple(int(d) for d in v.shape)
        of_filter = np.arange(shape[-1], dtype=np.int64) // per_out
        out.append(np.array(np.broadcast_to(of_filter, shape)))
    return out


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

    def passes(self, layer, slot):
        return slot == "channels"

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
