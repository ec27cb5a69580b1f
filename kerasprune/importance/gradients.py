"""Criteria from gradients of the loss over labelled data (Liu and Wu (2019), Xu et al. (2018)).

The loss is the model's compiled loss, or ``loss=`` (a name such as
``"sparse_categorical_crossentropy"``, a ``keras.losses.Loss``, or a function of
``(y_true, y_pred)`` returning per-example losses; a function returning a scalar is taken
as a batch mean). A multi-output model takes a list or dict of losses (or one loss for
every output); per-output losses are summed, loss weights and regularization penalties
are not included. Sample weights given with the data multiply the per-example losses.
Everything runs in inference mode (``training=False``: BatchNormalization uses its moving
statistics, dropout is off).

- ``mean_gradient`` (Liu and Wu (2019)): per example, ``|mean over positions of dC/dx_k|`` at the
  group's feature map ``x`` (where it is observed, see
  :mod:`~kerasprune.importance.observe`), then the mean over examples. In inference mode
  examples do not interact, so the gradient of the *sum* of the per-example losses with
  respect to the batch's feature map holds every example's own gradient: one backward
  pass per batch.
- ``taylor``: first-order Taylor expansion, per example ``|mean over positions of
  x_k * dC/dx_k|``, then the mean over examples.
- ``gsfp`` (Xu et al. (2018), Eq. 5 and 6): per batch, for each producer layer with ``N`` of the
  group's filters, ``S_n = (N*G_n / sum_j G_j) * (N*W_n / sum_j W_j)`` where
  ``G_n = sum |g| / n`` over the filter's ``n`` weights (``g``: gradient of the batch's
  mean loss with respect to the kernel) and ``W_n = sqrt(sum w^2 / n)``; ``S_n`` is
  summed over the batches read (Eq. 6). A layer whose gradient (or weights) are all
  zero contributes 0 instead of NaN. Several producers: the mean of their ``S``.

References:

- Liu and Wu (2019), mean gradient and hierarchical global pruning: Congcong Liu and
  Huaming Wu, "Channel pruning based on mean gradient for accelerating Convolutional
  Neural Networks", Signal Processing 156, 84-91, 2019; doi:10.1016/j.sigpro.2018.10.019.
- Xu et al. (2018), globally soft filter pruning (GSFP): Ke Xu, Xiaoyun Wang, Qun Jia,
  Jianjing An and Dong Wang, "Globally Soft Filter Pruning For Efficient Convolutional
  Neural Networks", submitted to ICLR 2019, OpenReview id H1fevoAcKX, 2018.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List

import keras
import numpy as np
import tensorflow as tf

from kerasprune.errors import ImportanceError
from kerasprune.graph.keras_graph import functional_of, producer_name
from kerasprune.importance.base import ScoringContext, register_criterion
from kerasprune.importance.filters import ChannelWeights, combine_layers
from kerasprune.importance.observe import ObservationPlan, as_list, stream_sums

__all__ = ["mean_gradient", "taylor", "gsfp", "per_example_loss", "tf_variable", "FilterBlocks"]

LossFn = Callable[[Any, List[tf.Tensor]], tf.Tensor]


def _one_loss(spec: Any) -> Callable[[Any, tf.Tensor], tf.Tensor]:
    if isinstance(spec, str):
        spec = keras.losses.get(spec)
    if isinstance(spec, keras.losses.Loss):
        loss_obj = spec

        def call(y_true, y_pred):
            y_pred = tf.convert_to_tensor(y_pred)
            y_pred = tf.cast(y_pred, loss_obj.dtype)
            y_true = tf.cast(tf.convert_to_tensor(y_true), loss_obj.dtype)
            return loss_obj.call(y_true, y_pred)

        return call
    if callable(spec):
        return spec
    raise ImportanceError(
        f"cannot use {spec!r} as a loss: give a loss name, a keras.losses.Loss or a function "
        "of (y_true, y_pred)"
    )


def _per_example(values: tf.Tensor, batch: tf.Tensor) -> tf.Tensor:
    values = tf.cast(values, tf.float32)
    if values.shape.rank == 0:  # a batch mean: back to a sum over the batch
        return tf.fill([batch], values)
    if values.shape.rank > 1:
        values = tf.reduce_mean(values, axis=list(range(1, values.shape.rank)))
    return values


def _output_names(fn) -> List[str]:
    return [producer_name(t) for t in fn.outputs]


def per_example_loss(model: keras.Model, loss: Any, criterion: str = "") -> LossFn:
    """``(y, predictions) -> (batch,)`` per-example losses for ``model``.

    Args:
        model: the model (its compiled loss is used when ``loss`` is None).
        loss: None, a loss name, a ``keras.losses.Loss``, a function of
            ``(y_true, y_pred)``, or a list/dict of those, one per model output.
        criterion: the criterion's name, for error messages.

    Raises:
        ImportanceError: no loss anywhere, or a list/dict that does not match the outputs.
    """
    spec = loss if loss is not None else getattr(model, "loss", None)
    if spec is None:
        raise ImportanceError(
            f"criterion {criterion!r} needs a loss: compile the model with one "
            "(model.compile(loss=...)) or pass loss= (e.g. 'sparse_categorical_crossentropy')"
        )
    names = _output_names(functional_of(model))
    n = len(names)
    if isinstance(spec, dict):
        unknown = [k for k in spec if k not in names]
        if unknown:
            raise ImportanceError(f"loss keys {unknown} are not outputs of the model ({names})")
        fns = [(_one_loss(spec[k]) if k in spec else None) for k in names]
    elif isinstance(spec, (list, tuple)):
        if len(spec) != n:
            raise ImportanceError(f"{len(spec)} losses given for a model with {n} outputs")
        fns = [None if s is None else _one_loss(s) for s in spec]
    else:
        fns = [_one_loss(spec)] * n

    def targets(y) -> List[Any]:
        if n == 1:
            if isinstance(y, dict) and len(y) == 1:
                return list(y.values())
            if isinstance(y, (list, tuple)) and len(y) == 1:
                return [y[0]]
            return [y]
        if isinstance(y, dict):
            return [y.get(name) for name in names]
        if isinstance(y, (list, tuple)) and len(y) == n:
            return list(y)
        raise ImportanceError(f"the model has {n} outputs: give y as a list or dict of {n} targets")

    def compute(y, preds: List[tf.Tensor]) -> tf.Tensor:
        batch = tf.shape(preds[0])[0]
        total = None
        for fn, yt, yp in zip(fns, targets(y), preds):
            if fn is None or yt is None:
                continue
            part = _per_example(fn(yt, yp), batch)
            total = part if total is None else total + part
        if total is None:
            raise ImportanceError("no output of the model has both a loss and a target")
        return total

    return compute


def _weighted(per_ex: tf.Tensor, sw) -> tf.Tensor:
    if sw is None:
        return per_ex
    sw = tf.reshape(tf.cast(sw, per_ex.dtype), [-1])
    return per_ex * sw


def tf_variable(v) -> tf.Variable:
    """The TensorFlow variable behind a Keras variable (what tapes watch and steps read)."""
    value = getattr(v, "value", v)
    if isinstance(value, tf.Variable):
        return value
    return getattr(v, "_value", value)


def _watch_everything(tape: tf.GradientTape, model: keras.Model, x) -> None:
    """Record every op: gradients reach feature maps made only by frozen layers too."""
    for t in keras.tree.flatten(x):
        if getattr(t, "dtype", None) is not None and tf.as_dtype(t.dtype).is_floating:
            tape.watch(t)
    tape.watch([tf_variable(v) for v in model.weights if tf.as_dtype(v.dtype).is_floating])


def _feature_map_gradients(ctx: ScoringContext, taylor_: bool) -> Dict[str, np.ndarray]:
    plan = ObservationPlan(ctx)
    probe, k = plan.probe(with_outputs=True)
    loss_fn = per_example_loss(ctx.model, ctx.loss, ctx.criterion)
    model = ctx.model

    def batch_sums(x, y, sw):
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            _watch_everything(tape, model, x)
            outs = as_list(probe(x, training=False))
            observed, preds = outs[:k], outs[k:]
            total = tf.reduce_sum(_weighted(loss_fn(y, preds), sw))
        grads = tape.gradient(total, observed)
        per_tensor = []
        for t, g in zip(observed, grads):
            g = tf.zeros_like(t, tf.float32) if g is None else tf.cast(g, tf.float32)
            per_tensor.append(plan.spatial_mean(tf.cast(t, tf.float32) * g if taylor_ else g))
        values = tf.abs(tf.cast(plan.channel_values(per_tensor), tf.float64))
        return tf.reduce_sum(values, axis=0), tf.cast(tf.shape(values)[0], tf.float64)

    sums, n = stream_sums(ctx, plan.width, batch_sums, needs_labels=True)
    return plan.combine(sums / n)


@register_criterion("mean_gradient", needs="labels")
def mean_gradient(ctx: ScoringContext) -> Dict[str, np.ndarray]:
    """Mean over examples of |spatial mean of dLoss/dx| per channel (Liu and Wu (2019))."""
    return _feature_map_gradients(ctx, taylor_=False)


@register_criterion("taylor", needs="labels")
def taylor(ctx: ScoringContext) -> Dict[str, np.ndarray]:
    """Mean over examples of |spatial mean of x * dLoss/dx| per channel (first-order Taylor)."""
    return _feature_map_gradients(ctx, taylor_=True)


class FilterBlocks:
    """One producer's filters (a :class:`ChannelWeights`) laid out for per-channel sums in
    TensorFlow, over flat views of its weight arrays.

    The usual case, a whole kernel with the channels on its last axis, is summed by a
    reshape; other layouts gather their entries and sum them per channel.

    Args:
        cw: the producer's filter entries.
        var_index: the index, in the caller's list of variables, of each of ``cw``'s
            variables (it may raise to refuse one).

    Attributes:
        size: channels of the group.
        held: which channels the producer holds (numpy bool).
        held_f: the same as float32 (TensorFlow).
        inv: 1 / entries of each held channel (0 elsewhere; TensorFlow float32).
        var_indices: the variable index of each block.
    """

    def __init__(self, cw: ChannelWeights, var_index: Callable[[object], int]) -> None:
        counts = cw.counts
        self.size = cw.size
        self.held = counts > 0
        inv = np.zeros(cw.size, np.float32)
        inv[self.held] = 1.0 / counts[self.held]
        self.inv = tf.constant(inv)
        self.held_f = tf.constant(self.held.astype(np.float32))
        self._n_held = float(self.held.sum())
        self._blocks = []  # (variable index, flat ids or None for a whole kernel, channel ids)
        for e, v in zip(cw.entries, cw.variables):
            i = var_index(v)
            if e.whole_on_last_axis(cw.size):
                self._blocks.append((i, None, None))
            else:
                self._blocks.append((i, tf.constant(e.flat, tf.int64), tf.constant(e.channel, tf.int32)))
        self.var_indices = [i for i, _, _ in self._blocks]

    def channel_sum(self, values_of: Callable[[int], tf.Tensor]) -> tf.Tensor:
        """Per channel, the sum of ``values_of(variable index)`` (a flat float32 vector of
        that weight's entries) over the channel's entries."""
        total = tf.zeros([self.size], tf.float32)
        for i, flat, channel in self._blocks:
            values = values_of(i)
            if flat is None:
                total += tf.reduce_sum(tf.reshape(values, [-1, self.size]), axis=0)
            else:
                total += tf.math.unsorted_segment_sum(tf.gather(values, flat), channel, self.size)
        return total

    def relative(self, values: tf.Tensor) -> tf.Tensor:
        """``N * v_n / sum_j v_j`` over the ``N`` held channels (Xu et al. (2018), Eq. 5 factors),
        0 where not held and where the sum is 0."""
        return tf.math.divide_no_nan(values * self._n_held, tf.reduce_sum(values * self.held_f)) * self.held_f


def _normalized(values: np.ndarray) -> np.ndarray:
    """``N * v_n / sum_j v_j`` over the held channels (NaN elsewhere); 0 when the sum is 0."""
    held = ~np.isnan(values)
    out = np.full(values.shape, np.nan)
    mean = float(values[held].mean()) if held.any() else 0.0
    out[held] = values[held] / mean if mean > 0 else 0.0
    return out


@register_criterion("gsfp", needs="labels")
def gsfp(ctx: ScoringContext) -> Dict[str, np.ndarray]:
    """Cumulative normalized saliency of globally soft filter pruning, Xu et al. (2018) Eq. 5, 6."""
    loss_fn = per_example_loss(ctx.model, ctx.loss, ctx.criterion)
    model = ctx.model
    producers: List[ChannelWeights] = []
    owner: List[str] = []
    for g in ctx.groups:
        filters = ctx.filters(g)
        if not filters:
            raise ctx.fail(g, "it has no filter weights (a kernel its producer creates)")
        producers.extend(filters)
        owner.extend([g.name] * len(filters))
    variables: List[object] = []
    index: Dict[int, int] = {}
    for cw in producers:
        for v in cw.variables:
            if id(v) not in index:
                index[id(v)] = len(variables)
                variables.append(v)
    tf_vars = [tf_variable(v) for v in variables]
    plans = [FilterBlocks(cw, lambda v: index[id(v)]) for cw in producers]
    width = sum(cw.size for cw in producers)

    def batch_sums(x, y, sw):
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(tf_vars)
            preds = as_list(model(x, training=False))
            per_ex = _weighted(loss_fn(y, preds), sw)
            batch_loss = tf.reduce_sum(per_ex) / tf.cast(tf.shape(per_ex)[0], per_ex.dtype)
        grads = tape.gradient(batch_loss, tf_vars)
        flat = [tf.zeros([int(np.prod(v.shape))], tf.float32) if g is None else tf.reshape(tf.cast(g, tf.float32), [-1])
                for v, g in zip(tf_vars, grads)]
        factors = [fb.relative(fb.channel_sum(lambda i: tf.abs(flat[i])) * fb.inv) for fb in plans]
        vec = tf.cast(tf.concat(factors, axis=0), tf.float64)
        return vec, tf.constant(1.0, tf.float64)

    sums, _ = stream_sums(ctx, width, batch_sums, needs_labels=True)
    per_group: Dict[str, List[np.ndarray]] = {g.name: [] for g in ctx.groups}
    offset = 0
    for cw, name in zip(producers, owner):
        w_factor = _normalized(np.sqrt(cw.reduce(np.square, "mean")))
        g_cum = sums[offset : offset + cw.size]
        offset += cw.size
        per_group[name].append(np.where(np.isnan(w_factor), np.nan, g_cum * np.nan_to_num(w_factor)))
    return {name: combine_layers(parts) for name, parts in per_group.items()}
