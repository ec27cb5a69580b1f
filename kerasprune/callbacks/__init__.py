"""Keras callbacks for pruning inside ``model.fit`` (the GSFP of Xu et al. (2018)).

::

    import kerasprune as kp
    from kerasprune.callbacks import SaliencyAccumulator, SoftFilterPruning, strip

    soft = SoftFilterPruning(ratio=0.5, criterion="gsfp", scope="global")
    model.fit(x, y, epochs=10, callbacks=[soft])   # masks the lowest 50% at each epoch end
    thin = strip(model)                              # removes the channels still masked

- :class:`SaliencyAccumulator`: per-channel gradient saliency added up over the training
  steps of each epoch, reusing the train step's own gradients (of the weights, or of the
  feature maps, tapped inside the step's backward pass), for every criterion of the
  registry that declares an accumulation
  (:func:`kerasprune.importance.accumulable_criteria`);
- :class:`SoftFilterPruning`: at each epoch end, masks the lowest channels (zeroes them
  everywhere they live); masked channels keep training;
- :func:`strip`: the thin model without the channels that carry nothing.

References:

- Xu et al. (2018), globally soft filter pruning (GSFP): Ke Xu, Xiaoyun Wang, Qun Jia,
  Jianjing An and Dong Wang, "Globally Soft Filter Pruning For Efficient Convolutional
  Neural Networks", submitted to ICLR 2019, OpenReview id H1fevoAcKX, 2018.
"""

from kerasprune.callbacks.saliency import SOURCES, CallbackError, SaliencyAccumulator
from kerasprune.callbacks.soft import SoftFilterPruning
from kerasprune.callbacks.strip import dead_channels, strip

__all__ = [
    "SaliencyAccumulator",
    "SoftFilterPruning",
    "strip",
    "dead_channels",
    "CallbackError",
    "SOURCES",
]
