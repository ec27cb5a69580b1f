"""Flatten and the Reshapes that keep channels recognizable."""

from __future__ import annotations

from keras import layers

from kerasprune.graph.handler import LayerHandler
from kerasprune.graph.handlers._common import prod
from kerasprune.graph.registry import register_handler


def _flat_layout(ctx, inp, dims, channel_dim):
    if any(d is None for d in dims):
        reason = f"'{ctx.path}' flattens axes of unknown size"
        ctx.freeze(inp, reason)
        return ctx.opaque_outputs(reason)
    return [inp.spread(dims, channel_dim, 1)]


@register_handler(layers.Flatten)
class FlattenHandler(LayerHandler):
    """``(B, H, W, C) -> (B, H*W*C)``: channel c sits at positions ``s*C + c``.

    ``data_format="channels_first"`` flattens in channels-last order too (Keras moves
    the channel axis last before flattening), which the layout follows.
    """

    def analyze(self, ctx):
        inp = ctx.inputs[0]
        if inp is None:
            return [None]
        dims = list(ctx.input_shapes[0][1:])
        channel_dim = inp.axis - 1
        if getattr(ctx.layer, "data_format", "channels_last") == "channels_first" and len(dims) > 1:
            perm = list(range(1, len(dims))) + [0]
            dims = [dims[p] for p in perm]
            channel_dim = perm.index(channel_dim)
        return _flat_layout(ctx, inp, dims, channel_dim)


@register_handler(layers.Reshape)
class ReshapeHandler(LayerHandler):
    """Reshapes that keep the channel axis last (merging or adding spatial axes, such as
    ``(H, W, C) -> (H*W, C)`` or ``(C,) -> (1, 1, C)``) pass channels through; a reshape
    to one axis flattens like ``Flatten``. Any other reshape freezes the channels.
    """

    def analyze(self, ctx):
        inp = ctx.inputs[0]
        if inp is None:
            return [None]
        in_shape, out_shape = ctx.input_shapes[0], ctx.output_shapes[0]
        last_in = len(in_shape) - 1
        if (
            inp.axis == last_in
            and len(out_shape) >= 2
            and out_shape[-1] == in_shape[-1]
            and prod(out_shape[1:-1]) == prod(in_shape[1:-1])
            and None not in in_shape[1:]
        ):
            return [ctx.bind("channels", inp.moved(len(out_shape) - 1))]
        if len(out_shape) == 2:
            (out,) = _flat_layout(ctx, inp, list(in_shape[1:]), inp.axis - 1)
            if out is not None:
                ctx.bind("flat", out)
            return [out]
        reason = f"reshape '{ctx.path}' to {out_shape[1:]} moves the channels"
        ctx.freeze(inp, reason)
        return ctx.opaque_outputs(reason)

    def edit_config(self, layer, config, masks):
        target = list(config["target_shape"])
        if masks.get("channels") is not None and target[-1] != -1:
            target[-1] = int(masks["channels"].sum())
        if masks.get("flat") is not None and target[0] != -1:
            target[0] = int(masks["flat"].sum())
        config["target_shape"] = tuple(target)
