"""Small helpers shared by the handler families."""

from __future__ import annotations

from typing import Callable, Dict, Optional, Sequence

import numpy as np

from kerasprune.graph.entries import AxisPositions

SOFTMAX_LIKE = {"softmax", "log_softmax"}


def channel_axis(layer, rank: int) -> int:
    """The channel axis a layer with a ``data_format`` uses on a tensor of ``rank``."""
    if getattr(layer, "data_format", "channels_last") == "channels_first":
        return 1
    return rank - 1


def mixes_channels(activation) -> bool:
    """True for activations that normalize across channels (softmax), which pruning changes."""
    name = getattr(activation, "__name__", str(activation))
    return name in SOFTMAX_LIKE


def prod(dims: Sequence[Optional[int]]) -> int:
    """Product of dimensions, unknown (None) dimensions counted as 1."""
    out = 1
    for d in dims:
        out *= 1 if d is None else int(d)
    return out


def slice_named(
    layer, weights: Sequence[np.ndarray], rules: Dict[str, Callable[[np.ndarray], np.ndarray]]
) -> list:
    """Apply ``rules[variable name](array)`` to each weight; others are kept as they are."""
    out = []
    for var, w in zip(layer.weights, weights):
        fn = rules.get(var.name)
        out.append(fn(w) if fn is not None else w)
    return out


def keep_count(mask: Optional[np.ndarray], default: int) -> int:
    """Number of kept positions of a slot mask (``default`` when the slot is unchanged)."""
    return default if mask is None else int(mask.sum())


def call_arg(node, position: int, name: str):
    """The argument of a call given by ``position`` or keyword ``name`` (None if absent)."""
    args = node.arguments.args
    if len(args) > position:
        return args[position]
    return node.arguments.kwargs.get(name)


def input_index(ctx, tensor) -> Optional[int]:
    """Position of ``tensor`` among the call's input tensors (None if it is not one)."""
    if tensor is None:
        return None
    for i, kt in enumerate(ctx.input_tensors):
        if kt is tensor:
            return i
    return None


def positions_along(layer, axes: Dict[str, Optional[int]], size: int) -> Optional[list]:
    """``weight_positions`` of a layer whose weight ``name`` depends on the slot along
    axis ``axes[name]`` only (entry ``(..., p, ...)`` on that axis: position ``p``), as
    :class:`~kerasprune.graph.entries.AxisPositions`.

    Returns None (let kerasprune derive the positions from slicing) when the layer has
    a weight not named in ``axes`` (quantization scales, LoRA factors...) or a named
    weight whose axis is not ``size`` long. A weight named with axis None does not
    depend on the slot.
    """
    out = []
    for v in layer.weights:
        name = v.name.split("/")[-1]
        if name not in axes:
            return None
        shape = tuple(int(d) for d in v.shape)
        axis = axes[name]
        if axis is None:
            out.append(None)
            continue
        if shape[axis] != size:
            return None
        out.append(AxisPositions(shape, axis % len(shape)))
    return out


def add_to_bias(layer, weights: Sequence[np.ndarray], kernel_fn: Callable[[np.ndarray], np.ndarray]) -> Optional[list]:
    """``weights`` with ``kernel_fn(kernel)`` added to the bias (a fold of constant inputs,
    see :meth:`~kerasprune.LayerHandler.fold_inputs`); None when the layer has no float
    ``kernel`` and ``bias`` (no bias, quantized or LoRA weights)."""
    names = [v.name.split("/")[-1] for v in layer.weights]
    if sorted(names) != ["bias", "kernel"]:
        return None
    out = [np.array(w) for w in weights]
    k, b = names.index("kernel"), names.index("bias")
    if not np.issubdtype(out[k].dtype, np.floating):
        return None
    delta = kernel_fn(out[k].astype(np.float64))
    out[b] = (out[b].astype(np.float64) + delta).astype(out[b].dtype)
    return out
