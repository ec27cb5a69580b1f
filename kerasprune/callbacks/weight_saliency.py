"""Saliency from the gradients of the filters' weights, as the train step computes them.

Per step and per producer layer with ``N`` held channels, each filter having ``n``
weights ``w`` with gradients ``g``:

- ``gsfp`` (Xu et al. (2018), Eq. 5): ``G_n = sum|g| / n``, ``W_n = sqrt(sum w^2 / n)``,
  ``S_n = (N*G_n / sum_j G_j) * (N*W_n / sum_j W_j)`` (a layer whose sums are zero
  contributes 0); summed over the steps of an epoch it is Eq. 6's cumulative saliency;
- ``taylor_weights``: ``|sum w*g|`` over the filter (first-order Taylor on weights);
- ``grad_l1``: ``G_n = sum|g| / n``.

The reduction to one number per channel is
:class:`~kerasprune.importance.gradients.FilterBlocks`, shared with the ``gsfp``
criterion of :func:`kerasprune.score`. A group produced by several layers (a residual group)
gets per channel the mean of its producers' values (as
:func:`kerasprune.importance.combine_layers`).

On every backend (TensorFlow, JAX, PyTorch) the step runs inside the optimizer's ``apply``;
the accumulators are those of :class:`~kerasprune.callbacks.base.Accumulators` (on JAX,
optimizer variables, so that the stateless train step carries them).

Under ``tf.distribute.MirroredStrategy`` each replica holds the gradient of its share of
the global batch (Keras scales the loss by 1/replicas); the step all-reduces (sums) the
gradients of the scored kernels first, so every replica computes the saliency of the
global batch.

References:

- Xu et al. (2018), globally soft filter pruning (GSFP): Ke Xu, Xiaoyun Wang, Qun Jia,
  Jianjing An and Dong Wang, "Globally Soft Filter Pruning For Efficient Convolutional
  Neural Networks", submitted to ICLR 2019, OpenReview id H1fevoAcKX, 2018.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import keras
import numpy as np
from keras import ops

from kerasprune.backend import lazy_tensorflow
from kerasprune.callbacks.base import Accumulators, CallbackError, SaliencySource, replica_context
from kerasprune.graph.groups import ChannelGroup, PruningGraph
from kerasprune.importance.base import Criterion
from kerasprune.importance.filters import combine_layers, filter_weights
from kerasprune.importance.gradients import FilterBlocks, filter_step_values, tf_variable

# imported at the first use, on the TensorFlow backend only
tf = lazy_tensorflow("the kerasprune callbacks")

__all__ = ["WeightGradientSaliency"]


class _Producer:
    """The filters one layer creates for one group, and its accumulator."""

    def __init__(self, group: str, blocks: FilterBlocks, name: str, store: Accumulators) -> None:
        self.group = group
        self.blocks = blocks
        self.acc = store.zeros([blocks.size], name)


class WeightGradientSaliency(SaliencySource):
    """Weight-gradient saliency of ``groups`` (see the module documentation).

    Args:
        criterion: a registered criterion declared with
            :class:`~kerasprune.importance.gradients.WeightGradients`.
        model: the model being trained.
        graph: its :func:`~kerasprune.analyze` result.
        groups: the groups to score.
        mirrored: the model trains under ``MirroredStrategy`` (variables are made in its
            scope by the caller).
        store: where the accumulators live (default: made for the model's optimizer).

    Raises:
        CallbackError: a group has no filter weights, or they are not trainable.
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
            optimizer = model.optimizer
            store = Accumulators(getattr(optimizer, "inner_optimizer", None) or optimizer)
        self.store = store
        self.criterion = criterion.name
        self._reduce = criterion.accumulate.reduce
        self.groups = list(groups)
        self.mirrored = mirrored
        trainable = list(model.trainable_weights)
        index = {id(v): i for i, v in enumerate(trainable)}
        by_path = {getattr(v, "path", None): i for i, v in enumerate(trainable)}
        self._producers: List[_Producer] = []
        for group in self.groups:
            filters = filter_weights(graph, group)
            if not filters:
                raise CallbackError(
                    f"group {group.name!r} has no filter weights (a kernel its producer "
                    "creates) to take gradients of; leave it out with exclude="
                    f"[{group.name!r}]"
                )
            for cw in filters:

                def var_index(v, _layer=cw.layer, _group=group.name) -> int:
                    i = index.get(id(v), by_path.get(getattr(v, "path", None)))
                    if i is None:
                        raise CallbackError(
                            f"the filters of layer '{_layer}' (group {_group!r}) are not "
                            "trainable, so the train step computes no gradient for them; "
                            f"make the layer trainable or leave the group out with "
                            f"exclude=[{_group!r}]"
                        )
                    return i

                name = f"kp_saliency_{len(self._producers)}"
                self._producers.append(_Producer(group.name, FilterBlocks(cw, var_index), name, store))
        self._trainable = trainable

    def _gradients(self, grads: Sequence, variables: Sequence) -> Dict[int, tf.Tensor]:
        """id(variable) -> the step's gradient (all-reduced over replicas when mirrored)."""
        by_id = {id(v): g for g, v in zip(grads, variables)}
        replica = replica_context(self.mirrored)
        if replica is not None:
            # each replica holds the gradient of its share of the batch: their sum is the
            # step's gradient, as the optimizer's own all-reduce computes it
            needed = sorted({i for p in self._producers for i in p.blocks.var_indices})
            local = []
            for i in needed:
                g = by_id.get(id(self._trainable[i]))
                if isinstance(g, tf.IndexedSlices):
                    g = tf.convert_to_tensor(g)
                local.append(tf.zeros(self._trainable[i].shape, tf.float32) if g is None else tf.cast(g, tf.float32))
            summed = replica.all_reduce(tf.distribute.ReduceOp.SUM, local)
            for i, g in zip(needed, summed):
                by_id[id(self._trainable[i])] = g
        return by_id

    def step(self, grads: Sequence, variables: Sequence, loss_scale: Optional[object]) -> None:
        """Add one step's saliency into the accumulators (the gradients are unscaled)."""
        if not self.store.on_tensorflow:
            self._step_ops(grads, variables)
            return
        by_id = self._gradients(grads, variables)
        flat_g: Dict[int, tf.Tensor] = {}
        flat_w: Dict[int, tf.Tensor] = {}

        def flats(i: int) -> Tuple[tf.Tensor, tf.Tensor]:
            if i not in flat_g:
                var = self._trainable[i]
                g = by_id.get(id(var))
                w = tf.reshape(tf.cast(tf.convert_to_tensor(tf_variable(var)), tf.float32), [-1])
                if g is None:
                    g = tf.zeros_like(w)
                else:
                    if isinstance(g, tf.IndexedSlices):
                        g = tf.convert_to_tensor(g)
                    g = tf.reshape(tf.cast(g, tf.float32), [-1])
                flat_g[i], flat_w[i] = g, w
            return flat_g[i], flat_w[i]

        blocks = [p.blocks for p in self._producers]
        values = filter_step_values(
            blocks, self._reduce, lambda i: flats(i)[0], lambda i: flats(i)[1]
        )
        for p, value in zip(self._producers, values):
            p.acc.assign_add(tf.cast(value, tf.float64))

    def _step_ops(self, grads: Sequence, variables: Sequence) -> None:
        """:meth:`step` in ``keras.ops`` (JAX, PyTorch): inside the stateless scope of a JAX
        step a variable's ``value`` is the step's own, and ``assign_add`` is recorded there."""
        by_id = {id(v): g for g, v in zip(grads, variables)}
        flat_g: Dict[int, object] = {}
        flat_w: Dict[int, object] = {}

        def flats(i: int) -> Tuple[object, object]:
            if i not in flat_g:
                var = self._trainable[i]
                w = ops.reshape(ops.cast(var.value, "float32"), (-1,))
                g = by_id.get(id(var))
                flat_g[i] = ops.zeros_like(w) if g is None else ops.reshape(ops.cast(g, "float32"), (-1,))
                flat_w[i] = w
            return flat_g[i], flat_w[i]

        blocks = [p.blocks for p in self._producers]
        values = filter_step_values(blocks, self._reduce, lambda i: flats(i)[0], lambda i: flats(i)[1])
        for p, value in zip(self._producers, values):
            p.acc.assign_add(ops.cast(value, self.store.dtype))

    def read(self) -> Tuple[Dict[str, np.ndarray], None]:
        """Per group, the sums over steps (the mean over its producers); no averaging."""
        per_group: Dict[str, List[np.ndarray]] = {g.name: [] for g in self.groups}
        for p in self._producers:
            values = np.asarray(self.store.read(p.acc), dtype=np.float64)
            per_group[p.group].append(np.where(p.blocks.held, values, np.nan))
        return {name: np.nan_to_num(combine_layers(parts), nan=0.0) for name, parts in per_group.items()}, None

    def reset(self) -> None:
        """Zero every producer's accumulator."""
        for p in self._producers:
            self.store.reset(p.acc)
