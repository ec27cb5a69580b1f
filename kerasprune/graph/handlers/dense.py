"""Dense (on inputs of any rank) and Embedding."""

from __future__ import annotations

from keras import layers

from kerasprune.graph.handler import LayerHandler
from kerasprune.graph.handlers._common import mixes_channels, positions_along, prod, slice_named
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
