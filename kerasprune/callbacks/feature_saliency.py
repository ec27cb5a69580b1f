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

from kerasprune.backend import lazy_tensorflow
from kerasprune.callbacks.base import CallbackError, SaliencySource, accumulator, replica_context
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

# imported at the first use: the callbacks run on the TensorFlow backend only (so far)
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

    def __init__(self, index: int, op: object, output: int, sites: List[Tuple[str, Site]]) -> None:
        self.index = index
        self.op = op
        self.output = output
        self.sites = sites
        self.width = sum(s.size for _, s in sites)
        self.pending = accumulator(tf.zeros([self.width], tf.float64), f"kp_fm_pending_{index}")
        self.acc = accumulator(tf.zeros([self.width], tf.float64), f"kp_fm_sums_{index}")


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
    ) -> None:
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
            self._points.append(_Point(i, op, output, on_tensor[i]))
        self._count_pending = accumulator(tf.constant(0.0, tf.float64), "kp_fm_pending_count")
        self._count = accumulator(tf.constant(0.0, tf.float64), "kp_fm_count")
        self._patched: List[Tuple[object, bool, object]] = []

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

    def _tap(self, point: _Point, t: tf.Tensor) -> tf.Tensor:
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

    def uninstall(self) -> None:
        """Give every wrapped operation its own ``call`` back."""
        for op, had, original in reversed(self._patched):
            if had:
                object.__setattr__(op, "call", original)
            elif "call" in vars(op):
                object.__delattr__(op, "call")
        self._patched = []

    # -- per step -----------------------------------------------------------------------

    def step(self, grads: Sequence, variables: Sequence, loss_scale: Optional[tf.Tensor]) -> None:
        """Add the step's buffers (written by the taps of its backward pass, already divided
        by the loss scale), then clear them."""
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
            values = np.asarray(p.acc.read_value().numpy(), dtype=np.float64)
            offset = 0
            for _, s in p.sites:
                flat[s.offset : s.offset + s.size] = values[offset : offset + s.size]
                offset += s.size
        return self.plan.combine(flat), float(self._count.read_value().numpy())

    def reset(self) -> None:
        """Zero the sums and the example count."""
        for p in self._points:
            p.acc.assign(tf.zeros_like(p.acc))
        self._count.assign(tf.zeros_like(self._count))
