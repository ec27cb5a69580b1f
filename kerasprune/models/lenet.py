"""LeNet-5 as used by the pruning literature on MNIST (the Caffe variant).

Two 5x5 convolutions with 20 and 50 filters, each followed by 2x2 max pooling, a
500-unit ReLU layer and a softmax classifier: 431,080 parameters for 28x28x1 inputs
and 10 classes, the "431K" LeNet-5 of Salama et al. (2019) and Xu et al. (2018)::

    conv1  5*5*1*20  + 20   =     520
    conv2  5*5*20*50 + 50   =  25,050
    fc1    4*4*50*500 + 500 = 400,500
    predictions 500*10 + 10 =   5,010

As in Caffe's ``lenet_train_test.prototxt`` the convolutions have no activation of their
own (max pooling follows them directly); ``conv_activation`` adds one.

Layer names: ``conv1``, ``pool1``, ``conv2``, ``pool2``, ``flatten``, ``fc1``,
``predictions``.

References:

- Salama et al. (2019), global normalized-L1 pruning: Abdullah Salama, Oleksiy Ostapenko,
  Tassilo Klein and Moin Nabi, "Pruning at a Glance: Global Neural Pruning for Model
  Compression", arXiv preprint, 2019; arXiv:1912.00200.
- Xu et al. (2018), globally soft filter pruning (GSFP): Ke Xu, Xiaoyun Wang, Qun Jia,
  Jianjing An and Dong Wang, "Globally Soft Filter Pruning For Efficient Convolutional
  Neural Networks", submitted to ICLR 2019, OpenReview id H1fevoAcKX, 2018.
"""

from __future__ import annotations

from typing import Optional, Sequence

import keras

from kerasprune.errors import OptionError

__all__ = ["lenet5"]


def lenet5(
    num_classes: int = 10,
    input_shape: Sequence[int] = (28, 28, 1),
    conv_activation: Optional[str] = None,
) -> keras.Model:
    """Build LeNet-5 (conv 20, conv 50, fc 500, fc ``num_classes``).

    Args:
        num_classes: units of the softmax classifier.
        input_shape: shape of one input image, channels last; at least 16x16 so that
            both valid 5x5 convolutions and poolings leave a feature map.
        conv_activation: activation of the two convolutions; ``None`` (the default)
            keeps them linear as in the Caffe model, ``"relu"`` is a common variant.

    Returns:
        An uncompiled functional ``keras.Model`` named ``lenet5``.

    Raises:
        ValueError: ``num_classes`` is not a positive integer.
    """
    _check_positive("num_classes", num_classes)
    inputs = keras.Input(shape=tuple(input_shape), name="input")
    x = inputs
    for i, filters in enumerate((20, 50), start=1):
        x = keras.layers.Conv2D(
            filters,
            5,
            padding="valid",
            activation=conv_activation,
            kernel_initializer="glorot_uniform",
            name=f"conv{i}",
        )(x)
        x = keras.layers.MaxPooling2D(2, name=f"pool{i}")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(500, activation="relu", kernel_initializer="he_normal", name="fc1")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name="lenet5")


def _check_positive(arg: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise OptionError(f"{arg} must be a positive integer, got {value!r}")
