"""Keras operations in a functional graph: ``x + 3.0``, ``keras.ops.relu(x)``, ``x[:, 0]``.

Keras 3 records every ``keras.ops`` call on a symbolic tensor as a node of the graph,
like a layer call: ``x + 3.0`` leaves a ``keras.src.ops.numpy.Add``, ``x[:, 0]`` a
``GetItem``. Operations hold no weights, so their handlers only say where the channels
go; the rebuild re-creates them from the model config, and the one config here that
encodes a width (``reshape``'s new shape, ``slice``'s shape) is edited. The families:

* **element-wise** (unary activations and math, binary arithmetic and comparisons,
  ``where``, ``clip``, ``cast``): like the element-wise merge layers, tensors whose
  channels meet are coupled (a squeeze-and-excitation gate of shape ``(1, 1, C)``
  included) and tensors broadcast over the channel axis do not take part. A Python
  number passes; a constant array that varies along the channel axis cannot be sliced
  and freezes the channels;
* **along an axis** (softmax, log_softmax, normalize, cumsum, sort, flip, roll): pass
  when they act on another axis than the channels';
* **reductions** (mean, sum, max, min, std, var, ..., ``keepdims`` either way) over
  other axes than the channels';
* **axis moves** (transpose, moveaxis, swapaxes, expand_dims, squeeze, reshape): the
  channel axis is followed; a reshape may merge it with other axes (a flatten) but not
  split it;
* **joins and splits**: concatenate (on the channel axis each input takes the next
  slice; on another axis the inputs are coupled), stack (coupled), split and
  array_split (of the channel axis too: each piece takes its slice, equal sections
  keep the input's group in equal blocks, split indices follow the kept channels),
  unstack along another axis, ``x[...]`` (``get_item``) and ``slice`` that keep the
  whole channel axis, pad of other axes;
* **contractions** (matmul, einsum): an axis carried to the output keeps its channels;
  a contracted channel axis couples the operands that meet along it (``q @ k^T``
  couples the query and key units, removing channel ``c`` of both removes term ``c``
  of the sum, as removing a Dense input does); anything else there is frozen;
* **pooling** (``keras.ops.nn`` max_pool, average_pool, ``keras.ops.image.resize``)
  with the channels on their ``data_format``'s channel axis.

Any other operation is frozen by the base handler, with a reason and a warning that
name it (``operation keras.ops.tile``).
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import keras
import numpy as np
from keras.src.ops import core as _core
from keras.src.ops import image as _image
from keras.src.ops import math as _math
from keras.src.ops import nn as _nn
from keras.src.ops import numpy as _numpy

from kerasprune.graph.handler import LayerHandler, NodeContext, SlotMasks
from kerasprune.graph.handlers._common import call_arg, input_index, prod
from kerasprune.graph.handlers.merge import ConcatenateHandler, ElementwiseMergeHandler
from kerasprune.graph.layout import Layout
from kerasprune.graph.registry import register_handler

__all__ = [
    "ElementwiseOpHandler",
    "AlongAxisOpHandler",
    "ReductionOpHandler",
    "TransposeOpHandler",
    "ExpandDimsOpHandler",
    "SqueezeOpHandler",
    "ReshapeOpHandler",
    "ConcatenateOpHandler",
    "StackOpHandler",
    "SplitOpHandler",
    "UnstackOpHandler",
    "GetItemOpHandler",
    "SliceOpHandler",
    "PadOpHandler",
    "ContractionOpHandler",
    "PoolingOpHandler",
]


def _classes(module, names: str) -> List[type]:
    """The operation classes of ``module`` named in ``names``; absent ones are skipped
    (the set of operations differs between Keras releases)."""
    out = []
    for name in names.split():
        cls = getattr(module, name, None)
        if isinstance(cls, type) and issubclass(cls, keras.Operation):
            out.append(cls)
    return out


def _frozen(ctx, reason: str) -> List[Optional[Layout]]:
    """Freeze every input's channels; fresh frozen sources for the outputs."""
    for layout in ctx.inputs:
        ctx.freeze(layout, reason)
    return ctx.opaque_outputs(reason)


def _axes(axis, rank: int) -> List[int]:
    """``axis`` (an int or a sequence of ints) as sorted non-negative axes."""
    if isinstance(axis, (list, tuple)):
        return sorted({int(a) % rank for a in axis})
    return [int(axis) % rank]


def _is_int(value: object) -> bool:
    """Whether ``value`` is a Python or numpy integer (booleans are not)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _constant_shape(value) -> Optional[Tuple[int, ...]]:
    """The shape of a constant argument (``()`` for a number); None for a symbolic
    tensor or something that is not an array (a string, None)."""
    if isinstance(value, keras.KerasTensor) or value is None or isinstance(value, (str, bytes)):
        return None
    if isinstance(value, (bool, int, float, complex, np.generic)):
        return ()
    shape = getattr(value, "shape", None)
    if shape is None and isinstance(value, (list, tuple)):
        try:
            shape = np.shape(value)
        except ValueError:
            return None
    if shape is None:
        return None
    try:
        return tuple(int(d) for d in shape)
    except (TypeError, ValueError):
        return None


def _shape_of(value) -> Optional[Tuple[Optional[int], ...]]:
    """The shape of a symbolic tensor or of a constant argument."""
    if isinstance(value, keras.KerasTensor):
        return tuple(value.shape)
    return _constant_shape(value)


# -- element-wise ---------------------------------------------------------------------


class ElementwiseOpHandler(ElementwiseMergeHandler):
    """Element-wise operations: the channels pass, tensors whose channels meet are coupled.

    Attributes:
        constant_attributes: attributes of the operation that hold operands (``clip``'s
            bounds); like constant arguments they may not vary along the channels.
    """

    constant_attributes: Tuple[str, ...] = ()

    def where(self, ctx) -> str:
        """Reasons name the operation and its ``keras.ops`` function."""
        return ctx.describe()

    def analyze(self, ctx):
        node = ctx.node
        if len(ctx.output_shapes) != 1:
            return _frozen(ctx, f"{ctx.describe()} returns outputs kerasprune cannot match")
        out_shape = ctx.output_shapes[0]
        for layout, in_shape in zip(ctx.inputs, ctx.input_shapes):
            if layout is None or in_shape[layout.axis] == 1:
                continue
            rel = layout.axis - len(in_shape)
            if len(out_shape) < -rel or out_shape[rel] != in_shape[layout.axis]:
                return _frozen(ctx, f"{ctx.describe()} does not keep the channel axis")
        values = list(node.arguments.args) + list(node.arguments.kwargs.values())
        values += [getattr(ctx.layer, a, None) for a in self.constant_attributes]
        for value in values:
            shape = _constant_shape(value)
            if not shape:
                continue
            for layout, in_shape in zip(ctx.inputs, ctx.input_shapes):
                if layout is None:
                    continue
                rel = layout.axis - len(in_shape)  # the channel axis counted from the end
                if len(shape) >= -rel and shape[rel] != 1:
                    ctx.freeze(
                        layout,
                        f"{ctx.describe()} combines these channels with a constant of shape "
                        f"{shape} that varies along them, which kerasprune cannot slice",
                    )
        return super().analyze(ctx)


_UNARY = (
    _classes(
        _numpy,
        "Absolute Abs Fabs Angle Arccos Arccosh Arcsin Arcsinh Arctan Arctanh BitwiseInvert "
        "BitwiseNot Cbrt Ceil Conjugate Conj Copy Cos Cosh Deg2rad Rad2deg Exp Exp2 Expm1 "
        "Floor I0 Imag Isfinite Isinf Isnan Isneginf Isposinf Log Log10 Log1p Log2 "
        "LogicalNot NanToNum Negative Real Reciprocal Round Sign Signbit Sin Sinc Sinh "
        "Sqrt Square Tan Tanh Trunc",
    )
    + _classes(
        _nn,
        "Relu Relu6 Sigmoid SparseSigmoid Softplus Softsign SoftShrink SparsePlus Silu "
        "Squareplus LogSigmoid LeakyRelu HardSigmoid HardSilu Elu Selu Gelu Celu TanhShrink "
        "HardTanh HardShrink Threshold",
    )
    + _classes(_core, "Cast SaturateCast StopGradient ConvertToTensor")
    + _classes(_math, "Rsqrt Erf Erfc Erfinv")
)
_BINARY = _classes(
    _numpy,
    "Add Subtract Multiply Divide DivideNoNan TrueDivide FloorDivide Mod Fmod Power "
    "Maximum Minimum Fmax Fmin Arctan2 Hypot Logaddexp Logaddexp2 Heaviside Nextafter "
    "Ldexp Gcd Lcm Equal NotEqual Greater GreaterEqual Less LessEqual LogicalAnd "
    "LogicalOr LogicalXor BitwiseAnd BitwiseOr BitwiseXor BitwiseLeftShift LeftShift "
    "BitwiseRightShift RightShift Where",
)
register_handler(*_UNARY, *_BINARY)(ElementwiseOpHandler)


@register_handler(*_classes(_numpy, "Clip"))
class ClipOpHandler(ElementwiseOpHandler):
    """``clip(x, x_min, x_max)``: the bounds are attributes of the operation."""

    constant_attributes = ("x_min", "x_max")


# -- acting along one axis --------------------------------------------------------------


@register_handler(
    *_classes(_nn, "Softmax LogSoftmax Sparsemax Normalize"),
    *_classes(_numpy, "Cumsum Cumprod Nancumsum Nancumprod Sort Argsort Flip Roll"),
)
class AlongAxisOpHandler(LayerHandler):
    """Operations along ``axis`` (a softmax, a cumulative sum, a sort): each position of
    the other axes is treated alone, so channels on another axis pass; along the channel
    axis (or every axis: ``axis=None``) they mix or reorder the channels: frozen."""

    def analyze(self, ctx):
        inp = ctx.inputs[0] if ctx.inputs else None
        n_out = len(ctx.output_shapes)
        if inp is None:
            return [None] * n_out
        rank = len(ctx.input_shapes[0])
        axis = getattr(ctx.layer, "axis", None)
        if axis is None:
            return _frozen(ctx, f"{ctx.describe()} acts along every axis, the channels' too")
        if inp.axis in _axes(axis, rank):
            return _frozen(ctx, f"{ctx.describe()} acts along the channel axis {inp.axis}")
        if any(len(s) != rank for s in ctx.output_shapes):
            return _frozen(ctx, f"{ctx.describe()} changes the rank of its input")
        return [inp] * n_out


@register_handler(
    *_classes(
        _numpy,
        "Mean Sum Max Min Amax Amin Prod Std Var Median Any All Ptp Argmax Argmin "
        "Nanargmax Nanargmin Nanmax Nanmean Nanmedian Nanmin Nanprod Nanstd Nansum Nanvar",
    ),
    *_classes(_math, "Logsumexp"),
)
class ReductionOpHandler(LayerHandler):
    """Reductions over ``axis`` (``keepdims`` either way): the channels pass when they
    run along another axis, and move down by the reduced axes before them."""

    def analyze(self, ctx):
        inp = ctx.inputs[0] if ctx.inputs else None
        if inp is None:
            return [None] * len(ctx.output_shapes)
        rank = len(ctx.input_shapes[0])
        axis = getattr(ctx.layer, "axis", None)
        if axis is None:
            return _frozen(ctx, f"{ctx.describe()} reduces every axis, the channels' too")
        axes = _axes(axis, rank)
        if inp.axis in axes:
            return _frozen(ctx, f"{ctx.describe()} reduces the channel axis {inp.axis}")
        if getattr(ctx.layer, "keepdims", False):
            return [inp]
        return [inp.moved(inp.axis - sum(1 for a in axes if a < inp.axis))]


# -- moving axes ----------------------------------------------------------------------


def _permutation(op, rank: int) -> Optional[List[int]]:
    """Input axis at each output axis of a transpose, moveaxis or swapaxes."""
    if isinstance(op, _numpy.Transpose):
        if op.axes is None:
            return list(reversed(range(rank)))
        return [int(a) % rank for a in op.axes]
    if isinstance(op, _numpy.Swapaxes):
        perm = list(range(rank))
        a, b = int(op.axis1) % rank, int(op.axis2) % rank
        perm[a], perm[b] = perm[b], perm[a]
        return perm
    if isinstance(op, _numpy.Moveaxis):
        src = [int(s) % rank for s in op.source]
        dst = [int(d) % rank for d in op.destination]
        order = [n for n in range(rank) if n not in src]
        for d, s in sorted(zip(dst, src)):
            order.insert(d, s)
        return order
    return None


@register_handler(*_classes(_numpy, "Transpose Moveaxis Swapaxes"))
class TransposeOpHandler(LayerHandler):
    """Permutations of the axes: the channels move with their axis."""

    def analyze(self, ctx):
        inp = ctx.inputs[0] if ctx.inputs else None
        if inp is None:
            return [None]
        perm = _permutation(ctx.layer, len(ctx.input_shapes[0]))
        if perm is None or sorted(perm) != list(range(len(perm))):
            reason = f"{ctx.describe()} permutes the axes in a way kerasprune cannot read"
            return _frozen(ctx, reason)
        return [inp.moved(perm.index(inp.axis))]


@register_handler(*_classes(_numpy, "ExpandDims"))
class ExpandDimsOpHandler(LayerHandler):
    """New axes of size 1: the channel axis moves up by those inserted before it."""

    def analyze(self, ctx):
        inp = ctx.inputs[0] if ctx.inputs else None
        if inp is None:
            return [None]
        out_rank = len(ctx.output_shapes[0])
        inserted = _axes(ctx.layer.axis, out_rank)
        kept = [i for i in range(out_rank) if i not in inserted]
        return [inp.moved(kept[inp.axis])]


@register_handler(*_classes(_numpy, "Squeeze"))
class SqueezeOpHandler(LayerHandler):
    """Axes of size 1 removed: the channel axis moves down by those removed before it."""

    def analyze(self, ctx):
        inp = ctx.inputs[0] if ctx.inputs else None
        if inp is None:
            return [None]
        in_shape = ctx.input_shapes[0]
        axis = ctx.layer.axis
        if axis is None:
            removed = [i for i, d in enumerate(in_shape) if d == 1]
        else:
            removed = _axes(axis, len(in_shape))
        if inp.axis in removed:
            return _frozen(ctx, f"{ctx.describe()} removes the channel axis")
        return [inp.moved(inp.axis - sum(1 for a in removed if a < inp.axis))]


@register_handler(*_classes(_numpy, "Reshape"))
class ReshapeOpHandler(LayerHandler):
    """``keras.ops.reshape``: the channel axis may keep its own axis or merge with axes
    around it (``(B, H, W, C) -> (B, H*W, C)``, a flatten ``-> (B, H*W*C)``), not split.

    The reshape is row-major: channel ``c`` of an axis followed by ``S`` elements sits at
    flat positions ``f`` with ``(f // S) % C == c``. It lands on output axis ``b``
    (followed by ``S'`` elements) when ``S'`` divides ``S`` and ``S * C`` divides
    ``S' * out[b]``; position ``p`` of that axis then carries channel
    ``(p // (S / S')) % C``. The output layout is the slot ``"shape"``, whose kept width
    replaces ``newshape[b]`` in the config (unless it is ``-1``).
    """

    def analyze(self, ctx):
        inp = ctx.inputs[0] if ctx.inputs else None
        if inp is None:
            return [None]
        in_shape, out_shape = ctx.input_shapes[0], ctx.output_shapes[0]
        width = len(inp)
        after = in_shape[inp.axis + 1:]
        if None not in after:
            s_in = prod(after)
            s_out = 1  # elements after output axis b
            for b in range(len(out_shape) - 1, -1, -1):
                d = out_shape[b]
                if d is None or s_out > s_in:
                    break
                if s_in % s_out == 0 and (s_out * d) % (s_in * width) == 0:
                    inner = s_in // s_out
                    outer = d // (width * inner)
                    if inner == 1 and outer == 1:
                        out = inp.moved(b)
                    else:
                        out = inp.spread((outer, width, inner), 1, b)
                    ctx.bind("shape", out)
                    return [out]
                s_out *= d
        return _frozen(
            ctx,
            f"{ctx.describe()} to {tuple(out_shape[1:])} splits or scatters the channel axis",
        )

    def edit_config(self, layer, config, masks):
        mask = masks.get("shape")
        if mask is None:
            return
        axis = masks.axes["shape"]
        shape = list(config["newshape"])
        if int(shape[axis]) != -1:
            shape[axis] = int(mask.sum())
        config["newshape"] = shape


# -- joining and splitting ---------------------------------------------------------------


def _all_symbolic(values: object) -> bool:
    """Whether ``values`` is a list or tuple of symbolic tensors only."""
    return isinstance(values, (list, tuple)) and all(
        isinstance(v, keras.KerasTensor) for v in values
    )


@register_handler(*_classes(_numpy, "Concatenate"))
class ConcatenateOpHandler(ConcatenateHandler):
    """``keras.ops.concatenate``: like the ``Concatenate`` layer (the channel axis lays
    the inputs end to end, another axis couples them); constants among the inputs
    freeze the channels."""

    def analyze(self, ctx):
        xs = call_arg(ctx.node, 0, "xs")
        if ctx.layer.axis is None:
            return _frozen(ctx, f"{ctx.describe()} flattens its inputs")
        if not _all_symbolic(xs) or len(xs) != len(ctx.inputs):
            return _frozen(ctx, f"{ctx.describe()} joins these channels with constants")
        return super().analyze(ctx)


@register_handler(*_classes(_numpy, "Stack"))
class StackOpHandler(LayerHandler):
    """``keras.ops.stack``: the inputs meet position by position along a new axis, so
    their channels are coupled; the channel axis moves up when the new axis is before it."""

    def analyze(self, ctx):
        xs = call_arg(ctx.node, 0, "x")
        known = [l for l in ctx.inputs if l is not None]
        if not known:
            return [None]
        if (
            not _all_symbolic(xs)
            or len(known) != len(xs)
            or any(l.axis != known[0].axis for l in known)
        ):
            return _frozen(
                ctx, f"{ctx.describe()} stacks these channels with untracked or moved ones"
            )
        new = int(ctx.layer.axis) % len(ctx.output_shapes[0])
        ctx.unify(known, ctx.describe())
        axis = known[0].axis
        return [known[0].moved(axis + 1 if new <= axis else axis)]


@register_handler(*_classes(_numpy, "Split ArraySplit"))
class SplitOpHandler(LayerHandler):
    """``split`` and ``array_split``. Along another axis than the channels' every piece
    keeps all channels. Along the channel axis each piece holds its slice of the input's
    channels:

    * into ``N`` equal sections (an integer; CSPNet's ``ops.split(x, 2, axis=-1)``), the
      input's group is kept in ``N`` equal blocks, so the sections stay equal and ``N``
      does not change; an input that is not one whole group in order, or that
      ``array_split`` cuts into unequal sections, is frozen;
    * at given indices, the indices (slot ``"indices"``) follow the kept channels before
      them.
    """

    def analyze(self, ctx: NodeContext) -> List[Optional[Layout]]:
        """The pieces' layouts: the whole input, or each its slice of the channels."""
        inp = ctx.inputs[0] if ctx.inputs else None
        n_out = len(ctx.output_shapes)
        if inp is None:
            return [None] * n_out
        if int(ctx.layer.axis) % len(ctx.input_shapes[0]) != inp.axis:
            return [inp] * n_out
        sections = ctx.layer.indices_or_sections
        size = len(inp)
        if _is_int(sections):
            if size % int(sections):
                return _frozen(
                    ctx, f"{ctx.describe()} splits the channel axis into unequal sections"
                )
            ctx.require_blocks(inp, int(sections))
            bounds = [size // int(sections) * k for k in range(int(sections) + 1)]
        else:
            cuts = [min(max(int(i) + (size if int(i) < 0 else 0), 0), size) for i in sections]
            if cuts != sorted(cuts):
                return _frozen(ctx, f"{ctx.describe()} splits the channel axis out of order")
            ctx.bind("indices", inp)
            bounds = [0] + cuts + [size]
        outs = [Layout(inp.src[a:b], inp.idx[a:b], inp.axis) for a, b in zip(bounds, bounds[1:])]
        return [layout if len(layout) else None for layout in outs]

    def edit_config(self, layer: keras.Operation, config: dict, masks: SlotMasks) -> None:
        """Split indices count the kept channels before them."""
        mask = masks.get("indices")
        if mask is None:
            return
        size = len(mask)
        cuts = [int(i) + (size if int(i) < 0 else 0) for i in config["indices_or_sections"]]
        config["indices_or_sections"] = [int(mask[: min(max(c, 0), size)].sum()) for c in cuts]


@register_handler(*_classes(_core, "Unstack"))
class UnstackOpHandler(LayerHandler):
    """Unstack along another axis than the channels': that axis goes, the channels stay."""

    def analyze(self, ctx):
        inp = ctx.inputs[0] if ctx.inputs else None
        n_out = len(ctx.output_shapes)
        if inp is None:
            return [None] * n_out
        axis = int(ctx.layer.axis) % len(ctx.input_shapes[0])
        if axis == inp.axis:
            return _frozen(ctx, f"{ctx.describe()} unstacks the channel axis")
        return [inp.moved(inp.axis - (1 if axis < inp.axis else 0))] * n_out


def _keeps_all(item, size: Optional[int]) -> bool:
    """Whether slice ``item`` keeps every position of an axis of ``size``."""
    if not isinstance(item, slice):
        return False
    start, stop, step = item.start, item.stop, item.step
    if step is not None and not (_is_int(step) and step == 1):
        return False
    if start is not None and not (_is_int(start) and (start == 0 or (size and start <= -size))):
        return False
    if stop is None:
        return True
    return _is_int(stop) and size is not None and stop >= size


def _index_of(ctx, value: object) -> Optional[int]:
    """Position of ``value`` among the call's input tensors (None for a constant)."""
    return input_index(ctx, value) if isinstance(value, keras.KerasTensor) else None


@register_handler(*_classes(_numpy, "GetItem"))
class GetItemOpHandler(LayerHandler):
    """``x[...]`` with integers, slices, ``None`` and ``...``: the channels pass when the
    channel axis is kept whole (``x[:, 0]``, BERT's ``x[:, 0, :]`` CLS pooling); an index
    or a partial slice of the channel axis, and indexing with arrays, freeze them."""

    def analyze(self, ctx):
        i = _index_of(ctx, call_arg(ctx.node, 0, "x"))
        key = call_arg(ctx.node, 1, "key")
        for j, layout in enumerate(ctx.inputs):
            if j != i:
                ctx.freeze(layout, f"used as an index by {ctx.describe()}")
        inp = ctx.inputs[i] if i is not None else None
        if inp is None:
            return [None]
        in_shape = ctx.input_shapes[i]
        rank = len(in_shape)
        items = list(key) if isinstance(key, tuple) else [key]
        basic = all(
            it is None or it is Ellipsis or isinstance(it, slice) or _is_int(it) for it in items
        )
        if not basic or sum(1 for it in items if it is Ellipsis) > 1:
            return _frozen(ctx, f"{ctx.describe()} indexes with arrays or tensors")
        real = sum(1 for it in items if it is not None and it is not Ellipsis)
        if real > rank:
            return _frozen(ctx, f"{ctx.describe()} has more indices than axes")
        expanded: list = []
        for it in items:
            expanded.extend([slice(None)] * (rank - real) if it is Ellipsis else [it])
        expanded += [slice(None)] * (rank - sum(1 for it in expanded if it is not None))
        in_axis = out_axis = 0
        for it in expanded:
            if it is None:
                out_axis += 1
                continue
            if in_axis == inp.axis:
                if _keeps_all(it, in_shape[in_axis]):
                    return [inp.moved(out_axis)]
                return _frozen(ctx, f"{ctx.describe()} indexes or slices the channel axis")
            if isinstance(it, slice):
                out_axis += 1
            in_axis += 1
        return _frozen(ctx, f"{ctx.describe()} is an index kerasprune cannot read")


@register_handler(*_classes(_core, "Slice"))
class SliceOpHandler(LayerHandler):
    """``keras.ops.slice(x, start, shape)`` that keeps the whole channel axis (start 0,
    shape the full width or -1); the width in ``shape`` (slot ``"shape"``) follows the
    kept channels."""

    def analyze(self, ctx):
        i = _index_of(ctx, call_arg(ctx.node, 0, "inputs"))
        for j, layout in enumerate(ctx.inputs):
            if j != i:
                ctx.freeze(layout, f"used as an index by {ctx.describe()}")
        inp = ctx.inputs[i] if i is not None else None
        if inp is None:
            return [None]
        start = call_arg(ctx.node, 1, "start_indices")
        shape = list(ctx.layer.shape)
        a = inp.axis
        starts = _constant_shape(start) is not None and np.ndim(start) == 1
        if starts and int(np.asarray(start)[a]) == 0 and int(shape[a]) in (-1, len(inp)):
            return [ctx.bind("shape", inp)]
        return _frozen(ctx, f"{ctx.describe()} slices the channel axis")

    def edit_config(self, layer, config, masks):
        mask = masks.get("shape")
        if mask is None:
            return
        shape = list(config["shape"])
        axis = masks.axes["shape"]
        if int(shape[axis]) != -1:
            shape[axis] = int(mask.sum())
        config["shape"] = shape


@register_handler(*_classes(_numpy, "Pad"))
class PadOpHandler(LayerHandler):
    """``keras.ops.pad`` of other axes than the channels': the channels pass."""

    def analyze(self, ctx):
        i = _index_of(ctx, call_arg(ctx.node, 0, "x"))
        for j, layout in enumerate(ctx.inputs):
            if j != i:
                ctx.freeze(layout, f"used as the padding value of {ctx.describe()}")
        inp = ctx.inputs[i] if i is not None else None
        if inp is None:
            return [None]
        widths = [tuple(int(w) for w in pair) for pair in ctx.layer.pad_width]
        if len(widths) not in (1, len(ctx.input_shapes[i])):
            return _frozen(ctx, f"{ctx.describe()} pads in a way kerasprune cannot read")
        pair = widths[0] if len(widths) == 1 else widths[inp.axis]
        if any(pair):
            return _frozen(ctx, f"{ctx.describe()} pads the channel axis")
        return [inp]


# -- contractions -----------------------------------------------------------------------


def _einsum_labels(
    subscripts: str, shapes: Sequence[Sequence[Optional[int]]]
) -> Optional[Tuple[List[List[str]], List[str]]]:
    """Per operand and for the output, the label of each axis (``...`` expanded into
    labels aligned from the right, as broadcasting does); None if it does not parse."""
    subscripts = subscripts.replace(" ", "")
    lhs, arrow, rhs = subscripts.partition("->")
    specs = lhs.split(",")
    if len(specs) != len(shapes):
        return None
    letters = [s.replace("...", "") for s in specs]
    n_ell = [len(shape) - len(l) for shape, l in zip(shapes, letters)]
    if any(n < 0 or (n and "..." not in s) for n, s in zip(n_ell, specs)):
        return None
    width = max(n_ell + [0])
    ell = [f"...{k}" for k in range(width)]

    def expand(spec: str, n: int) -> List[str]:
        """The labels of one spec, its ``...`` standing for the last ``n`` broadcast axes."""
        head, dots, tail = spec.partition("...")
        return list(head) + (ell[width - n:] if dots else []) + list(tail)

    operands = [expand(s, n) for s, n in zip(specs, n_ell)]
    if arrow:
        out = expand(rhs, width)
    else:  # numpy's implicit output: the broadcast axes, then the letters seen once
        flat = "".join(letters)
        out = ell + sorted(c for c in set(flat) if flat.count(c) == 1)
    return operands, out


def _contraction(
    op, node
) -> Optional[Tuple[List[Tuple[object, Tuple[Optional[int], ...], List[str]]], List[str]]]:
    """``([(operand, shape, labels)], output labels)`` of a matmul or einsum call."""
    args = list(node.arguments.args)
    shapes = [_shape_of(a) for a in args]
    if any(s is None for s in shapes):
        return None
    if isinstance(op, _numpy.Matmul):
        if len(args) != 2 or min(len(s) for s in shapes) < 2:
            return None
        nb = max(len(s) for s in shapes) - 2
        batch = [f"batch{k}" for k in range(nb)]
        b1, b2 = batch[nb - (len(shapes[0]) - 2):], batch[nb - (len(shapes[1]) - 2):]
        labels = [b1 + ["rows", "inner"], b2 + ["inner", "cols"]]
        out = batch + ["rows", "cols"]
    else:
        parsed = _einsum_labels(str(op.subscripts), shapes)
        if parsed is None:
            return None
        labels, out = parsed
    return list(zip(args, shapes, labels)), out


@register_handler(*_classes(_numpy, "Matmul Einsum"))
class ContractionOpHandler(LayerHandler):
    """``matmul`` and ``einsum``: every axis is labelled (matmul: ``batch.., rows,
    inner`` times ``batch.., inner, cols``), and the channels follow their label.

    * a label in the output carries the channels there; the operands that carry
      channels on it are coupled (a broadcast batch axis, say), and an operand with the
      label but without tracked channels on it (and more than one position) freezes them;
    * a contracted label couples the operands that carry channels on it: removing
      channel ``c`` from all of them removes term ``c`` of the sum, which is what
      removing a Dense layer's input does. A contraction with an untracked or constant
      operand, or of one operand alone (a sum over the channels), is frozen;
    * channels carried to two output axes at once are frozen; an output that carries
      none (attention scores ``q @ k^T``) is untracked.

    The labels holding channels are bound as slots (named by the label) so that costs
    see the operation's multiply-adds shrink with them.
    """

    def analyze(self, ctx):
        spec = _contraction(ctx.layer, ctx.node)
        what = ctx.describe()
        if spec is None:
            return _frozen(ctx, f"{what} is called in a way kerasprune cannot read")
        operands, out_labels = spec
        carriers: Dict[str, List[Layout]] = {}
        for value, shape, labels in operands:
            i = _index_of(ctx, value)
            layout = ctx.inputs[i] if i is not None else None
            if layout is None:
                continue
            label = labels[layout.axis]
            if labels.count(label) > 1:
                ctx.freeze(layout, f"{what} takes a diagonal of the channel axis")
                continue
            carriers.setdefault(label, []).append(layout)
        carried: List[Tuple[str, Layout]] = []
        for label, layouts in carriers.items():
            if self._meets_untracked(ctx, operands, label):
                for layout in layouts:
                    ctx.freeze(
                        layout, f"{what} meets these channels with untracked values on one axis"
                    )
                continue
            if label not in out_labels and len(layouts) < 2:
                ctx.freeze(layouts[0], f"{what} sums over the channels")
                continue
            ctx.unify(layouts, what)
            ctx.bind(label, layouts[0])
            if label in out_labels:
                carried.append((label, layouts[0]))
        if len(carried) > 1:
            reason = f"{what} carries channels to two axes of its output"
            for _, layout in carried:
                ctx.freeze(layout, reason)
            return ctx.opaque_outputs(reason)
        if carried:
            label, layout = carried[0]
            return [layout.moved(out_labels.index(label))]
        return [None]  # no channels reach the output (attention scores ``q @ k^T``)

    @staticmethod
    def _meets_untracked(ctx, operands, label: str) -> bool:
        """Whether an operand has ``label`` (on more than one position) without tracked
        channels along it: a constant, an untracked tensor, or channels on another axis."""
        for value, shape, labels in operands:
            if label not in labels:
                continue
            axis = labels.index(label)
            i = _index_of(ctx, value)
            layout = ctx.inputs[i] if i is not None else None
            if (layout is None or layout.axis != axis) and shape[axis] != 1:
                return True
        return False

    def macs(self, layer, node):
        spec = _contraction(layer, node)
        if spec is None:
            return 0
        operands, _ = spec
        sizes: Dict[str, int] = {}
        for value, shape, labels in operands:
            for axis, (label, d) in enumerate(zip(labels, shape)):
                if isinstance(value, keras.KerasTensor) and axis == 0 and len(shape) > 1:
                    continue  # the batch axis of a symbolic operand
                sizes[label] = max(sizes.get(label, 1), 1 if d is None else int(d))
        return prod(sizes.values())


# -- pooling ----------------------------------------------------------------------------


@register_handler(
    *_classes(_nn, "MaxPool AveragePool AdaptiveMaxPool AdaptiveAveragePool"),
    *_classes(_image, "Resize"),
)
class PoolingOpHandler(LayerHandler):
    """Pooling and resizing operations act on the spatial axes of their
    ``data_format``: the channels pass when they run along its channel axis."""

    def analyze(self, ctx):
        inp = ctx.inputs[0] if ctx.inputs else None
        if inp is None:
            return [None]
        rank = len(ctx.input_shapes[0])
        fmt = getattr(ctx.layer, "data_format", None) or keras.config.image_data_format()
        channel = 1 if fmt == "channels_first" else rank - 1
        if inp.axis != channel or len(ctx.output_shapes[0]) != rank:
            return _frozen(ctx, f"{ctx.describe()} pools along the axis the channels run on")
        return [inp]
