"""Importance criteria: one score per channel of every prunable group; low = prune first.

::

    import kerasprune as kp
    from kerasprune.importance import score

    scores = score(model)                                    # AAWS, layer-mean normalized
    scores = score(model, "mean_gradient", data=train_ds)    # Liu and Wu (2019), (x, y) batches
    scores = score(model, "gsfp", data=(x, y), max_batches=100, normalization="none")

Criteria (``available_criteria()``): ``aaws``, ``l1``, ``l2``, ``bn_gamma``, ``aaws_out``,
``aaws_dense_out`` (weights); ``mean_response``, ``std_response``, ``apoz`` (activations
over data); ``mean_gradient``, ``taylor``, ``gsfp``, ``taylor_weights``, ``grad_l1``
(gradients over labelled data). Add your own with :func:`register_criterion`.

The gradient criteria are also *accumulable* (``accumulable_criteria()``): each declares,
as its ``accumulate`` (a :class:`WeightGradients` or :class:`FeatureGradients`), the
per-step reduction that :func:`score` runs over batches of data and
:class:`~kerasprune.callbacks.SaliencyAccumulator` runs inside the training steps of
``model.fit``. A criterion registered with ``accumulate=`` is accumulable too.

Documented choices:

- a group made by several layers (a residual group: a block's last conv and its
  shortcut) gets, per channel, the mean of its producers' scores;
- a group observed at several feature maps gets the mean over them; the feature map is
  the one the next conv/Dense reads (after BatchNormalization and activation);
- ``apoz`` scores ``1 - APoZ`` (mostly-zero channels score low);
- ``bn_gamma`` on a group without BatchNormalization is an error naming the group
  (leave it out with ``exclude=``);
- ``aaws_dense_out`` scores Dense-made groups by their outgoing rows (the original GGP
  notebooks), ``aaws_out`` scores every group by its outgoing weights.

References:

- Liu and Wu (2019), mean gradient and hierarchical global pruning: Congcong Liu and
  Huaming Wu, "Channel pruning based on mean gradient for accelerating Convolutional
  Neural Networks", Signal Processing 156, 84-91, 2019; doi:10.1016/j.sigpro.2018.10.019.
"""

from kerasprune.errors import ImportanceError
from kerasprune.importance.base import (
    FEATURE_GRADIENTS,
    WEIGHT_GRADIENTS,
    Accumulation,
    Criterion,
    ScoringContext,
    accumulable_criteria,
    available_criteria,
    get_criterion,
    raw_scores,
    register_criterion,
    score,
)
from kerasprune.importance.filters import ChannelWeights, combine_layers
from kerasprune.importance.normalize import available_normalizations, normalize, relative_norm

# the built-in criteria register themselves on import, in this order
from kerasprune.importance import weights as _weights  # noqa: E402,F401  isort: skip
from kerasprune.importance import activations as _activations  # noqa: E402,F401  isort: skip
from kerasprune.importance import gradients as _gradients  # noqa: E402,F401  isort: skip
from kerasprune.importance.gradients import (  # noqa: E402  isort: skip
    FeatureGradients,
    FeatureMapStep,
    FilterStep,
    WeightGradients,
)

__all__ = [
    "score",
    "raw_scores",
    "normalize",
    "available_criteria",
    "accumulable_criteria",
    "available_normalizations",
    "register_criterion",
    "get_criterion",
    "Criterion",
    "Accumulation",
    "WeightGradients",
    "FeatureGradients",
    "FilterStep",
    "FeatureMapStep",
    "WEIGHT_GRADIENTS",
    "FEATURE_GRADIENTS",
    "relative_norm",
    "ScoringContext",
    "ChannelWeights",
    "combine_layers",
    "ImportanceError",
]
