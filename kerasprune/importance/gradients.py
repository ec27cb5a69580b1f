"""Criteria from gradients of the loss over labelled data (Liu and Wu (2019), Xu et al. (2018)).

Every criterion here is *accumulable*: its formula is a per-step reduction, declared with
:class:`WeightGradients` (from the gradients of the filters' weights) or
:class:`FeatureGradients` (from the gradients of the feature maps), that
:func:`kerasprune.score` runs over batches of data (below) and
:class:`~kerasprune.callbacks.SaliencyAccumulator` runs inside the training steps of
``model.fit`` (the same function, fed with the train step's own gradients).

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
  zero contributes 0 instead of NaN (:func:`~kerasprune.importance.normalize.relative_norm`).
- ``taylor_weights``: per batch ``|sum over the filter of w * g|`` (first-order Taylor on
  the weights), summed over the batches.
- ``grad_l1``: per batch ``G_n = sum |g| / n`` (the size-normalized L1 norm of the
  filter's gradient), summed over the batches.

Weight-gradient criteria with several producers (a residual group) get the mean of their
producers' values.

References:

- Liu and Wu (2019), mean gradient and hierarchical global pruning: Congcong Liu and
  Huaming Wu, "Channel pruning based on mean gradient for accelerating Convolutional
  Neural Networks", Signal Processing 156, 84-91, 2019; doi:10.1016/j.sigpro.2018.10.019.
- Xu et al. (2018), globally soft filter pruning (GSFP): Ke Xu, Xiaoyun Wang, Qun Jia,
  Jianjing An and Dong Wang, "Globally Soft Filter Pruning For Efficient Convolutional
  Neural Networks", submitted to ICLR 2019, OpenReview id H1fevoAcKX, 2018.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Dict, List, Sequence

import keras
import numpy as np
import tensorflow as tf

from kerasprune.errors import ImportanceError
from kerasprune.graph.keras_graph import functional_of, producer_name
from kerasprune.importance.base import (
    FEATURE_GRADIENTS,
    WEIGHT_GRADIENTS,
    Accumulation,
    ScoringContext,
    register_criterion,
)
from kerasprune.importance.filters import ChannelWeights, combine_layers
from kerasprune.importance.normalize import relative_norm
from kerasprune.importance.observe import ObservationPlan, Site, as_list, stream_sums

__all__ = [
    "mean_gradient",
    "taylor",
    "gsfp",
    "taylor_weights",
    "grad_l1",
    "WeightGradients",
    "FeatureGradients",
    "FilterStep",
    "FeatureMapStep",
    "FilterBlocks",
    "weight_gradient_scores",
    "feature_gradient_scores",
    "filter_step_values",
    "feature_step_sums",
    "per_example_loss",
    "tf_variable",
]

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
        self._held_b = tf.constant(self.held)
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
        """``N * v_n / sum_j v_j`` over the ``N`` held channels (Xu et al. (2018), Eq. 5
        factors; :func:`~kerasprune.importance.normalize.relative_norm`), 0 where not held
        and where the sum is 0."""
        return relative_norm(values, self._held_b)


# ----------------------------------------------------------------- weight-gradient kind


class FilterStep:
    """One producer's filters at one training step (in ``fit``) or one batch (in
    :func:`kerasprune.score`): what a :class:`WeightGradients` reduction reads.

    The reduction returns one float32 value per channel of the group (``size``); channels
    the producer does not hold are set to 0 after it.

    Args:
        blocks: the producer's :class:`FilterBlocks`.
        grad: variable index -> the flat float32 gradient of the step's (mean) loss with
            respect to that weight.
        weight: variable index -> the flat float32 values of that weight (those the
            step's forward pass used).
    """

    def __init__(
        self,
        blocks: FilterBlocks,
        grad: Callable[[int], tf.Tensor],
        weight: Callable[[int], tf.Tensor],
    ) -> None:
        self.blocks = blocks
        self._grad = grad
        self._weight = weight

    @property
    def size(self) -> int:
        """Channels of the group."""
        return self.blocks.size

    @property
    def held(self) -> tf.Tensor:
        """1.0 for the channels the producer holds, 0.0 elsewhere (float32)."""
        return self.blocks.held_f

    def sum(self, fn: Callable[[tf.Tensor, tf.Tensor], tf.Tensor]) -> tf.Tensor:
        """Per channel, the sum over its filter's entries of ``fn(g, w)`` (element-wise
        in the gradients ``g`` and the weights ``w``, flat float32 tensors)."""
        return self.blocks.channel_sum(lambda i: fn(self._grad(i), self._weight(i)))

    def mean(self, fn: Callable[[tf.Tensor, tf.Tensor], tf.Tensor]) -> tf.Tensor:
        """:meth:`sum` divided by the entries of each channel's filter (``n``)."""
        return self.sum(fn) * self.blocks.inv

    def relative(self, values: tf.Tensor) -> tf.Tensor:
        """``N * v_n / sum_j v_j`` over the producer's ``N`` held channels (Xu et al.
        (2018), Eq. 5)."""
        return self.blocks.relative(values)


def _flat(t: Any, like: tf.Variable) -> tf.Tensor:
    """A gradient or weight as a flat float32 vector (zeros for a missing gradient)."""
    if t is None:
        return tf.zeros([int(np.prod(like.shape))], tf.float32)
    if isinstance(t, tf.IndexedSlices):
        t = tf.convert_to_tensor(t)
    return tf.reshape(tf.cast(t, tf.float32), [-1])


def filter_step_values(
    blocks: Sequence[FilterBlocks],
    reduce: Callable[[FilterStep], tf.Tensor],
    grad: Callable[[int], tf.Tensor],
    weight: Callable[[int], tf.Tensor],
) -> List[tf.Tensor]:
    """``reduce`` of every producer at one step: float32 per-channel values, 0 where not held.

    Args:
        blocks: the producers.
        reduce: the criterion's per-step reduction.
        grad, weight: as :class:`FilterStep` takes them (shared by the producers).
    """
    plain = tf.autograph.experimental.do_not_convert(reduce)  # tensor code, traced as is
    return [tf.cast(plain(FilterStep(fb, grad, weight)), tf.float32) * fb.held_f for fb in blocks]


@dataclass(frozen=True)
class WeightGradients(Accumulation):
    """Accumulated from the gradients of the filters' weights.

    ``reduce(f: FilterStep) -> per-channel values`` is run at every step (``fit``) or batch
    (:func:`kerasprune.score`) for every producer of every group, with the gradient of
    that step's mean loss; the values are summed over the steps (no averaging), and a
    group made by several producers gets the mean of theirs. For example ``grad_l1``::

        WeightGradients(lambda f: f.mean(lambda g, w: tf.abs(g)))

    Attributes:
        reduce: the per-step reduction, traced into TensorFlow functions as plain Python
            (no AutoGraph: tensor operations, no Python branching on tensor values).
    """

    kind: ClassVar[str] = WEIGHT_GRADIENTS

    def scores(self, ctx: ScoringContext) -> Dict[str, np.ndarray]:
        """``reduce`` over the batches of ``ctx.data`` (gradients of each batch's mean loss,
        inference mode), summed; per group the mean over its producers."""
        return weight_gradient_scores(ctx, self.reduce)


def weight_gradient_scores(
    ctx: ScoringContext, reduce: Callable[[FilterStep], tf.Tensor]
) -> Dict[str, np.ndarray]:
    """The one-shot pass of a :class:`WeightGradients` criterion (see there)."""
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
    blocks = [FilterBlocks(cw, lambda v: index[id(v)]) for cw in producers]
    width = sum(cw.size for cw in producers)

    def batch_sums(x, y, sw):
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(tf_vars)
            preds = as_list(model(x, training=False))
            per_ex = _weighted(loss_fn(y, preds), sw)
            batch_loss = tf.reduce_sum(per_ex) / tf.cast(tf.shape(per_ex)[0], per_ex.dtype)
        grads = [_flat(g, v) for g, v in zip(tape.gradient(batch_loss, tf_vars), tf_vars)]
        weights = [_flat(tf.convert_to_tensor(v), v) for v in tf_vars]
        values = filter_step_values(blocks, reduce, grads.__getitem__, weights.__getitem__)
        return tf.cast(tf.concat(values, axis=0), tf.float64), tf.constant(1.0, tf.float64)

    sums, _ = stream_sums(ctx, width, batch_sums, needs_labels=True)
    per_group: Dict[str, List[np.ndarray]] = {g.name: [] for g in ctx.groups}
    offset = 0
    for fb, name in zip(blocks, owner):
        part = sums[offset : offset + fb.size]
        offset += fb.size
        per_group[name].append(np.where(fb.held, part, np.nan))
    return {name: combine_layers(parts) for name, parts in per_group.items()}


# ----------------------------------------------------------------- feature-gradient kind


class FeatureMapStep:
    """One observed feature map at one training step (in ``fit``) or one batch (in
    :func:`kerasprune.score`): what a :class:`FeatureGradients` reduction reads.

    Attributes:
        x: the feature map, ``(batch, ..., P)`` float32 (where the groups are observed,
            see :mod:`~kerasprune.importance.observe`).
        g: per example, the gradient of that example's own loss with respect to its
            feature map, same shape, float32.
        sites: the groups' channels on this feature map.
        width: the total channels of the sites (the columns :meth:`channels` returns).
    """

    def __init__(self, x: tf.Tensor, g: tf.Tensor, sites: Sequence[Site]) -> None:
        self.x = x
        self.g = g
        self.sites = list(sites)
        self.width = sum(s.size for s in self.sites)

    def channels(self, values: tf.Tensor) -> tf.Tensor:
        """``(batch, ..., P) -> (batch, width)``: per example and channel, the mean of
        ``values`` over the spatial positions and the positions carrying the channel."""
        per_position = ObservationPlan.spatial_mean(values)
        return tf.concat([ObservationPlan.site_values(per_position, s) for s in self.sites], axis=1)


def feature_step_sums(
    step: FeatureMapStep, reduce: Callable[[FeatureMapStep], tf.Tensor]
) -> tf.Tensor:
    """``reduce(step)`` summed over the batch's examples: ``(width,)`` float64."""
    plain = tf.autograph.experimental.do_not_convert(reduce)  # tensor code, traced as is
    return tf.reduce_sum(tf.cast(plain(step), tf.float64), axis=0)


@dataclass(frozen=True)
class FeatureGradients(Accumulation):
    """Accumulated from the gradients of the feature maps.

    ``reduce(m: FeatureMapStep) -> (batch, m.width)`` per-example channel values, run at
    every step (``fit``) or batch (:func:`kerasprune.score`) for every observed feature
    map; the values are summed over the examples and divided by their number (a mean
    over examples). A group observed at several feature maps gets the mean over them.
    For example ``mean_gradient`` (Liu and Wu (2019))::

        FeatureGradients(lambda m: tf.abs(m.channels(m.g)))

    Attributes:
        reduce: the per-step reduction, traced into TensorFlow functions as plain Python
            (no AutoGraph: tensor operations, no Python branching on tensor values).
    """

    kind: ClassVar[str] = FEATURE_GRADIENTS

    def scores(self, ctx: ScoringContext) -> Dict[str, np.ndarray]:
        """``reduce`` over the batches of ``ctx.data`` (inference mode), per example, averaged;
        per group the mean over its feature maps."""
        return feature_gradient_scores(ctx, self.reduce)


def feature_gradient_scores(
    ctx: ScoringContext, reduce: Callable[[FeatureMapStep], tf.Tensor]
) -> Dict[str, np.ndarray]:
    """The one-shot pass of a :class:`FeatureGradients` criterion (see there).

    In inference mode examples do not interact, so the gradient of the *sum* of the
    per-example losses with respect to the batch's feature map holds every example's own
    gradient: one backward pass per batch.
    """
    plan = ObservationPlan(ctx)
    probe, k = plan.probe(with_outputs=True)
    loss_fn = per_example_loss(ctx.model, ctx.loss, ctx.criterion)
    model = ctx.model
    on_tensor: List[List[Site]] = [[] for _ in range(k)]
    for sites in plan.sites.values():
        for s in sites:
            on_tensor[s.tensor].append(s)
    # the columns come tensor by tensor; put them back in the plan's layout
    order = np.concatenate(
        [np.arange(s.offset, s.offset + s.size) for sites in on_tensor for s in sites]
    )
    layout = tf.constant(np.argsort(order), tf.int32)

    def batch_sums(x, y, sw):
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            _watch_everything(tape, model, x)
            outs = as_list(probe(x, training=False))
            observed, preds = outs[:k], outs[k:]
            total = tf.reduce_sum(_weighted(loss_fn(y, preds), sw))
        grads = tape.gradient(total, observed)
        columns = []
        for t, g, sites in zip(observed, grads, on_tensor):
            t = tf.cast(t, tf.float32)
            g = tf.zeros_like(t) if g is None else tf.cast(g, tf.float32)
            columns.append(feature_step_sums(FeatureMapStep(t, g, sites), reduce))
        count = tf.cast(tf.shape(observed[0])[0], tf.float64)
        return tf.gather(tf.concat(columns, axis=0), layout), count

    sums, n = stream_sums(ctx, plan.width, batch_sums, needs_labels=True)
    return plan.combine(sums / n)


# ----------------------------------------------------------------- the criteria


def _mean_gradient_step(m: FeatureMapStep) -> tf.Tensor:
    """|Spatial mean of dLoss/dx| per example and channel (Liu and Wu (2019))."""
    return tf.abs(m.channels(m.g))


def _taylor_step(m: FeatureMapStep) -> tf.Tensor:
    """|Spatial mean of x * dLoss/dx| per example and channel (first-order Taylor)."""
    return tf.abs(m.channels(m.x * m.g))


def _gsfp_step(f: FilterStep) -> tf.Tensor:
    """Eq. 5 of Xu et al. (2018): relative gradient L1 times relative weight L2 of each filter."""
    g_n = f.mean(lambda g, w: tf.abs(g))
    w_n = tf.sqrt(f.mean(lambda g, w: tf.square(w)))
    return f.relative(g_n) * f.relative(w_n)


def _taylor_weights_step(f: FilterStep) -> tf.Tensor:
    """|sum over the filter of w * g| (first-order Taylor on the weights)."""
    return tf.abs(f.sum(lambda g, w: w * g))


def _grad_l1_step(f: FilterStep) -> tf.Tensor:
    """sum |g| / n over the filter's n weights (size-normalized L1 norm of its gradient)."""
    return f.mean(lambda g, w: tf.abs(g))


MEAN_GRADIENT = FeatureGradients(_mean_gradient_step)
TAYLOR = FeatureGradients(_taylor_step)
GSFP = WeightGradients(_gsfp_step)
TAYLOR_WEIGHTS = WeightGradients(_taylor_weights_step)
GRAD_L1 = WeightGradients(_grad_l1_step)


@register_criterion("mean_gradient", accumulate=MEAN_GRADIENT)
def mean_gradient(ctx: ScoringContext) -> Dict[str, np.ndarray]:
    """Mean over examples of |spatial mean of dLoss/dx| per channel (Liu and Wu (2019))."""
    return MEAN_GRADIENT.scores(ctx)


@register_criterion("taylor", accumulate=TAYLOR)
def taylor(ctx: ScoringContext) -> Dict[str, np.ndarray]:
    """Mean over examples of |spatial mean of x * dLoss/dx| per channel (first-order Taylor)."""
    return TAYLOR.scores(ctx)


@register_criterion("gsfp", accumulate=GSFP)
def gsfp(ctx: ScoringContext) -> Dict[str, np.ndarray]:
    """Cumulative normalized saliency of globally soft filter pruning, Xu et al. (2018) Eq. 5, 6."""
    return GSFP.scores(ctx)


@register_criterion("taylor_weights", accumulate=TAYLOR_WEIGHTS)
def taylor_weights(ctx: ScoringContext) -> Dict[str, np.ndarray]:
    """|sum of w * dLoss/dw| over each filter, summed over batches (Taylor on the weights)."""
    return TAYLOR_WEIGHTS.scores(ctx)


@register_criterion("grad_l1", accumulate=GRAD_L1)
def grad_l1(ctx: ScoringContext) -> Dict[str, np.ndarray]:
    """Mean |dLoss/dw| over each filter, summed over batches (size-normalized gradient L1)."""
    return GRAD_L1.scores(ctx)
