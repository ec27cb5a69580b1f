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
``source(criterion, model, graph, groups, mirrored, store)`` from the registered
:class:`~kerasprune.importance.Criterion`, whose declared reduction it runs at every step,
and keeps its accumulators in ``store`` (an :class:`Accumulators`).

**Where the accumulators live, per backend.** The hook runs inside the compiled train
step, so what it adds must be state that the step carries out:

- ``tensorflow``: ``tf.Variable`` s (``ON_READ``, so that each replica of a
  ``MirroredStrategy`` adds its own steps); the ``tf.function`` step writes them.
- ``jax``: Keras runs the train step statelessly (``jax.jit``): it passes the model's,
  the optimizer's and the metrics' variables in and takes their new values out, and a
  variable it does not know keeps none of what the step assigned. The accumulators are
  therefore variables *of the optimizer* (``optimizer.add_variable``, added before the
  step is traced and removed when ``fit`` ends): ``optimizer.stateless_apply`` runs the
  hooked ``apply`` in a stateless scope and returns their new values with its own.
- ``torch``: the train step runs eagerly; the accumulators are optimizer variables too,
  one code path with JAX.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import keras
import numpy as np

from kerasprune.backend import accumulation_dtype, current, lazy_tensorflow
from kerasprune.errors import CallbackError
from kerasprune.graph.groups import ChannelGroup

# imported at the first use, on the TensorFlow backend only
tf = lazy_tensorflow("the kerasprune callbacks")

__all__ = ["CallbackError", "Accumulators", "accumulator", "SaliencySource"]

#: the Keras backends the callbacks run on
CALLBACK_BACKENDS = ("tensorflow", "jax", "torch")


def accumulator(initial: Any, name: str) -> Any:
    """A non-trainable ``tf.Variable`` that each replica adds its own steps into
    (TensorFlow backend).

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


class Accumulators:
    """Makes, reads, zeroes and finally releases the accumulators of one ``fit`` call.

    On TensorFlow they are ``ON_READ`` ``tf.Variable`` s; on JAX and PyTorch they are
    variables of ``optimizer`` (the one whose ``apply`` is hooked), so that the stateless
    JAX train step carries them (see the module documentation).

    Args:
        optimizer: the optimizer whose ``apply`` runs the hook (the inner optimizer of a
            ``LossScaleOptimizer``); unused on TensorFlow.
        owner: what the accumulators belong to (a callback): :meth:`release` and
            :func:`release_from` take out only the owner's, so that several callbacks can
            accumulate in one ``fit``.

    Attributes:
        dtype: the accumulators' float dtype (float64; float32 on JAX without x64).
    """

    def __init__(self, optimizer: Any, owner: Any = None) -> None:
        self.backend = current()
        self.optimizer = optimizer
        self.owner = owner
        self.dtype = "float64" if self.backend == "tensorflow" else accumulation_dtype()

    @property
    def on_tensorflow(self) -> bool:
        """Whether the accumulators are TensorFlow variables."""
        return self.backend == "tensorflow"

    def zeros(self, shape: Sequence[int], name: str, integer: bool = False) -> Any:
        """A new accumulator of ``shape`` holding zeros (an integer one with ``integer``)."""
        dtype = ("int64" if self.dtype == "float64" else "int32") if integer else self.dtype
        if self.on_tensorflow:
            return accumulator(tf.zeros(list(shape), dtype), name)
        v = self.optimizer.add_variable(tuple(shape), initializer="zeros", dtype=dtype, name=name)
        v._kerasprune_owner = id(self.owner if self.owner is not None else self)
        return v

    @staticmethod
    def read(v: Any) -> np.ndarray:
        """The value of accumulator ``v`` as a NumPy array."""
        if hasattr(v, "read_value") and not isinstance(v, keras.Variable):
            return np.asarray(v.read_value().numpy())
        return np.asarray(keras.ops.convert_to_numpy(v.value))

    @staticmethod
    def reset(v: Any) -> None:
        """Zero accumulator ``v`` (outside the train step)."""
        v.assign(np.zeros(tuple(v.shape), np.dtype(str(getattr(v.dtype, "name", v.dtype)))))

    def release(self) -> None:
        """Take the owner's accumulators (those made here, and any its interrupted ``fit``
        left) out of the optimizer's variables again."""
        release_from(self.optimizer, self.owner if self.owner is not None else self)


def release_from(optimizer: Any, owner: Any) -> None:
    """Remove ``owner``'s accumulators from ``optimizer``'s variables (no-op on
    TensorFlow, where none is put there)."""
    if optimizer is None or current() == "tensorflow":
        return
    own = getattr(optimizer, "_variables", None)
    if own is None:
        return
    kept = [v for v in own if getattr(v, "_kerasprune_owner", None) != id(owner)]
    if len(kept) == len(own):
        return
    gone = {id(v) for v in own} - {id(v) for v in kept}
    own[:] = kept
    stored = getattr(getattr(optimizer, "_tracker", None), "stored_ids", {}).get("variables")
    if stored is not None:
        stored.difference_update(gone)


def replica_context(mirrored: bool) -> Optional[Any]:
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

    def step(self, grads: Sequence, variables: Sequence, loss_scale: Optional[Any]) -> None:
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
