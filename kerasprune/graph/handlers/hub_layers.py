"""Handlers for keras-hub's embedding and normalization layers.

Imported by the registry the first time a keras-hub layer is looked up (so importing
kerasprune never imports keras-hub).

- ``ReversibleEmbedding``: Keras's own (``kerasprune.graph.handlers.dense``); keras-hub's
  class is registered with the same handler in case it is not a plain subclass.
- ``PositionEmbedding``: a learned table ``(sequence_length, width)`` whose output has
  its input's shape; its columns are produced channels, coupled to its input's channels.
- ``TokenAndPositionEmbedding`` holds the two above and no weight of its own: it is a
  composite layer, walked inside (:mod:`kerasprune.graph.composite`).
- ``ViTPatchingAndEmbedding``: a patch convolution, a class token and a position
  embedding, summed: the three produce the same channels.
- The RMS normalizations of the decoder families (Llama, Mistral, Mixtral, Qwen, Qwen3,
  Phi-3, Gemma, T5, ...): one scale per channel of the last axis (``x * scale`` or
  ``x * (1 + scale)`` after dividing by the root mean square over that axis), found by
  module path so that a class another keras-hub version lacks is skipped. Removing
  channels changes the root mean square, so they are not exact.
"""

from __future__ import annotations

import importlib
from typing import List, Sequence, Tuple

import keras_hub
import numpy as np

from kerasprune.graph.handler import LayerHandler
from kerasprune.graph.handlers._common import (
    call_arg,
    channel_axis,
    input_index,
    keep_count,
    positions_along,
    prod,
    slice_named,
)
from kerasprune.graph.handlers.dense import ReversibleEmbeddingHandler
from kerasprune.graph.handlers.normalization import PerChannelHandler
from kerasprune.graph.registry import register_handler

__all__ = [
    "PositionEmbeddingHandler",
    "ViTPatchingHandler",
    "HubRMSNormHandler",
    "hub_classes",
]

_SRC = "keras_hub.src."

# (module under keras_hub.src, class name) of the RMS normalizations with at most one
# scale per channel of the channel axis (the last, or RmsNorm2d's data_format's)
RMS_NORMS: Tuple[Tuple[str, str], ...] = (
    ("layers.modeling.rms_normalization", "RMSNormalization"),
    ("models.llama.llama_layernorm", "LlamaLayerNorm"),
    ("models.mistral.mistral_layer_norm", "MistralLayerNormalization"),
    ("models.mixtral.mixtral_layer_norm", "MixtralLayerNormalization"),
    ("models.qwen.qwen_layernorm", "QwenLayerNorm"),
    ("models.qwen_moe.qwen_moe_layernorm", "QwenMoeLayerNorm"),
    ("models.qwen3.qwen3_layernorm", "Qwen3LayerNorm"),
    ("models.qwen3_moe.qwen3_moe_layernorm", "Qwen3MoeLayerNorm"),
    ("models.qwen3_5.qwen3_5_layers", "Qwen3_5LayerNorm"),
    ("models.qwen3_5.qwen3_5_layers", "Qwen3_5RMSNormGated"),
    ("models.phi3.phi3_layernorm", "Phi3LayerNorm"),
    ("models.gemma.rms_normalization", "RMSNormalization"),
    ("models.gemma3.gemma3_layers", "RMSNormalization"),
    ("models.gemma3n.rms_normalization", "Gemma3nRMSNorm"),
    ("models.gemma4.gemma4_layers", "RMSNormalization"),
    ("models.gemma4.gemma4_layers", "Gemma4FrozenNorm"),
    ("models.gemma4.gemma4_layers", "Gemma4VNorm"),
    ("models.t5.t5_layer_norm", "T5LayerNorm"),
    ("models.gpt_oss.gpt_oss_layer_norm", "GptOssLayerNormalization"),
    ("models.roformer_v2.roformer_v2_attention", "RoformerNorm"),
    ("models.edrec.edrec_layers", "EdRecRMSNormalization"),
    ("models.mobilenetv5.mobilenetv5_layers", "RmsNorm2d"),
)


def hub_classes(names: Sequence[Tuple[str, str]]) -> List[type]:
    """The classes ``keras_hub.src.<module>.<name>`` that this keras-hub has (a module
    or class it lacks is skipped).

    Args:
        names: ``(module under keras_hub.src, class name)`` pairs.

    Returns:
        The classes found, in order, each once.
    """
    found: List[type] = []
    for module, name in names:
        try:
            mod = importlib.import_module(_SRC + module)
        except ImportError:  # another keras-hub version
            continue
        cls = getattr(mod, name, None)
        if isinstance(cls, type) and cls not in found:
            found.append(cls)
    return found


register_handler(keras_hub.layers.ReversibleEmbedding)(ReversibleEmbeddingHandler)


@register_handler(keras_hub.layers.PositionEmbedding)
class PositionEmbeddingHandler(LayerHandler):
    """The columns of the position table are produced channels (slot ``"out"``).

    The output has the input's shape (the table is as wide as the input and is added
    to it by the model), so its channels are coupled to the input's; the input's values
    are not read.
    """

    def analyze(self, ctx):
        layer = ctx.layer
        rank = len(ctx.output_shapes[0])
        out = ctx.produce("out", int(layer.position_embeddings.shape[-1]), rank - 1)
        i = input_index(ctx, call_arg(ctx.node, 0, "inputs"))
        inp = None if i is None else ctx.channel_input(i)
        if inp is None:
            ctx.freeze(out, f"{ctx.describe()} is as wide as an input whose channels kerasprune does not track")
        else:
            ctx.unify([out, inp], f"{ctx.describe()}, whose output is as wide as its input")
        return [out]

    def slice_weights(self, layer, weights, masks):
        kout = masks.get("out")
        if kout is None:
            return list(weights)
        return slice_named(layer, weights, {"embeddings": lambda e: e[:, kout]})

    def weight_positions(self, layer, slot, size):
        if slot == "out":  # channel c: column c of the table
            return positions_along(layer, {"embeddings": -1}, size)
        return None


_VIT = hub_classes([("models.vit.vit_layers", "ViTPatchingAndEmbedding")])

# keys of ViTPatchingAndEmbedding's get_config() that its constructor does not take
# (derived from image_size and patch_size), and constructor arguments it leaves out
_VIT_DERIVED = ("num_patches", "num_positions")
_VIT_MISSING = ("use_patch_bias", "data_format")


class ViTPatchingHandler(LayerHandler):
    """ViT's patch embedding: a strided convolution (``patch_embedding``) over the image,
    a learned class token prepended, a position embedding added.

    The convolution's filters, the class token and the columns of the position table
    are one set of produced channels (slot ``"out"``, ``hidden_dim`` of them); the
    convolution's input channels are slot ``"in"``. The config keras-hub writes holds
    two derived counts its constructor refuses and lacks two arguments; they are
    mended when the layer is rebuilt thinner.
    """

    def analyze(self, ctx):
        layer = ctx.layer
        ctx.bind("in", ctx.channel_input(0, channel_axis(layer, len(ctx.input_shapes[0]))))
        return [ctx.produce("out", int(layer.hidden_dim), len(ctx.output_shapes[0]) - 1)]

    def edit_config(self, layer, config, masks):
        for key in _VIT_DERIVED:
            config.pop(key, None)
        for key in _VIT_MISSING:
            config.setdefault(key, getattr(layer, key))
        if masks.get("out") is not None:
            config["hidden_dim"] = keep_count(masks["out"], layer.hidden_dim)
        if masks.get("in") is not None:
            config["num_channels"] = keep_count(masks["in"], layer.num_channels)

    def slice_weights(self, layer, weights, masks):
        kin, kout = masks.get("in"), masks.get("out")

        def kernel(k):  # (*patch, in, out)
            if kin is not None:
                k = k[..., kin, :]
            return k if kout is None else k[..., kout]

        rules = {"kernel": kernel}
        if kout is not None:
            rules.update(
                class_token=lambda t: t[..., kout],
                bias=lambda b: b[kout],
                embeddings=lambda e: e[:, kout],
            )
        return slice_named(layer, weights, rules)

    def macs(self, layer, node):
        return int(layer.num_patches) * prod(layer.patch_embedding.kernel.shape)


if _VIT:
    register_handler(*_VIT)(ViTPatchingHandler)

# the constructor arguments of some RMS normalizations that fix their width
_WIDTH_KEYS = ("input_dim", "dim", "head_dim")


class HubRMSNormHandler(PerChannelHandler):
    """A keras-hub RMS normalization: one scale per channel of the channel axis (none
    for a normalization without scale); the root mean square over the kept channels is
    another (not exact). A width given in the config (``dim``, ``input_dim``,
    ``head_dim``) follows the kept channels."""

    exact = False

    def param_axes(self, layer, rank: int):
        return [channel_axis(layer, rank)]

    def edit_config(self, layer, config, masks):
        mask = masks.get("channels")
        if mask is None:
            return
        for key in _WIDTH_KEYS:
            if isinstance(config.get(key), (int, np.integer)) and config[key] == mask.shape[0]:
                config[key] = int(mask.sum())


_RMS = hub_classes(RMS_NORMS)
if _RMS:
    register_handler(*_RMS)(HubRMSNormHandler)
