"""What each channel carries, decided from the producer side, and folding constants.

A channel *carries a constant* to a layer when, for every input of the model, it holds
the same value at every batch element and every spatial position of the tensor that
layer reads: a filter whose kernel is zero sends its bias; BatchNormalization with
``gamma`` 0 sends ``beta``; an activation maps a constant to a constant (``relu(0) = 0``,
``sigmoid(0) = 0.5``); a product with a channel that is 0 is 0 (a squeeze-and-excitation
gate). :func:`tensor_constants` finds these values by evaluating each call of the
functional graph, in inference mode, on inputs that hold the known constants and, in
every other channel, four different fillings (0, +1e4, -1e4 and noise that varies over
the positions): an output position is constant when it has one value over the positions
of each filling and the same value under all four. So each layer's own computation
decides (padding, strides, pooling, merges, nested models), with no rule per layer; a
channel that only some inputs drive to a constant (a ReLU unit that is negative on the
data) is not constant.

A removed channel that carried a constant ``c`` is folded into each next layer's bias by
its handler (:meth:`kerasprune.LayerHandler.fold_inputs`): ``b += c * W[j, :]`` for
Dense, ``b += c * sum(K[..., j, :])`` over the window for a convolution, exact where no
zero padding reaches the window (``padding="valid"`` or a 1x1 kernel). At the borders of
a padded convolution the window covers padding zeros instead of ``c``, so the fold is not
exact there and such channels are kept. Wang et al. (2017) fold a removed neuron's mean
activation the same way (``b += mean * w``) in the notebooks that accompany the paper.

References:

- Wang et al. (2017), gradually global pruning (GGP): Zhengtao Wang, Ce Zhu, Zhiqiang Xia,
  Qi Guo and Yipeng Liu, "Towards Thinner Convolutional Neural Networks Through Gradually
  Global Pruning", IEEE International Conference on Image Processing (ICIP), 2017;
  arXiv:1703.09916.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

import keras
import numpy as np

from kerasprune.errors import OptionError, RebuildError
from kerasprune.graph.composite import iter_layers
from kerasprune.graph.groups import ChannelGroup, PruningGraph
from kerasprune.graph.keras_graph import functional_of, iter_nodes
from kerasprune.surgery.rebuild import rebuild

__all__ = [
    "tensor_constants", "Carried", "carried_channels", "slot_inputs", "fold_values", "rebuild_folded",
    "COMPENSATIONS", "check_compensate", "mean_inputs", "rebuild_compensated",
]

SlotKey = Tuple[str, str]

_FILLS = (0.0, 1e4, -1e4)  # and a fourth filling: noise over the positions
_LIMIT = 1e3  # constants beyond this are not trusted to differ from the fillings
_SIZES = (5, 8)  # lengths tried for dimensions the graph leaves unknown


def _filled(state: np.ndarray, shape: Tuple[int, ...], rng: np.random.Generator, dtype: str) -> np.ndarray:
    """A batch of ``len(_FILLS) + 1`` inputs of ``shape`` (batch left out): position ``j``
    of the last axis holds ``state[j]`` where it is known, else the fillings."""
    n = len(_FILLS) + 1
    out = np.empty((n,) + shape, dtype=np.float64)
    for k, fill in enumerate(_FILLS):
        out[k] = fill
    out[-1] = rng.normal(size=shape) * 3.0
    known = ~np.isnan(state)
    out[..., known] = state[known]
    return out.astype(dtype)


def _constant_of(values: np.ndarray) -> Optional[np.ndarray]:
    """Per position of the last axis, the value ``values`` (a batch of the fillings) holds
    everywhere, NaN where it varies; None when the tensor has no last axis to speak of."""
    if values.ndim < 2:
        return None
    v = values.astype(np.float64).reshape(values.shape[0], -1, values.shape[-1])
    ref = v[0, 0]
    scale = 1e-6 * np.maximum(1.0, np.abs(ref))
    same = np.all(np.abs(v - ref) <= scale, axis=(0, 1)) & np.isfinite(ref) & (np.abs(ref) <= _LIMIT)
    return np.where(same, v[0].mean(axis=0), np.nan)


def _evaluate(node: Any, states: Dict[int, np.ndarray], size: int, rng) -> List[Optional[np.ndarray]]:
    """The constants of ``node``'s outputs, its unknown dimensions ``size`` long."""
    values = {}
    for kt in node.input_tensors:
        dtype = keras.backend.standardize_dtype(kt.dtype)
        shape = tuple(size if d is None else int(d) for d in kt.shape[1:])
        state = states.get(id(kt))
        if state is None or not shape or "float" not in dtype or len(state) != shape[-1]:
            return [None] * len(node.outputs)
        values[id(kt)] = _filled(state, shape, rng, dtype)
    args, kwargs = node.arguments.fill_in(values)
    if isinstance(node.operation, keras.layers.Layer):
        kwargs = dict(kwargs, training=False)
    try:
        outs = keras.tree.flatten(node.operation(*args, **kwargs))
    except Exception:  # a layer that does not take these values: nothing known
        return [None] * len(node.outputs)
    if len(outs) != len(node.outputs):
        return [None] * len(node.outputs)
    return [_constant_of(np.asarray(keras.ops.convert_to_numpy(o))) for o in outs]


def tensor_constants(model: keras.Model, seed: int = 0) -> Dict[int, np.ndarray]:
    """Per top-level tensor of ``model``'s graph, the constant each position of its last
    axis carries for every input of the model (NaN where it varies).

    Args:
        model: a functional or Sequential model.
        seed: seed of the noise filling.

    Returns:
        ``id(KerasTensor) -> float64 array`` of the tensor's last-axis length, for the
        tensors of at least rank 2 whose values could be evaluated.
    """
    fn = functional_of(model)
    rng = np.random.default_rng(seed)
    states: Dict[int, np.ndarray] = {}
    for kt in fn.inputs:
        if len(kt.shape) >= 2 and kt.shape[-1] is not None:
            states[id(kt)] = np.full(int(kt.shape[-1]), np.nan)
    for node in iter_nodes(fn):
        unknown = any(d is None for kt in node.input_tensors for d in kt.shape[1:])
        found = _evaluate(node, states, _SIZES[0], rng)
        if unknown:  # the same constants at another length, or none
            again = _evaluate(node, states, _SIZES[1], rng)
            found = [
                a if a is not None and b is not None and a.shape == b.shape and np.array_equal(a, b, equal_nan=True)
                else None
                for a, b in zip(found, again)
            ]
        for kt, state in zip(node.outputs, found):
            if state is not None:
                states[id(kt)] = state
    return states


@dataclass
class Carried:
    """What the channels of the prunable groups carry to the layers that read them.

    Attributes:
        dead: group name -> the channels that carry exactly zero (``|v| <= tol``) to every
            layer that reads them, or whose every reading weight is zero.
        constant: group name -> the channels that carry a constant to every layer reading
            them, each of which can fold it into its bias exactly (the dead ones included).
        values: ``(layer path, slot)`` of a reading layer -> per position of the slot,
            the constant it reads there (NaN where unknown or varying).
    """

    dead: Dict[str, np.ndarray] = field(default_factory=dict)
    constant: Dict[str, np.ndarray] = field(default_factory=dict)
    values: Dict[SlotKey, np.ndarray] = field(default_factory=dict)


def _nodes_of(model: keras.Model) -> Dict[int, List[Any]]:
    """id(layer) -> the nodes of ``model``'s top-level graph that call it."""
    out: Dict[int, List[Any]] = {}
    for node in iter_nodes(functional_of(model)):
        out.setdefault(id(node.operation), []).append(node)
    return out


def slot_inputs(graph: PruningGraph, nodes: Mapping[int, List[Any]], layer: str, slot: str) -> Optional[List[Any]]:
    """The input tensors whose last axis is ``layer``'s ``slot`` position for position
    (one per call of a top-level layer that takes one input), or None where that is not
    so (several inputs, channels on another axis, a layer inside a nested model)."""
    rec = graph.record(layer)
    layout = rec.slots[slot]
    calls = nodes.get(id(rec.layer)) if "/" not in layer else None
    if not calls:
        return None
    out = []
    for node in calls:
        if len(node.input_tensors) != 1:
            return None
        kt = node.input_tensors[0]
        if layout.axis != len(kt.shape) - 1 or kt.shape[-1] != len(layout):
            return None
        out.append(kt)
    return out


def _readers(graph: PruningGraph, group: ChannelGroup):
    """The ``(layer path, slot)`` of the members of ``group`` that read its channels with
    their weights and do not hand them on (the producers and per-channel layers left out)."""
    seen = []
    for m in group.members:
        key = (m.layer, m.slot)
        if m.produced or key in seen:
            continue
        rec = graph.record(m.layer)
        if rec.handler.passes(rec.layer, m.slot):
            continue
        seen.append(key)
    return seen


def _zero_weights(model_layers, graph: PruningGraph, group: ChannelGroup, key: SlotKey, tol: float) -> np.ndarray:
    """Per channel of ``group``: every weight entry by which ``key`` reads it is zero."""
    alive = np.zeros(group.size, dtype=bool)
    for e in graph.entries(group):
        if (e.layer, e.slot) != key:
            continue
        w = np.asarray(keras.ops.convert_to_numpy(model_layers[e.layer].weights[e.weight]))
        big = np.abs(w.astype(np.float64)) > tol
        alive |= e.reduce_axis(big.astype(np.float64), group.size) > 0
    return ~alive


def carried_channels(model: keras.Model, graph: PruningGraph, tol: float = 0.0) -> Carried:
    """Which channels of each prunable, exact group carry zero or a foldable constant.

    Args:
        model: the analyzed model.
        graph: ``analyze(model)``.
        tol: values and weights with ``|v| <= tol`` count as zero.

    Returns:
        The :class:`Carried` channels.
    """
    states = tensor_constants(model)
    nodes = _nodes_of(model)
    layers = dict(iter_layers(model))
    out = Carried()
    for group in graph.prunable:
        if not group.exact:
            continue
        readers = _readers(graph, group)
        if not readers:
            continue
        dead = np.ones(group.size, dtype=bool)
        const = np.ones(group.size, dtype=bool)
        for key in readers:
            chan = graph.slot_channels(key[0], key[1], group)
            held = chan >= 0
            zero_w = _zero_weights(layers, graph, group, key, tol)
            tensors = slot_inputs(graph, nodes, *key)
            vals = None
            if tensors is not None:
                found = [states.get(id(kt)) for kt in tensors]
                if all(f is not None for f in found):
                    vals = found[0].copy()
                    for f in found[1:]:
                        vals[f != vals] = np.nan  # a shared layer: the calls must agree
            if vals is None:
                dead &= zero_w
                const &= zero_w
                continue
            out.values[key] = vals
            known = np.ones(group.size, dtype=bool)
            zero = np.ones(group.size, dtype=bool)
            np.logical_and.at(known, chan[held], ~np.isnan(vals[held]))
            np.logical_and.at(zero, chan[held], np.abs(np.nan_to_num(vals[held], nan=np.inf)) <= tol)
            rec = graph.record(key[0])
            probe = np.where(held, 1.0, 0.0)
            weights = [np.asarray(w) for w in rec.layer.get_weights()]
            foldable = rec.handler.fold_inputs(rec.layer, key[1], probe, weights) is not None
            dead &= zero_w | zero
            const &= zero_w | zero | (known & foldable)
        if dead.any():
            out.dead[group.name] = np.nonzero(dead)[0]
        if const.any():
            out.constant[group.name] = np.nonzero(const)[0]
    return out


def fold_values(
    graph: PruningGraph, removed: Mapping[str, Iterable[int]], values: Mapping[SlotKey, np.ndarray]
) -> Dict[SlotKey, np.ndarray]:
    """Per reading ``(layer, slot)``, the values to fold: ``values`` at the positions of the
    removed channels, 0 elsewhere (and where a value is unknown)."""
    out: Dict[SlotKey, np.ndarray] = {}
    for name, chans in removed.items():
        group = graph[name]
        gone = np.zeros(group.size, dtype=bool)
        gone[np.asarray(list(chans), dtype=np.int64)] = True
        for key in _readers(graph, group):
            if key not in values:
                continue
            chan = graph.slot_channels(key[0], key[1], group)
            hit = (chan >= 0) & gone[np.maximum(chan, 0)]
            v = out.setdefault(key, np.zeros(len(chan)))
            v[hit] = np.nan_to_num(values[key][hit], nan=0.0)
    return {k: v for k, v in out.items() if np.any(v)}


def rebuild_folded(
    model: keras.Model,
    keep: Mapping[str, Iterable[int]],
    folds: Mapping[SlotKey, np.ndarray],
    graph: PruningGraph,
    exact: bool = True,
    **kwargs: Any,
) -> keras.Model:
    """:func:`kerasprune.rebuild` after folding ``folds`` (from :func:`fold_values`) into
    the reading layers' biases; ``model`` is left as it was.

    Args:
        model: the analyzed model.
        keep: the keep-set.
        folds: ``(layer path, slot)`` -> per slot position, the value to fold.
        graph: ``analyze(model)``.
        exact: passed to the handlers' ``fold_inputs``.
        **kwargs: passed to :func:`kerasprune.rebuild`.

    Returns:
        The thin model.

    Raises:
        RebuildError: a layer cannot fold the values it is given.
    """
    saved = {}
    try:
        for (path, slot), values in folds.items():
            rec = graph.record(path)
            weights = [np.asarray(w) for w in rec.layer.get_weights()]
            new = rec.handler.fold_inputs(rec.layer, slot, values, weights, exact=exact)
            if new is None:
                raise RebuildError(f"layer '{path}' ({type(rec.layer).__name__}) cannot fold constant inputs into its bias")
            saved.setdefault(path, weights)
            rec.layer.set_weights(new)
        return rebuild(model, keep, graph=graph, **kwargs)
    finally:
        for path, weights in saved.items():
            graph.record(path).layer.set_weights(weights)


#: the values of ``compensate`` (:func:`kerasprune.prune`, :class:`kerasprune.GradualPruner`)
COMPENSATIONS = ("none", "mean")


def check_compensate(value: Any) -> str:
    """``value`` as one of :data:`COMPENSATIONS` (None is ``"none"``).

    Raises:
        OptionError: any other value.
    """
    if value is None:
        return "none"
    if not isinstance(value, str) or value not in COMPENSATIONS:
        raise OptionError(f"compensate must be one of {', '.join(map(repr, COMPENSATIONS))} or None, got {value!r}")
    return value


def mean_inputs(
    model: keras.Model, graph: PruningGraph, keys: Iterable[SlotKey], data: Any, max_batches: Optional[int] = None
) -> Dict[SlotKey, np.ndarray]:
    """Per reading ``(layer, slot)``, the mean of what it reads, per slot position, over
    every example of ``data`` and every other position (spatial, time).

    Args:
        model: the analyzed model.
        graph: ``analyze(model)``.
        keys: the readers (those :func:`slot_inputs` cannot map are left out).
        data: batches of inputs, as for the data-driven criteria.
        max_batches: at most this many batches.

    Returns:
        ``(layer path, slot) -> float64 means`` of the slot's length.
    """
    from kerasprune.importance.stream import iter_batches

    nodes = _nodes_of(model)
    fn = functional_of(model)
    wanted: Dict[SlotKey, List[int]] = {}
    outputs, index = [], {}
    for key in keys:
        tensors = slot_inputs(graph, nodes, *key)
        if tensors is None:
            continue
        for kt in tensors:
            if id(kt) not in index:
                index[id(kt)] = len(outputs)
                rank = len(kt.shape)
                outputs.append(kt if rank == 2 else keras.ops.mean(kt, axis=tuple(range(1, rank - 1))))
            wanted.setdefault(key, []).append(index[id(kt)])
    if not outputs:
        return {}
    stats = keras.Model(fn.inputs, outputs)
    sums = [np.zeros(int(o.shape[-1])) for o in outputs]
    count = 0
    for x, _, _ in iter_batches(data, max_batches=max_batches):
        got = stats.predict_on_batch(x)
        got = got if isinstance(got, (list, tuple)) else [got]
        for s, g in zip(sums, got):
            s += np.asarray(g, dtype=np.float64).sum(axis=0)
        count += int(np.asarray(got[0]).shape[0])
    if count == 0:
        raise OptionError("compensate='mean' needs scoring data with at least one example")
    return {key: np.mean([sums[i] for i in idx], axis=0) / count for key, idx in wanted.items()}


def rebuild_compensated(
    model: keras.Model, keep: Mapping[str, Iterable[int]], graph: PruningGraph, data: Any,
    max_batches: Optional[int] = None, **kwargs: Any,
) -> keras.Model:
    """:func:`kerasprune.rebuild` that folds each removed channel's mean input (over
    ``data``) into the biases of the layers that read it (Wang et al. (2017)'s notebooks:
    ``b += mean * w``). Layers that cannot fold (without a bias, such as a convolution
    followed by BatchNormalization; grouped convolutions, attention) are left as rebuild
    leaves them; a padded convolution folds as if unpadded.

    Args:
        model: the analyzed model; not modified.
        keep: the keep-set.
        graph: ``analyze(model)``.
        data: the scoring data whose means are folded.
        max_batches: at most this many batches of ``data``.
        **kwargs: passed to :func:`kerasprune.rebuild`.

    Returns:
        The thin model.
    """
    from kerasprune.surgery.keep import keep_masks

    masks = keep_masks(graph, keep)
    removed = {name: np.nonzero(~m)[0] for name, m in masks.items()}
    keys = []
    for name in removed:
        for key in _readers(graph, graph[name]):
            rec = graph.record(key[0])
            probe = np.ones(len(rec.slots[key[1]]))
            weights = [np.asarray(w) for w in rec.layer.get_weights()]
            if key not in keys and rec.handler.fold_inputs(rec.layer, key[1], probe, weights, exact=False) is not None:
                keys.append(key)
    means = mean_inputs(model, graph, keys, data, max_batches)
    folds = fold_values(graph, removed, means)
    return rebuild_folded(model, keep, folds, graph, exact=False, **kwargs)
