"""What the saliency callbacks share: their error, their accumulators, and the interface
of a saliency *source* (the part that knows what one training step adds).

A source is built at ``on_train_begin`` for the groups to score, may patch the model
(:meth:`SaliencySource.install`), adds each applied training step into its accumulators
from inside the optimizer's ``apply`` (:meth:`SaliencySource.step`), and is read at epoch
end. Two sources exist, one per accumulation kind of the criterion registry
(:data:`kerasprune.callbacks.saliency.SOURCES`):
:class:`~kerasprune.callbacks.weight_saliency.WeightGradientSaliency` (criteria of the
weights' gradients) and :class:`~kerasprune.callbacks.feature_saliency.FeatureMapSaliency`
(criteria of the feature maps' gradients). A source is made as
``source(criterion, model, graph, groups, mirrored)`` from the registered
:class:`~kerasprune.importance.Criterion`, whose declared reduction it runs at every step.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from kerasprune.backend import lazy_tensorflow
from kerasprune.errors import CallbackError
from kerasprune.graph.groups import ChannelGroup

# imported at the first use: the callbacks run on the TensorFlow backend only (so far)
tf = lazy_tensorflow("the kerasprune callbacks")

__all__ = ["CallbackError", "accumulator", "SaliencySource"]


def accumulator(initial: tf.Tensor, name: str) -> tf.Variable:
    """A non-trainable variable that each replica adds its own steps into.

    Reading it gives the first replica's value: every replica accumulates the same
    all-reduced numbers.
    """
    return tf.Variable(
        initial,
        trainable=False,
        name=name,
        synchronization=tf.VariableSynchronization.ON_READ,
        aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
    )


def replica_context(mirrored: bool) -> Optional[tf.distribute.ReplicaContext]:
    """The replica context when running on several replicas, else None (nothing to reduce)."""
    if not mirrored:
        return None
    replica = tf.distribute.get_replica_context()
    if replica is None or replica.num_replicas_in_sync <= 1:
        return None
    return replica


class SaliencySource:
    """Per-channel saliency of some groups, added up over the applied training steps.

    Attributes:
        groups: the groups this source scores, in order.
    """

    groups: List[ChannelGroup]

    def install(self) -> None:
        """Patch the model where the source needs to (before the train step is traced)."""

    def uninstall(self) -> None:
        """Undo :meth:`install`."""

    def step(self, grads: Sequence, variables: Sequence, loss_scale: Optional[tf.Tensor]) -> None:
        """Add one applied step (traced into the train step, inside ``optimizer.apply``).

        Args:
            grads, variables: what the optimizer was asked to apply (unscaled gradients).
            loss_scale: the loss scale of a ``LossScaleOptimizer`` for this step, else None.
        """
        raise NotImplementedError

    def read(self) -> Tuple[Dict[str, np.ndarray], Optional[float]]:
        """The sums per group (float64, 0 for channels not held) since the last reset,
        and the number of examples they are to be averaged over (None: the sums over the
        steps are the values)."""
        raise NotImplementedError

    def reset(self) -> None:
        """Zero the accumulators."""
        raise NotImplementedError
