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
statistics, dropout is off), on every Keras backend: the model is run with
``model.stateless_call`` and differentiated by the backend's own autodiff
(:func:`~kerasprune.importance.autodiff.gradient_step`: ``tf.GradientTape``,
``jax.value_and_grad``, ``torch.autograd``), the reductions are ``keras.ops``.
Feature-map gradients are taken the same way everywhere: the model's graph is called
with a zero *probe* added to each observed feature map
(:meth:`~kerasprune.importance.observe.ObservationPlan.gradient_probe`), and the
gradient with respect to the probe is the gradient with respect to the feature map.

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

import sys
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Dict, List, Sequence, Tuple

import keras
import numpy as np
from keras import ops

from kerasprune.backend import accumulation_dtype, current, require_tensorflow
from kerasprune.errors import ImportanceError
from kerasprune.graph.keras_graph import functional_of, producer_name
from kerasprune.importance.autodiff import gradient_step, variable_values
from kerasprune.importance.base import (
    FEATURE_GRADIENTS,
    WEIGHT_GRADIENTS,
    Accumulation,
    ScoringContext,
    register_criterion,
)
from kerasprune.importance.filters import ChannelWeights, combine_layers
from kerasprune.importance.normalize import relative_norm
from kerasprune.importance.observe import ObservationPlan, Site, as_list, batch_size_of, stream_sums

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

Tensor = Any  # a tensor of the running backend
LossFn = Callable[[Any, List[Tensor]], Tensor]


def _one_loss(spec: Any) -> Callable[[Any, Tensor], Tensor]:
    if isinstance(spec, str):
        spec = keras.losses.get(spec)
    if isinstance(spec, keras.losses.Loss):
        loss_obj = spec

        def call(y_true, y_pred):
            y_pred = ops.cast(ops.convert_to_tensor(y_pred), loss_obj.dtype)
            y_true = ops.cast(ops.convert_to_tensor(y_true), loss_obj.dtype)
            return loss_obj.call(y_true, y_pred)

        return call
    if callable(spec):
        return spec
    raise ImportanceError(
        f"cannot use {spec!r} as a loss: give a loss name, a keras.losses.Loss or a function "
        "of (y_true, y_pred)"
    )


def _per_example(values: Tensor, batch: Any) -> Tensor:
    values = ops.cast(ops.convert_to_tensor(values), "float32")
    rank = len(values.shape)
    if rank == 0:  # a batch mean: back to a sum over the batch
        return ops.broadcast_to(values, (batch,))
    if rank > 1:
        values = ops.mean(values, axis=tuple(range(1, rank)))
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

    def compute(y, preds: List[Tensor]) -> Tensor:
        batch = ops.shape(preds[0])[0]
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


def _weighted(per_ex: Tensor, sw) -> Tensor:
    if sw is None:
        return per_ex
    sw = ops.reshape(ops.cast(sw, per_ex.dtype), (-1,))
    return per_ex * sw


def _tensors(structure: Any) -> Any:
    """Every array of a batch (numpy or the backend's) as a tensor of the running backend."""
    if structure is None:
        return None
    return keras.tree.map_structure(lambda a: None if a is None else ops.convert_to_tensor(a), structure)


def _plain(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` as it is traced: on TensorFlow without AutoGraph (tensor code, traced as is)."""
    tf = sys.modules.get("tensorflow")  # no import here: this runs inside traced functions
    if tf is not None and current() == "tensorflow":
        return tf.autograph.experimental.do_not_convert(fn)
    return fn


def tf_variable(v) -> Any:
    """The TensorFlow variable behind a Keras variable (what the TensorFlow callbacks'
    tapes watch and train steps read); TensorFlow backend only."""
    tf = require_tensorflow("tf_variable")
    value = getattr(v, "value", v)
    if isinstance(value, tf.Variable):
        return value
    return getattr(v, "_value", value)


class FilterBlocks:
    """One producer's filters (a :class:`ChannelWeights`) laid out for per-channel sums in
    backend tensors (``keras.ops``), over flat views of its weight arrays.

    The usual case, a whole kernel with the channels on its last axis, is summed by a
    reshape; other layouts gather their entries and sum them per channel.

    Args:
        cw: the producer's filter entries.
        var_index: the index, in the caller's list of variables, of each of ``cw``'s
            variables (it may raise to refuse one).

    Attributes:
        size: channels of the group.
        held: which channels the producer holds (numpy bool).
        held_f: the same as float32 (a backend tensor).
        inv: 1 / entries of each held channel (0 elsewhere; a float32 backend tensor).
        var_indices: the variable index of each block.
    """

    def __init__(self, cw: ChannelWeights, var_index: Callable[[object], int]) -> None:
        counts = cw.counts
        self.size = cw.size
        self.held = counts > 0
        inv = np.zeros(cw.size, np.float32)
        inv[self.held] = 1.0 / counts[self.held]
        self.inv = ops.convert_to_tensor(inv)
        self.held_f = ops.convert_to_tensor(self.held.astype(np.float32))
        self._held_b = ops.convert_to_tensor(self.held)
        self._blocks = []  # (variable index, flat ids or None for a whole kernel, channel ids)
        for e, v in zip(cw.entries, cw.variables):
            i = var_index(v)
            if e.whole_on_last_axis(cw.size):
                self._blocks.append((i, None, None))
            else:
                flat = ops.convert_to_tensor(np.asarray(e.flat, np.int32))
                self._blocks.append((i, flat, ops.convert_to_tensor(np.asarray(e.channel, np.int32))))
        self.var_indices = [i for i, _, _ in self._blocks]

    def channel_sum(self, values_of: Callable[[int], Tensor]) -> Tensor:
        """Per channel, the sum of ``values_of(variable index)`` (a flat float32 vector of
        that weight's entries) over the channel's entries."""
        total = ops.zeros((self.size,), "float32")
        for i, flat, channel in self._blocks:
            values = values_of(i)
            if flat is None:
                total = total + ops.sum(ops.reshape(values, (-1, self.size)), axis=0)
            else:
                total = total + ops.segment_sum(ops.take(values, flat), channel, num_segments=self.size)
        return total

    def relative(self, values: Tensor) -> Tensor:
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
        grad: Callable[[int], Tensor],
        weight: Callable[[int], Tensor],
    ) -> None:
        self.blocks = blocks
        self._grad = grad
        self._weight = weight

    @property
    def size(self) -> int:
        """Channels of the group."""
        return self.blocks.size

    @property
    def held(self) -> Tensor:
        """1.0 for the channels the producer holds, 0.0 elsewhere (float32)."""
        return self.blocks.held_f

    def sum(self, fn: Callable[[Tensor, Tensor], Tensor]) -> Tensor:
        """Per channel, the sum over its filter's entries of ``fn(g, w)`` (element-wise
        in the gradients ``g`` and the weights ``w``, flat float32 tensors)."""
        return self.blocks.channel_sum(lambda i: fn(self._grad(i), self._weight(i)))

    def mean(self, fn: Callable[[Tensor, Tensor], Tensor]) -> Tensor:
        """:meth:`sum` divided by the entries of each channel's filter (``n``)."""
        return self.sum(fn) * self.blocks.inv

    def relative(self, values: Tensor) -> Tensor:
        """``N * v_n / sum_j v_j`` over the producer's ``N`` held channels (Xu et al.
        (2018), Eq. 5)."""
        return self.blocks.relative(values)


def _flat(t: Any, like: Any) -> Tensor:
    """A gradient or weight as a flat float32 vector (zeros for a missing gradient)."""
    if t is None:
        return ops.zeros((int(np.prod(like.shape)),), "float32")
    return ops.reshape(ops.cast(t, "float32"), (-1,))


def filter_step_values(
    blocks: Sequence[FilterBlocks],
    reduce: Callable[[FilterStep], Tensor],
    grad: Callable[[int], Tensor],
    weight: Callable[[int], Tensor],
) -> List[Tensor]:
    """``reduce`` of every producer at one step: float32 per-channel values, 0 where not held.

    Args:
        blocks: the producers.
        reduce: the criterion's per-step reduction.
        grad, weight: as :class:`FilterStep` takes them (shared by the producers).
    """
    plain = _plain(reduce)
    return [ops.cast(plain(FilterStep(fb, grad, weight)), "float32") * fb.held_f for fb in blocks]


@dataclass(frozen=True)
class WeightGradients(Accumulation):
    """Accumulated from the gradients of the filters' weights.

    ``reduce(f: FilterStep) -> per-channel values`` is run at every step (``fit``) or batch
    (:func:`kerasprune.score`) for every producer of every group, with the gradient of
    that step's mean loss; the values are summed over the steps (no averaging), and a
    group made by several producers gets the mean of theirs. For example ``grad_l1``::

        WeightGradients(lambda f: f.mean(lambda g, w: keras.ops.abs(g)))

    Attributes:
        reduce: the per-step reduction, written with ``keras.ops`` (it runs on every
            backend) and traced into compiled functions as plain Python (no AutoGraph:
            tensor operations, no Python branching on tensor values).
    """

    kind: ClassVar[str] = WEIGHT_GRADIENTS

    def scores(self, ctx: ScoringContext) -> Dict[str, np.ndarray]:
        """``reduce`` over the batches of ``ctx.data`` (gradients of each batch's mean loss,
        inference mode), summed; per group the mean over its producers."""
        return weight_gradient_scores(ctx, self.reduce)


def _state_slots(model: keras.Model, variables: Sequence[Any]) -> List[Tuple[int, int]]:
    """Where each of ``variables`` is in ``model``'s stateless state: ``(0, i)`` for the
    i-th trainable variable, ``(1, i)`` for the i-th non-trainable one."""
    slots: Dict[int, Tuple[int, int]] = {}
    for kind, group in enumerate((model.trainable_variables, model.non_trainable_variables)):
        for i, v in enumerate(group):
            slots.setdefault(id(v), (kind, i))
    missing = [getattr(v, "path", str(v)) for v in variables if id(v) not in slots]
    if missing:
        raise ImportanceError(f"weights {missing[:3]} are not variables of model '{model.name}'")
    return [slots[id(v)] for v in variables]


def weight_gradient_scores(
    ctx: ScoringContext, reduce: Callable[[FilterStep], Tensor]
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
    slots = _state_slots(model, variables)
    blocks = [FilterBlocks(cw, lambda v: index[id(v)]) for cw in producers]
    width = sum(cw.size for cw in producers)

    def loss(diff, x, y, sw, trainable, non_trainable):
        state = [list(trainable), list(non_trainable)]
        for (kind, i), value in zip(slots, diff):
            state[kind][i] = value
        preds, _ = model.stateless_call(state[0], state[1], x, training=False)
        per_ex = _weighted(loss_fn(y, as_list(preds)), sw)
        return ops.sum(per_ex) / ops.cast(ops.shape(per_ex)[0], per_ex.dtype), ()

    def finish(grads, _, diff, *rest):
        g = [_flat(gi, d) for gi, d in zip(grads, diff)]
        w = [_flat(d, d) for d in diff]
        values = filter_step_values(blocks, reduce, g.__getitem__, w.__getitem__)
        return ops.cast(ops.concatenate(values, axis=0), accumulation_dtype())

    step = gradient_step(loss, finish, f"criterion {ctx.criterion!r}")
    trainable = variable_values(model.trainable_variables)
    non_trainable = variable_values(model.non_trainable_variables)
    diff = [(trainable, non_trainable)[kind][i] for kind, i in slots]

    def batch_sums(x, y, sw):
        return step(diff, _tensors(x), _tensors(y), _tensors(sw), trainable, non_trainable), 1.0

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

    def __init__(self, x: Tensor, g: Tensor, sites: Sequence[Site]) -> None:
        self.x = x
        self.g = g
        self.sites = list(sites)
        self.width = sum(s.size for s in self.sites)

    def channels(self, values: Tensor) -> Tensor:
        """``(batch, ..., P) -> (batch, width)``: per example and channel, the mean of
        ``values`` over the spatial positions and the positions carrying the channel."""
        per_position = ObservationPlan.spatial_mean(values)
        return ops.concatenate([ObservationPlan.site_values(per_position, s) for s in self.sites], axis=1)


def feature_step_sums(
    step: FeatureMapStep, reduce: Callable[[FeatureMapStep], Tensor]
) -> Tensor:
    """``reduce(step)`` summed over the batch's examples: ``(width,)`` float64 (float32 on
    JAX without x64, :func:`~kerasprune.backend.accumulation_dtype`)."""
    return ops.sum(ops.cast(_plain(reduce)(step), accumulation_dtype()), axis=0)


@dataclass(frozen=True)
class FeatureGradients(Accumulation):
    """Accumulated from the gradients of the feature maps.

    ``reduce(m: FeatureMapStep) -> (batch, m.width)`` per-example channel values, run at
    every step (``fit``) or batch (:func:`kerasprune.score`) for every observed feature
    map; the values are summed over the examples and divided by their number (a mean
    over examples). A group observed at several feature maps gets the mean over them.
    For example ``mean_gradient`` (Liu and Wu (2019))::

        FeatureGradients(lambda m: keras.ops.abs(m.channels(m.g)))

    Attributes:
        reduce: the per-step reduction, written with ``keras.ops`` (it runs on every
            backend) and traced into compiled functions as plain Python (no AutoGraph:
            tensor operations, no Python branching on tensor values).
    """

    kind: ClassVar[str] = FEATURE_GRADIENTS

    def scores(self, ctx: ScoringContext) -> Dict[str, np.ndarray]:
        """``reduce`` over the batches of ``ctx.data`` (inference mode), per example, averaged;
        per group the mean over its feature maps."""
        return feature_gradient_scores(ctx, self.reduce)


def _zeros_like_tapped(tensors: Sequence[Any], x: Any, forward: Callable[[Any], Any]) -> List[Tensor]:
    """Zero probes for one batch: a zero array of each observed tensor's shape at the
    batch's size (shapes the graph leaves open, other than the batch, are read from
    ``forward``'s symbolic output specs for ``x``)."""
    n = batch_size_of(x)
    shapes = [(n,) + tuple(t.shape[1:]) for t in tensors]
    if any(d is None for shape in shapes for d in shape):
        specs = keras.tree.map_structure(lambda a: keras.KerasTensor(tuple(a.shape), dtype=a.dtype), x)
        shapes = [tuple(o.shape) for o in as_list(forward(specs))[: len(tensors)]]
    return [ops.zeros(shape, t.dtype) for shape, t in zip(shapes, tensors)]


def feature_gradient_scores(
    ctx: ScoringContext, reduce: Callable[[FeatureMapStep], Tensor]
) -> Dict[str, np.ndarray]:
    """The one-shot pass of a :class:`FeatureGradients` criterion (see there).

    In inference mode examples do not interact, so the gradient of the *sum* of the
    per-example losses with respect to the batch's feature map holds every example's own
    gradient: one backward pass per batch. The gradient with respect to a feature map is
    the gradient with respect to a zero probe added to it
    (:meth:`~kerasprune.importance.observe.ObservationPlan.gradient_probe`).
    """
    plan = ObservationPlan(ctx)
    loss_fn = per_example_loss(ctx.model, ctx.loss, ctx.criterion)
    k = len(plan.tensors)
    on_tensor: List[List[Site]] = [[] for _ in range(k)]
    for sites in plan.sites.values():
        for s in sites:
            on_tensor[s.tensor].append(s)
    # the columns come tensor by tensor; put them back in the plan's layout
    order = np.concatenate(
        [np.arange(s.offset, s.offset + s.size) for sites in on_tensor for s in sites]
    )
    layout = np.argsort(order)

    def finish(grads, observed, *rest):
        columns = []
        for t, g, sites in zip(observed, grads, on_tensor):
            step = FeatureMapStep(ops.cast(t, "float32"), ops.cast(g, "float32"), sites)
            columns.append(feature_step_sums(step, reduce))
        return ops.concatenate(columns, axis=0)

    if plan.nested:
        # groups inside nested models or composites: the model run call by call, each
        # observed tensor plus its zero probe (ObservationPlan.run_nested)
        def nested_loss(zeros, x, y, sw):
            observed, preds = plan.run_nested(x, add=list(zeros))
            return ops.sum(_weighted(loss_fn(y, preds), sw)), observed

        nested_step = gradient_step(nested_loss, finish, f"criterion {ctx.criterion!r}")
        probes: Dict[Any, List[Any]] = {}  # zero probes per input signature

        def batch_sums(x, y, sw):
            signature = tuple(tuple(np.shape(a)) for a in keras.tree.flatten(x))
            if signature not in probes:
                probes[signature] = plan.nested_zeros(x)
            zeros = probes[signature]
            sums = nested_step(zeros, _tensors(x), _tensors(y), _tensors(sw))
            return sums, batch_size_of(x)

        sums, n = stream_sums(ctx, plan.width, batch_sums, needs_labels=True)
        return plan.combine(sums[layout] / n)

    probed, probes = plan.gradient_probe()
    forward, _ = plan.probe()

    def loss(zeros, x, y, sw, trainable, non_trainable):
        outs, _ = probed.stateless_call(trainable, non_trainable, [x, list(zeros)], training=False)
        outs = as_list(outs)
        observed, preds = outs[:k], outs[k:]
        return ops.sum(_weighted(loss_fn(y, preds), sw)), observed

    step = gradient_step(loss, finish, f"criterion {ctx.criterion!r}")
    trainable = variable_values(probed.trainable_variables)
    non_trainable = variable_values(probed.non_trainable_variables)

    def batch_sums(x, y, sw):
        x = _tensors(x)
        zeros = _zeros_like_tapped(probes, x, forward.compute_output_spec)
        sums = step(zeros, x, _tensors(y), _tensors(sw), trainable, non_trainable)
        return sums, batch_size_of(x)

    sums, n = stream_sums(ctx, plan.width, batch_sums, needs_labels=True)
    return plan.combine(sums[layout] / n)


# ----------------------------------------------------------------- the criteria


def _mean_gradient_step(m: FeatureMapStep) -> Tensor:
    """|Spatial mean of dLoss/dx| per example and channel (Liu and Wu (2019))."""
    return ops.abs(m.channels(m.g))


def _taylor_step(m: FeatureMapStep) -> Tensor:
    """|Spatial mean of x * dLoss/dx| per example and channel (first-order Taylor)."""
    return ops.abs(m.channels(m.x * m.g))


def _gsfp_step(f: FilterStep) -> Tensor:
    """Eq. 5 of Xu et al. (2018): relative gradient L1 times relative weight L2 of each filter."""
    g_n = f.mean(lambda g, w: ops.abs(g))
    w_n = ops.sqrt(f.mean(lambda g, w: ops.square(w)))
    return f.relative(g_n) * f.relative(w_n)


def _taylor_weights_step(f: FilterStep) -> Tensor:
    """|sum over the filter of w * g| (first-order Taylor on the weights)."""
    return ops.abs(f.sum(lambda g, w: w * g))


def _grad_l1_step(f: FilterStep) -> Tensor:
    """sum |g| / n over the filter's n weights (size-normalized L1 norm of its gradient)."""
    return f.mean(lambda g, w: ops.abs(g))


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
