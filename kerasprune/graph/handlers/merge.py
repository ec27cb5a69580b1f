"""Merges: element-wise ones couple their inputs; Concatenate lays them end to end."""

from __future__ import annotations

from keras import layers

from kerasprune.graph.handler import LayerHandler
from kerasprune.graph.layout import Layout
from kerasprune.graph.registry import register_handler


@register_handler(
    layers.Add, layers.Subtract, layers.Multiply, layers.Average, layers.Maximum, layers.Minimum
)
class ElementwiseMergeHandler(LayerHandler):
    """Every input's channel c meets every other input's channel c: they are one group.

    Inputs broadcast along the channel axis (size 1, such as a spatial attention map) do
    not take part; inputs broadcast along other axes (a squeeze-and-excitation gate of
    shape ``(1, 1, C)``) are coupled like any other.
    """

    def where(self, ctx) -> str:
        """How reasons name the merge (the element-wise operations name themselves)."""
        return f"merge '{ctx.path}'"

    def analyze(self, ctx):
        out_shape = ctx.output_shapes[0]
        rank_out = len(out_shape)
        where = self.where(ctx)
        joined, rel = [], None
        untracked = False
        for layout, shape in zip(ctx.inputs, ctx.input_shapes):
            if layout is None:
                untracked = untracked or (len(shape) > 0 and shape[-1] != 1)
                continue
            if shape[layout.axis] == 1 and out_shape[rank_out + layout.axis - len(shape)] != 1:
                continue  # broadcast over channels
            r = layout.axis - len(shape)
            if rel is None:
                rel = r
            elif r != rel:
                reason = f"{where} joins tensors whose channels run along different axes"
                for l in ctx.inputs:
                    ctx.freeze(l, reason)
                return ctx.opaque_outputs(reason)
            joined.append(layout)
        if not joined:
            return [None]
        if untracked:
            reason = f"{where} joins these channels with untracked ones"
            for l in joined:
                ctx.freeze(l, reason)
        ctx.unify(joined, where)
        return [joined[0].moved(rank_out + rel)]


@register_handler(layers.Concatenate)
class ConcatenateHandler(LayerHandler):
    """On the channel axis each input's channels take the next slice of the output.

    On any other axis the inputs meet position by position and are coupled.
    """

    def analyze(self, ctx):
        rank = len(ctx.output_shapes[0])
        axis = int(ctx.layer.axis) % rank
        lays = ctx.inputs
        known = [l for l in lays if l is not None]
        if known and all(l.axis == axis for l in known):
            parts = []
            for i, (l, shape) in enumerate(zip(lays, ctx.input_shapes)):
                if l is None:
                    l = ctx.frozen_layout(
                        shape[axis], axis, f"concatenated by '{ctx.path}' with untracked channels"
                    )
                    if l is None:
                        return [None]
                parts.append(l)
            return [Layout.concat(parts, axis)]
        if known and all(l.axis == known[0].axis for l in known) and len(known) == len(lays):
            ctx.unify(known, f"concatenation '{ctx.path}' along axis {axis}")
            return [known[0]]
        reason = f"concatenation '{ctx.path}' mixes channel axes"
        for l in known:
            ctx.freeze(l, reason)
        return ctx.opaque_outputs(reason)
