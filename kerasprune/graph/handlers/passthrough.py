"""Layers that leave channels as they are: activations, dropout, pooling, padding, ..."""

from __future__ import annotations

import keras
import numpy as np
from keras import layers

from kerasprune.graph.handler import LayerHandler
from kerasprune.graph.handlers._common import channel_axis, mixes_channels
from kerasprune.graph.registry import register_handler


class PassThroughHandler(LayerHandler):
    """Output channels are the input channels, position for position.

    For layers with a ``data_format`` the channel axis must be the one the layer treats
    as channels; the channel axis must keep its size from input to output. Register
    this handler (or a subclass) for a custom layer that acts on each channel alone.
    """

    def analyze(self, ctx):
        inp = ctx.inputs[0] if ctx.inputs else None
        n_out = len(ctx.output_shapes)
        if inp is None:
            return [None] * n_out
        in_shape, out_shape = ctx.input_shapes[0], ctx.output_shapes[0]
        if hasattr(ctx.layer, "data_format"):
            inp = ctx.channel_input(0, channel_axis(ctx.layer, len(in_shape)))
            if inp is None:
                return ctx.opaque_outputs(f"the channels entering '{ctx.path}' are not tracked")
        if len(out_shape) != len(in_shape) or out_shape[inp.axis] != in_shape[inp.axis]:
            reason = f"layer '{ctx.path}' ({type(ctx.layer).__name__}) changes the channel axis"
            ctx.freeze(inp, reason)
            return ctx.opaque_outputs(reason)
        if self.mixes(ctx, inp):
            ctx.freeze(inp, f"layer '{ctx.path}' applies a softmax across the channels")
        return [inp] * n_out

    def mixes(self, ctx, inp) -> bool:
        """Whether the layer mixes values across the channel axis (then the group freezes)."""
        return mixes_channels(getattr(ctx.layer, "activation", None))


_PASS = [
    layers.Activation, layers.ReLU, layers.LeakyReLU, layers.ELU,
    layers.Dropout, layers.SpatialDropout1D, layers.SpatialDropout2D, layers.SpatialDropout3D,
    layers.GaussianDropout, layers.GaussianNoise, layers.AlphaDropout,
    layers.ActivityRegularization, layers.Identity, layers.Masking,
    layers.MaxPooling1D, layers.MaxPooling2D, layers.MaxPooling3D,
    layers.AveragePooling1D, layers.AveragePooling2D, layers.AveragePooling3D,
    layers.ZeroPadding1D, layers.ZeroPadding2D, layers.ZeroPadding3D,
    layers.Cropping1D, layers.Cropping2D, layers.Cropping3D,
    layers.UpSampling1D, layers.UpSampling2D, layers.UpSampling3D,
    layers.Resizing, layers.CenterCrop,
    layers.RandomFlip, layers.RandomRotation, layers.RandomZoom, layers.RandomTranslation,
    layers.RandomContrast, layers.RandomCrop,
]
register_handler(*_PASS)(PassThroughHandler)


@register_handler(layers.Rescaling)
class RescalingHandler(PassThroughHandler):
    """``x * scale + offset``; a per-channel scale or offset (an array whose last axis
    runs along the channels) is sliced with them."""

    def analyze(self, ctx):
        outs = super().analyze(ctx)
        inp = ctx.inputs[0] if ctx.inputs else None
        if inp is None or outs[0] is None:
            return outs
        shape = ctx.input_shapes[0]
        arrays = [np.asarray(v) for v in (ctx.layer.scale, ctx.layer.offset)]
        along = [a for a in arrays if a.ndim > 0 and a.shape[-1] != 1]
        if not along:
            return outs
        if inp.axis == len(shape) - 1 and all(a.shape[-1] == shape[-1] for a in along):
            return [ctx.bind("channels", inp)]
        ctx.freeze(
            inp, f"layer '{ctx.path}' scales its input by an array that does not run along the channels"
        )
        return outs

    def passes(self, layer, slot):
        return slot == "channels"

    def edit_config(self, layer, config, masks):
        mask = masks.get("channels")
        if mask is None:
            return
        for key in ("scale", "offset"):
            a = np.asarray(getattr(layer, key))
            if a.ndim > 0 and a.shape[-1] == mask.shape[0]:
                config[key] = keras.saving.serialize_keras_object(a[..., mask])


@register_handler(layers.Softmax)
class SoftmaxHandler(PassThroughHandler):
    """A softmax over the channel axis couples every channel: the group is frozen."""

    def mixes(self, ctx, inp) -> bool:
        rank = len(ctx.input_shapes[0])
        axes = ctx.layer.axis if isinstance(ctx.layer.axis, (list, tuple)) else [ctx.layer.axis]
        return inp.axis in {int(a) % rank for a in axes}


@register_handler(
    layers.GlobalAveragePooling1D, layers.GlobalAveragePooling2D, layers.GlobalAveragePooling3D,
    layers.GlobalMaxPooling1D, layers.GlobalMaxPooling2D, layers.GlobalMaxPooling3D,
)
class GlobalPoolingHandler(LayerHandler):
    """Spatial axes are reduced; channels stay (on the last axis unless ``keepdims``)."""

    def analyze(self, ctx):
        inp = ctx.inputs[0]
        if inp is None:
            return [None]
        inp = ctx.channel_input(0, channel_axis(ctx.layer, len(ctx.input_shapes[0])))
        if inp is None:
            return ctx.opaque_outputs(f"the channels entering '{ctx.path}' are not tracked")
        if getattr(ctx.layer, "keepdims", False):
            return [inp]
        return [inp.moved(len(ctx.output_shapes[0]) - 1)]


@register_handler(layers.RepeatVector)
class RepeatVectorHandler(LayerHandler):
    """``(B, C) -> (B, n, C)``: channels stay on the last axis."""

    def analyze(self, ctx):
        inp = ctx.channel_input(0)
        if inp is None:
            return [None]
        return [inp.moved(2)]


@register_handler(layers.InputLayer)
class InputLayerHandler(LayerHandler):
    """The input layer of a nested model: its ``batch_shape`` follows the pruned width."""

    def passes(self, layer, slot):
        return slot == "channels"

    def edit_config(self, layer, config, masks):
        mask = masks.get("channels")
        if mask is None:
            return
        key = "batch_shape" if "batch_shape" in config else "batch_input_shape"
        shape = list(config[key])
        shape[masks.axes["channels"]] = int(mask.sum())
        config[key] = shape
