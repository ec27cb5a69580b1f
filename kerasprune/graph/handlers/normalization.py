"""Per-channel normalization layers and PReLU."""

from __future__ import annotations

import numpy as np
from keras import layers

from kerasprune.graph.handler import LayerHandler
from kerasprune.graph.handlers._common import slice_named
from kerasprune.graph.registry import register_handler


def _axes(axis, rank: int):
    if isinstance(axis, (list, tuple)):
        return sorted(int(a) % rank for a in axis)
    return [int(axis) % rank]


class PerChannelHandler(LayerHandler):
    """Layers whose weights hold one entry per channel of one axis, output = input layout.

    Subclasses say which axes the layer's parameters run along (``param_axes``); when
    that is exactly the channel axis the parameters are sliced, when the channel axis is
    not among them the channels pass untouched, otherwise the channels are frozen.
    """

    def param_axes(self, layer, rank: int):
        return _axes(layer.axis, rank)

    def analyze(self, ctx):
        inp = ctx.inputs[0] if ctx.inputs else None
        if inp is None:
            return [None] * len(ctx.output_shapes)
        rank = len(ctx.input_shapes[0])
        axes = self.param_axes(ctx.layer, rank)
        if axes == [inp.axis]:
            return [ctx.bind("channels", inp)]
        if inp.axis not in axes:
            return [inp]
        reason = (
            f"layer '{ctx.path}' ({type(ctx.layer).__name__}) mixes the channel axis with "
            f"axes {axes} in its parameters"
        )
        ctx.freeze(inp, reason)
        return [inp]

    def slice_weights(self, layer, weights, masks):
        mask = masks.get("channels")
        if mask is None:
            return list(weights)
        return [w[..., mask] if w.ndim >= 1 and w.shape[-1] == mask.shape[0] else w for w in weights]

    def passes(self, layer, slot):
        return slot == "channels"


@register_handler(layers.BatchNormalization)
class BatchNormHandler(PerChannelHandler):
    """gamma, beta and the moving mean and variance are sliced together."""


@register_handler(layers.LayerNormalization)
class LayerNormHandler(PerChannelHandler):
    """Over the channel axis: gamma and beta sliced; the statistics change (not exact)."""

    exact = False


class RMSNormalizationHandler(PerChannelHandler):
    """Over the channel axis: the scale is sliced; the root mean square over the kept
    channels is another (not exact)."""

    exact = False


if hasattr(layers, "RMSNormalization"):  # Keras 3.9 and later
    register_handler(layers.RMSNormalization)(RMSNormalizationHandler)


@register_handler(layers.GroupNormalization)
class GroupNormHandler(PerChannelHandler):
    """Channels split into ``groups`` blocks that keep equal sizes (``groups`` is kept).

    With one channel per group (``groups=-1`` or ``groups == channels``, instance
    normalization) every channel is independent and ``groups`` follows the width.
    """

    exact = False

    def analyze(self, ctx):
        outs = super().analyze(ctx)
        layer = ctx.layer
        inp = ctx.record.slots.get("channels")
        if inp is not None:
            size = ctx.input_shapes[0][inp.axis]
            if layer.groups not in (-1, size):
                ctx.require_blocks(inp, int(layer.groups))
        return outs

    def edit_config(self, layer, config, masks):
        mask = masks.get("channels")
        if mask is not None and config.get("groups") not in (-1, None) and config["groups"] == mask.shape[0]:
            config["groups"] = int(mask.sum())


@register_handler(layers.Normalization)
class NormalizationHandler(PerChannelHandler):
    """Preprocessing normalization: adapted or configured mean and variance are sliced."""

    def edit_config(self, layer, config, masks):
        mask = masks.get("channels")
        if mask is None:
            return
        for key in ("mean", "variance"):
            value = config.get(key)
            if value is None:
                continue
            arr = np.asarray(value)
            if arr.ndim >= 1 and arr.shape[-1] == mask.shape[0]:
                config[key] = arr[..., mask].tolist()


@register_handler(layers.PReLU)
class PReLUHandler(PerChannelHandler):
    """The per-channel slopes (alpha) are sliced; slopes shared over channels pass."""

    def param_axes(self, layer, rank: int):
        shared = {int(a) % rank for a in (layer.shared_axes or [])}
        return [a for a in range(1, rank) if a not in shared]

    def analyze(self, ctx):
        inp = ctx.inputs[0] if ctx.inputs else None
        if inp is None:
            return [None]
        rank = len(ctx.input_shapes[0])
        axes = self.param_axes(ctx.layer, rank)
        if inp.axis not in axes:
            return [inp]
        # alpha spans the channel axis (and maybe others); it is sliced along that axis
        return [ctx.bind("channels", inp)]

    def slice_weights(self, layer, weights, masks):
        mask = masks.get("channels")
        if mask is None:
            return list(weights)
        axis = masks.axes["channels"] - 1  # alpha has the input's shape without batch
        return slice_named(layer, weights, {"alpha": lambda a: np.compress(mask, a, axis=axis)})
