"""Saliency from the gradients of the feature maps, tapped inside the train step's backward pass.

The source of every criterion declared with
:class:`~kerasprune.importance.gradients.FeatureGradients` (``mean_gradient`` of Liu and Wu
(2019), ``taylor``, and any registered by a user), computed from the training steps of
``fit`` instead of a separate pass over data: each observed feature map ``x`` (where
:class:`~kerasprune.importance.observe.ObservationPlan` observes it: the tensor the next
layers read) and its per-example gradient are handed to the criterion's own reduction as a
:class:`~kerasprune.importance.gradients.FeatureMapStep` (the formulas live in
:mod:`kerasprune.importance.gradients`, where :func:`kerasprune.score` runs the same
reduction over batches of data), and the per-channel sums over the batch's examples are
averaged over the examples of the epoch.

**How, without a second pass.** At ``install`` the operation that produces each observed
tensor gets its ``call`` wrapped so that the tensor passes through an identity with a
custom gradient. In the backward pass of the compiled train step, that gradient function
receives ``dL/dx`` for the whole batch, reduces it to per-channel sums of the per-example
values (for the built-in criteria a spatial mean, a gather, an absolute value and a sum
over the batch: a few element-wise operations per feature map) and writes them into a
per-step buffer; the
optimizer hook then adds the buffer of each *applied* step into the accumulators. The
forward pass is unchanged and no gradient is computed twice.

**Per backend.** The tap differs, the reduction is the same (``keras.ops``):

- ``tensorflow``: the identity is a ``tf.custom_gradient`` whose gradient function writes
  the step's sums into per-step buffer variables; the optimizer hook adds them up.
- ``torch``: the train step runs eagerly; the tap registers a tensor hook
  (``Tensor.register_hook``) on the feature map, which receives ``dL/dx`` during
  ``loss.backward()`` and keeps the step's sums until the optimizer hook adds them.
- ``jax``: Keras differentiates its stateless train step with ``jax.value_and_grad``
  over the trainable values only, and nothing a backward pass writes survives it. So the
  sums leave the backward pass *as a gradient*: the tap is a ``jax.custom_vjp`` identity
  of the feature map and of one extra zero input per observed tensor (``(width,)``), whose
  cotangent it defines as the step's per-channel sums. The callback appends those zero
  inputs to the trainable values the train step differentiates (wrapping the model's
  ``train_step`` and ``compute_loss_and_updates``) and takes their gradients back out in
  the optimizer's ``stateless_apply`` before the optimizer sees the gradients; the model
  and the optimizer never hold an extra variable. A model whose ``train_step`` does not
  follow Keras's stateless JAX signature, or with Flax NNX enabled, is refused.

**Scale.** The training loss is a mean over the batch (Keras's default reduction), so
``dL/dx_m`` is ``1/B`` of example ``m``'s own gradient: the gradient is multiplied by the
global batch size ``B`` before the reduction (under ``MirroredStrategy``, where each
replica's loss is scaled by 1/replicas, by the local batch size times the replicas). Under
mixed precision it is divided by the step's loss scale there too (the reduction may be any
function of the gradient), and a step the ``LossScaleOptimizer`` skips for non-finite
gradients is not counted. Sample and class weights act through the loss,
as in :func:`kerasprune.score`.

**Training mode.** The gradients are those of the training step: BatchNormalization uses
the batch's statistics (so examples are not independent as they are in
:func:`kerasprune.score`, which runs in inference mode) and dropout is on. With neither,
the epoch's result equals ``kerasprune.score(model, criterion, data=...)`` over the same
batches with the weights held fixed.

**Limits** (checked when built, so at ``on_train_begin``): each observed tensor must be
produced by an operation used once in the model (a shared layer's calls cannot be told
apart), and some trainable weight must lie upstream of it (otherwise the train step never
computes its gradient).

References:

- Liu and Wu (2019), mean gradient and hierarchical global pruning: Congcong Liu and
  Huaming Wu, "Channel pruning based on mean gradient for accelerating Convolutional
  Neural Networks", Signal Processing 156, 84-91, 2019; doi:10.1016/j.sigpro.2018.10.019.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import keras
import numpy as np
from keras import ops

from kerasprune.backend import lazy_tensorflow
from kerasprune.callbacks.base import Accumulators, CallbackError, SaliencySource, replica_context
from kerasprune.errors import ImportanceError
from kerasprune.graph.groups import ChannelGroup, PruningGraph
from kerasprune.graph.keras_graph import iter_nodes, producer, upstream_tensors
from kerasprune.importance.base import (
    WEIGHT_GRADIENTS,
    Criterion,
    ScoringContext,
    accumulable_criteria,
)
from kerasprune.importance.gradients import FeatureMapStep, feature_step_sums, tf_variable
from kerasprune.importance.observe import ObservationPlan, Site

# imported at the first use, on the TensorFlow backend only
tf = lazy_tensorflow("the kerasprune callbacks")

__all__ = ["FeatureMapSaliency"]


def _producer(kt) -> Tuple[object, int]:
    """The operation that makes KerasTensor ``kt`` and the index of ``kt`` among its outputs."""
    op, _, index = producer(kt)
    if op is None:
        raise CallbackError(f"cannot find the operation that produces tensor {kt.name!r}")
    return op, index


def _trainable_upstream(kt) -> bool:
    """Whether some trainable weight is used on the way from the inputs to ``kt``."""
    seen = set()
    stack = [kt]
    while stack:
        t = stack.pop()
        op, node_index, _ = producer(t)
        if op is None:
            continue
        if getattr(op, "trainable_weights", None):
            return True
        key = (id(op), node_index)
        if key in seen:
            continue
        seen.add(key)
        stack.extend(upstream_tensors(t))
    return False


class _Point:
    """One observed tensor: who makes it, the groups' sites on it, its buffer and sums."""

    def __init__(
        self, index: int, op: object, output: int, sites: List[Tuple[str, Site]], store: Accumulators
    ) -> None:
        self.index = index
        self.op = op
        self.output = output
        self.sites = sites
        self.width = sum(s.size for _, s in sites)
        # the step's sums until the optimizer hook adds them: a buffer variable on
        # TensorFlow, a tensor of the step elsewhere (set by the tap)
        self.pending = store.zeros([self.width], f"kp_fm_pending_{index}") if store.on_tensorflow else None
        self.acc = store.zeros([self.width], f"kp_fm_sums_{index}")


class FeatureMapSaliency(SaliencySource):
    """Feature-map gradient saliency of ``groups`` (see the module documentation).

    Args:
        criterion: a registered criterion declared with
            :class:`~kerasprune.importance.gradients.FeatureGradients`.
        model: the model being trained (functional or Sequential).
        graph: its :func:`~kerasprune.analyze` result.
        groups: the groups to score.
        mirrored: the model trains under ``MirroredStrategy`` (variables are made in its
            scope by the caller).
        store: where the accumulators live (default: made for the model's optimizer).

    Raises:
        CallbackError: a group is never observed as a top-level feature map (it lives
            inside a nested model or a composite layer: kerasprune.score observes it), an observed
            tensor comes from a shared operation, or no trainable weight is upstream of it.
    """

    def __init__(
        self,
        criterion: Criterion,
        model: keras.Model,
        graph: PruningGraph,
        groups: List[ChannelGroup],
        mirrored: bool,
        store: Optional[Accumulators] = None,
    ) -> None:
        if store is None:
            opt = model.optimizer
            store = Accumulators(getattr(opt, "inner_optimizer", None) or opt)
        self.store = store
        self.model = model
        self._reduce = criterion.accumulate.reduce
        criterion = criterion.name
        self.criterion = criterion
        self.groups = list(groups)
        self.mirrored = mirrored
        # the gradients the taps receive are of the scaled loss under mixed precision
        optimizer = getattr(model, "optimizer", None)
        scaled = getattr(optimizer, "inner_optimizer", None) is not None
        self._scaler = optimizer if scaled else None
        ctx = ScoringContext(model=model, graph=graph, groups=self.groups, criterion=criterion)
        try:
            self.plan = ObservationPlan(ctx)
        except ImportanceError as err:
            raise CallbackError(str(err)) from err
        if self.plan.nested:
            raise CallbackError(
                f"criterion {criterion!r} would observe groups inside a nested model or a "
                "composite layer, which the train step does not expose; score them with "
                "kerasprune.score, use a weight-gradient criterion or exclude those groups"
            )
        calls: Dict[int, int] = {}
        for node in iter_nodes(self.plan.fn):
            calls[id(node.operation)] = calls.get(id(node.operation), 0) + 1
        on_tensor: Dict[int, List[Tuple[str, Site]]] = {}
        for name, sites in self.plan.sites.items():
            for s in sites:
                on_tensor.setdefault(s.tensor, []).append((name, s))
        self._points: List[_Point] = []
        for i, kt in enumerate(self.plan.tensors):
            op, output = _producer(kt)
            groups_here = sorted({name for name, _ in on_tensor[i]})
            what = f"the feature map of group(s) {groups_here} (output of '{getattr(op, 'name', op)}')"
            if calls.get(id(op), 0) != 1:
                raise CallbackError(
                    f"criterion {criterion!r} observes {what}, but that operation is called "
                    f"{calls.get(id(op), 0)} times in the model, so its calls cannot be told apart; "
                    "use a weight-gradient criterion "
                    f"({', '.join(accumulable_criteria(WEIGHT_GRADIENTS))}) or exclude those groups"
                )
            if not _trainable_upstream(kt):
                raise CallbackError(
                    f"criterion {criterion!r} observes {what}, but no trainable weight lies "
                    "before it, so the train step never computes its gradient; make an earlier "
                    "layer trainable or exclude those groups"
                )
            self._points.append(_Point(i, op, output, on_tensor[i], store))
        if store.on_tensorflow:
            self._count_pending = store.zeros((), "kp_fm_pending_count")
        self._count = store.zeros((), "kp_fm_count")
        self._patched: List[Tuple[object, bool, object]] = []
        self._trainer_patched: List[Tuple[object, str, bool, object]] = []
        # per step, on JAX and PyTorch: what the taps hand to the optimizer hook
        self._extra: Optional[List[object]] = None  # JAX: the zero inputs, traced
        self._loss_scale: object = None  # JAX: the step's loss scale, traced
        self._pending: Optional[List[object]] = None  # JAX: the sums, as gradients
        self._pending_count: object = 0  # examples of the step

    # -- the tap ------------------------------------------------------------------------

    def _record(self, point: _Point, x: tf.Tensor, dy: tf.Tensor) -> tf.Operation:
        """Write the batch's per-channel sums of per-example values into the point's buffer."""
        batch = tf.cast(tf.shape(dy)[0], tf.float64)
        replica = replica_context(self.mirrored)
        replicas = float(replica.num_replicas_in_sync) if replica is not None else 1.0
        # dy is 1/(B * replicas) of each example's own gradient (times the loss scale)
        scale = tf.cast(batch, tf.float32) * replicas
        if self._scaler is not None:  # the scale this step's loss was multiplied by
            opt = self._scaler
            loss_scale = tf_variable(opt.dynamic_scale) if opt.built else opt.initial_scale
            scale = scale / tf.cast(tf.convert_to_tensor(loss_scale), tf.float32)
        g = tf.cast(dy, tf.float32) * scale
        view = FeatureMapStep(tf.cast(x, tf.float32), g, [s for _, s in point.sites])
        updates = [point.pending.assign(feature_step_sums(view, self._reduce))]
        if point.index == 0:
            updates.append(self._count_pending.assign(batch))
        return tf.group(updates)

    def _sums(self, point: _Point, x: object, dy: object, loss_scale: object) -> object:
        """The batch's per-channel sums of per-example values (``keras.ops``; JAX, PyTorch)."""
        batch = ops.shape(dy)[0]
        # dy is 1/B of each example's own gradient, times the loss scale
        g = ops.cast(dy, "float32") * ops.cast(batch, "float32")
        if loss_scale is not None:
            g = g / ops.cast(loss_scale, "float32")
        view = FeatureMapStep(ops.cast(x, "float32"), g, [s for _, s in point.sites])
        return feature_step_sums(view, self._reduce)

    def _loss_scale_now(self) -> object:
        """The loss scale of this step's loss (PyTorch: read from the optimizer), or None."""
        if self._scaler is None:
            return None
        return ops.convert_to_tensor(self._scaler.dynamic_scale) if self._scaler.built else self._scaler.initial_scale

    def _tap_torch(self, point: _Point, t: object) -> object:
        import torch

        if not (isinstance(t, torch.Tensor) and t.requires_grad and torch.is_grad_enabled()):
            return t
        x = t.detach()

        def hook(dy):
            with torch.no_grad():
                point.pending = self._sums(point, x, dy.detach(), self._loss_scale_now())
                if point.index == 0:
                    self._pending_count = int(dy.shape[0])
            return None

        t.register_hook(hook)
        return t

    def _tap_jax(self, point: _Point, t: object) -> object:
        if self._extra is None:  # not inside the wrapped train step (predict, evaluate)
            return t
        import jax

        source = self

        @jax.custom_vjp
        def identity(x, extra, scale):
            return x

        def forward(x, extra, scale):
            return x, (x, extra, scale)

        def backward(residual, dy):
            x, extra, scale = residual
            sums = source._sums(point, x, dy, None if source._scaler is None else scale)
            return dy, ops.cast(sums, extra.dtype), ops.zeros_like(scale)

        identity.defvjp(forward, backward)
        scale = self._loss_scale if self._loss_scale is not None else ops.ones((), "float32")
        return identity(t, self._extra[point.index], scale)

    def _tap(self, point: _Point, t: object) -> object:
        if self.store.backend == "torch":
            return self._tap_torch(point, t)
        if self.store.backend == "jax":
            return self._tap_jax(point, t)
        return self._tap_tf(point, t)

    def _tap_tf(self, point: _Point, t: tf.Tensor) -> tf.Tensor:
        @tf.custom_gradient
        def identity(x):
            def grad(dy):
                with tf.control_dependencies([self._record(point, x, dy)]):
                    return tf.identity(dy)

            return tf.identity(x), grad

        return identity(t)

    def install(self) -> None:
        """Wrap the ``call`` of every operation that produces an observed tensor."""
        self.uninstall()
        by_op: Dict[int, List[_Point]] = {}
        for p in self._points:
            by_op.setdefault(id(p.op), []).append(p)
        for points in by_op.values():
            op = points[0].op
            original = op.call
            while getattr(original, "_kerasprune_tap", False):  # left by an interrupted fit
                original = original._kerasprune_original
            # an instance attribute of the user's own (not the class's method, bound)
            had = "call" in vars(op) and not (
                getattr(original, "__self__", None) is op
                and getattr(original, "__func__", None) is getattr(type(op), "call", None)
            )
            outputs_tapped = {p.output: p for p in points}

            def tapped(*args, _original=original, _tapped=outputs_tapped, **kwargs):
                outputs = _original(*args, **kwargs)
                flat = keras.tree.flatten(outputs)
                for k, p in _tapped.items():
                    flat[k] = self._tap(p, flat[k])
                return keras.tree.pack_sequence_as(outputs, flat)

            tapped._kerasprune_tap = True
            tapped._kerasprune_original = original
            object.__setattr__(op, "call", tapped)
            self._patched.append((op, had, original))
        if self.store.backend == "jax":
            self._install_jax()

    def _patch(self, obj: object, name: str, make) -> None:
        """Set ``obj.name`` to ``make(original)`` (an instance attribute), replacing one
        left by an interrupted fit instead of stacking on it."""
        original = getattr(obj, name)
        while getattr(original, "_kerasprune_tap", False):
            original = original._kerasprune_original
        had = name in vars(obj) and not (
            getattr(original, "__self__", None) is obj
            and getattr(original, "__func__", None) is getattr(type(obj), name, None)
        )
        wrapped = make(original)
        wrapped._kerasprune_tap = True
        wrapped._kerasprune_original = original
        object.__setattr__(obj, name, wrapped)
        self._trainer_patched.append((obj, name, had, original))

    def _install_jax(self) -> None:
        """Carry one zero input per observed tensor through the stateless JAX train step
        (see the module documentation)."""
        from keras.src.backend.jax.trainer import JAXTrainer

        model = self.model
        if keras.config.is_nnx_enabled():
            raise CallbackError(
                f"criterion {self.criterion!r} cannot tap the feature maps with Flax NNX enabled; "
                f"use a weight-gradient criterion ({', '.join(accumulable_criteria(WEIGHT_GRADIENTS))})"
            )
        if getattr(type(model), "train_step", None) is not JAXTrainer.train_step or getattr(
            type(model), "compute_loss_and_updates", None
        ) is not JAXTrainer.compute_loss_and_updates:
            raise CallbackError(
                f"criterion {self.criterion!r} needs Keras's own JAX train_step, and model "
                f"'{model.name}' overrides it; use a weight-gradient criterion "
                f"({', '.join(accumulable_criteria(WEIGHT_GRADIENTS))})"
            )
        n = len(model.trainable_variables)
        k = len(self._points)
        widths = [p.width for p in self._points]
        optimizer = model.optimizer
        scaler = self._scaler
        source = self

        def make_train_step(original):
            def train_step(state, data):
                trainable, non_trainable, optimizer_values, metrics = state
                extra = [ops.zeros((w,), "float32") for w in widths]
                logs, new_state = original((list(trainable) + extra, non_trainable, optimizer_values, metrics), data)
                new_trainable, new_non_trainable, new_optimizer, new_metrics = new_state
                return logs, (list(new_trainable)[:n], new_non_trainable, new_optimizer, new_metrics)

            return train_step

        def make_loss(original):
            def compute_loss_and_updates(trainable_variables, *args, **kwargs):
                if len(trainable_variables) != n + k:
                    return original(trainable_variables, *args, **kwargs)
                source._extra = list(trainable_variables[n:])
                source._loss_scale = None
                x = args[2] if len(args) > 2 else kwargs.get("x")
                source._pending_count = int(next(a for a in keras.tree.flatten(x) if a is not None).shape[0])
                values = kwargs.get("optimizer_variables")
                if scaler is not None and values is not None:
                    at = [i for i, v in enumerate(optimizer.variables) if v is scaler.dynamic_scale]
                    source._loss_scale = values[at[0]] if at else None
                try:
                    return original(list(trainable_variables[:n]), *args, **kwargs)
                finally:
                    source._extra = None
                    source._loss_scale = None

            return compute_loss_and_updates

        def make_apply(original):
            def stateless_apply(optimizer_variables, grads, trainable_variables):
                if len(grads) != n + k:
                    return original(optimizer_variables, grads, trainable_variables)
                source._pending = list(grads[n:])
                try:
                    new_trainable, new_optimizer = original(
                        optimizer_variables, list(grads[:n]), list(trainable_variables[:n])
                    )
                finally:
                    source._pending = None
                return list(new_trainable) + list(trainable_variables[n:]), new_optimizer

            return stateless_apply

        self._patch(model, "train_step", make_train_step)
        self._patch(model, "compute_loss_and_updates", make_loss)
        self._patch(optimizer, "stateless_apply", make_apply)

    def uninstall(self) -> None:
        """Give every wrapped operation its own ``call`` back (and on JAX the model and the
        optimizer their own step methods)."""
        for op, had, original in reversed(self._patched):
            if had:
                object.__setattr__(op, "call", original)
            elif "call" in vars(op):
                object.__delattr__(op, "call")
        self._patched = []
        for obj, name, had, original in reversed(self._trainer_patched):
            if had:
                object.__setattr__(obj, name, original)
            elif name in vars(obj):
                object.__delattr__(obj, name)
        self._trainer_patched = []

    # -- per step -----------------------------------------------------------------------

    def step(self, grads: Sequence, variables: Sequence, loss_scale: Optional[object]) -> None:
        """Add the step's buffers (written by the taps of its backward pass, already divided
        by the loss scale), then clear them."""
        if self.store.backend == "jax":
            if self._pending is None:  # an apply outside the wrapped train step
                return
            for p, v in zip(self._points, self._pending):
                p.acc.assign_add(ops.cast(v, self.store.dtype))
            self._count.assign_add(ops.cast(self._pending_count, self.store.dtype))
            return
        if self.store.backend == "torch":
            count = self._pending_count
            for p in self._points:
                if p.pending is not None:
                    p.acc.assign_add(ops.cast(p.pending, self.store.dtype))
                    p.pending = None
            self._count.assign_add(ops.cast(count, self.store.dtype))
            self._pending_count = 0
            return
        values = [p.pending.read_value() for p in self._points]
        count = self._count_pending.read_value()
        replica = replica_context(self.mirrored)
        if replica is not None:
            reduced = replica.all_reduce(tf.distribute.ReduceOp.SUM, values + [count])
            values, count = list(reduced[:-1]), reduced[-1]
        for p, v in zip(self._points, values):
            p.acc.assign_add(v)
            p.pending.assign(tf.zeros_like(v))
        self._count.assign_add(count)
        self._count_pending.assign(tf.zeros_like(count))

    # -- reading ------------------------------------------------------------------------

    def read(self) -> Tuple[Dict[str, np.ndarray], float]:
        """Per group, the sums over examples (mean over its observed points) and the examples."""
        flat = np.zeros(self.plan.width)
        for p in self._points:
            values = np.asarray(self.store.read(p.acc), dtype=np.float64)
            offset = 0
            for _, s in p.sites:
                flat[s.offset : s.offset + s.size] = values[offset : offset + s.size]
                offset += s.size
        return self.plan.combine(flat), float(self.store.read(self._count))

    def reset(self) -> None:
        """Zero the sums and the example count."""
        for p in self._points:
            self.store.reset(p.acc)
        self.store.reset(self._count)
