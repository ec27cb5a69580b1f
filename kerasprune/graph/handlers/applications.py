"""The small custom layers that ``keras.applications`` models are built with.

- ``LayerScale`` (ConvNeXt, Touvron et al., "Going deeper with Image Transformers",
  ICCV 2021): ``x * gamma`` with one learned scale per channel; sliced with the
  channels, its ``projection_dim`` follows the width.
- ``CustomScaleLayer`` (InceptionResNetV2's scaled residual, ``x + scale * r`` with a
  constant ``scale``): an element-wise merge, its two inputs coupled.
"""

from __future__ import annotations

from kerasprune.graph.handlers.merge import ElementwiseMergeHandler
from kerasprune.graph.handlers.normalization import PerChannelHandler
from kerasprune.graph.registry import register_handler

__all__ = ["LayerScaleHandler"]


def _optional(module: str, name: str) -> list:
    """The class ``module.name`` if this Keras has it (its applications are private API)."""
    try:
        mod = __import__(module, fromlist=[name])
    except ImportError:  # pragma: no cover  (another Keras layout)
        return []
    cls = getattr(mod, name, None)
    return [cls] if isinstance(cls, type) else []


_LAYER_SCALE = _optional("keras.src.applications.convnext", "LayerScale")
_CUSTOM_SCALE = _optional("keras.src.applications.inception_resnet_v2", "CustomScaleLayer")


class LayerScaleHandler(PerChannelHandler):
    """``gamma`` holds one scale per channel of the last axis."""

    def param_axes(self, layer, rank: int):
        return [rank - 1]

    def edit_config(self, layer, config, masks):
        mask = masks.get("channels")
        if mask is not None:
            config["projection_dim"] = int(mask.sum())


if _LAYER_SCALE:
    register_handler(*_LAYER_SCALE)(LayerScaleHandler)
if _CUSTOM_SCALE:
    register_handler(*_CUSTOM_SCALE)(ElementwiseMergeHandler)
