"""VGG-16 with BatchNormalization, as used on CIFAR-10.

Both builders share one topology: the thirteen 3x3 convolutions of VGG-16 in five
blocks (64, 64 | 128, 128 | 256 x3 | 512 x3 | 512 x3), each convolution followed by
BatchNormalization and ReLU, 2x2 max pooling after each block, then a small classifier
instead of the ImageNet one:

    Flatten -> Dense 512 -> BatchNormalization -> ReLU -> Dropout -> Dense classes (softmax)

This is the CIFAR VGG-16 of Li et al. 2017 ("Pruning Filters for Efficient ConvNets")
used by Salama et al. (2019) and Xu et al. (2018): BN after every convolution and after
the first fully connected layer, two fully connected layers in all. It is also the
"VGG-like network with BN" of Wang et al. (2017) (only two fully connected layers before the
softmax), whose 13 convolutions and ``fc1`` hold 4736 neurons.

Choices: the convolutions and ``fc1`` have no bias (BatchNormalization follows each,
its offset plays that role); the pools use ``padding="same"`` so that inputs smaller
than 32x32 (MNIST's 28x28) still reach the classifier; on a 32x32 input this is the
same as valid pooling and the classifier sees 1x1x512 features.

The two builders differ only in layer names and options:

- :func:`vgg16_bn` names layers like ``keras.applications.VGG16``: ``block1_conv1``,
  ``block1_bn1``, ``block1_relu1``, ``block1_pool``, ..., ``fc1``, ``fc1_bn``,
  ``predictions``.
- :func:`vgg_like` uses the names of Table 1 of Wang et al. (2017) (``conv1_1`` ... ``conv5_3``,
  ``fc1``) and takes the 14 widths as an argument, so the pruned structures that table
  reports can be built directly.

References:

- Wang et al. (2017), gradually global pruning (GGP): Zhengtao Wang, Ce Zhu, Zhiqiang Xia,
  Qi Guo and Yipeng Liu, "Towards Thinner Convolutional Neural Networks Through Gradually
  Global Pruning", IEEE International Conference on Image Processing (ICIP), 2017;
  arXiv:1703.09916.
- Salama et al. (2019), global normalized-L1 pruning: Abdullah Salama, Oleksiy Ostapenko,
  Tassilo Klein and Moin Nabi, "Pruning at a Glance: Global Neural Pruning for Model
  Compression", arXiv preprint, 2019; arXiv:1912.00200.
- Xu et al. (2018), globally soft filter pruning (GSFP): Ke Xu, Xiaoyun Wang, Qun Jia,
  Jianjing An and Dong Wang, "Globally Soft Filter Pruning For Efficient Convolutional
  Neural Networks", submitted to ICLR 2019, OpenReview id H1fevoAcKX, 2018.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence, Tuple

import keras

from kerasprune.errors import OptionError

__all__ = ["vgg16_bn", "vgg_like", "VGG_LIKE_LAYERS", "VGG_LIKE_WIDTHS"]

# filters of the convolutions of VGG-16, block by block
_VGG16_BLOCKS: Tuple[Tuple[int, ...], ...] = (
    (64, 64),
    (128, 128),
    (256, 256, 256),
    (512, 512, 512),
    (512, 512, 512),
)

#: The neuron layers of the VGG-like network of Wang et al. (2017), in the order of its Table 1.
VGG_LIKE_LAYERS: Tuple[str, ...] = tuple(
    f"conv{b}_{i}" for b, block in enumerate(_VGG16_BLOCKS, start=1) for i in range(1, len(block) + 1)
) + ("fc1",)

#: Widths of those layers in the unpruned network (Table 1, column "org."): 4736 in all.
VGG_LIKE_WIDTHS: Tuple[int, ...] = tuple(w for block in _VGG16_BLOCKS for w in block) + (512,)


def _check_positive(arg: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise OptionError(f"{arg} must be a positive integer, got {value!r}")


def _check_dropout(value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise OptionError(f"dropout must be a rate in [0, 1), got {value!r}")


def _build(
    *,
    blocks: Sequence[Sequence[int]],
    fc_units: int,
    num_classes: int,
    input_shape: Sequence[int],
    dropout: float,
    conv_name: Callable[[int, int], str],
    bn_name: Callable[[int, int], str],
    relu_name: Callable[[int, int], str],
    pool_name: Callable[[int], str],
    model_name: str,
) -> keras.Model:
    inputs = keras.Input(shape=tuple(input_shape), name="input")
    x = inputs
    for b, block in enumerate(blocks, start=1):
        for i, filters in enumerate(block, start=1):
            x = keras.layers.Conv2D(
                filters,
                3,
                padding="same",
                use_bias=False,
                kernel_initializer="he_normal",
                name=conv_name(b, i),
            )(x)
            x = keras.layers.BatchNormalization(name=bn_name(b, i))(x)
            x = keras.layers.Activation("relu", name=relu_name(b, i))(x)
        x = keras.layers.MaxPooling2D(2, padding="same", name=pool_name(b))(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(fc_units, use_bias=False, kernel_initializer="he_normal", name="fc1")(x)
    x = keras.layers.BatchNormalization(name="fc1_bn")(x)
    x = keras.layers.Activation("relu", name="fc1_relu")(x)
    if dropout > 0:
        x = keras.layers.Dropout(dropout, name="fc1_dropout")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name=model_name)


def vgg16_bn(
    num_classes: int = 10,
    input_shape: Sequence[int] = (32, 32, 3),
    fc_units: int = 512,
    dropout: float = 0.5,
) -> keras.Model:
    """Build the CIFAR VGG-16 with BatchNormalization (13 convolutions, 2 dense layers).

    With the defaults (10 classes, 32x32x3) the model has 14,996,682 parameters, of which
    9,472 are BatchNormalization moving statistics.

    Args:
        num_classes: units of the softmax classifier.
        input_shape: shape of one input image, channels last.
        fc_units: units of the hidden dense layer ``fc1``.
        dropout: rate of the Dropout after ``fc1`` (0 leaves the layer out).

    Returns:
        An uncompiled functional ``keras.Model`` named ``vgg16_bn``.

    Raises:
        ValueError: ``num_classes`` or ``fc_units`` is not a positive integer, or
            ``dropout`` is not in ``[0, 1)``.
    """
    _check_positive("num_classes", num_classes)
    _check_positive("fc_units", fc_units)
    _check_dropout(dropout)
    return _build(
        blocks=_VGG16_BLOCKS,
        fc_units=fc_units,
        num_classes=num_classes,
        input_shape=input_shape,
        dropout=dropout,
        conv_name=lambda b, i: f"block{b}_conv{i}",
        bn_name=lambda b, i: f"block{b}_bn{i}",
        relu_name=lambda b, i: f"block{b}_relu{i}",
        pool_name=lambda b: f"block{b}_pool",
        model_name="vgg16_bn",
    )


def vgg_like(
    num_classes: int = 10,
    input_shape: Sequence[int] = (32, 32, 3),
    widths: Optional[Sequence[int]] = None,
    dropout: float = 0.5,
) -> keras.Model:
    """Build the VGG-like network with BatchNormalization of Wang et al. (2017) (GGP).

    The unpruned network has 4736 neurons (conv filters plus hidden dense units, the
    output layer excluded): ``conv1_1``/``conv1_2`` 64, ``conv2_x`` 128, ``conv3_x`` 256,
    ``conv4_x`` and ``conv5_x`` 512, ``fc1`` 512. The paper does not give its dropout;
    we use 0.5 after ``fc1`` (**choice**).

    Args:
        num_classes: units of the softmax classifier (``predictions``).
        input_shape: shape of one input image, channels last.
        widths: 14 positive widths, for the layers of :data:`VGG_LIKE_LAYERS` in order
            (``conv1_1`` ... ``conv5_3``, ``fc1``); default :data:`VGG_LIKE_WIDTHS`. Pass a
            column of the paper's Table 1 to build one of its pruned structures.
        dropout: rate of the Dropout after ``fc1`` (0 leaves the layer out).

    Returns:
        An uncompiled functional ``keras.Model`` named ``vgg_like``; its layers are
        ``conv1_1`` ... ``conv5_3`` (each with ``_bn`` and ``_relu``), ``pool1`` ...
        ``pool5``, ``flatten``, ``fc1``, ``fc1_bn``, ``fc1_relu``, ``fc1_dropout`` and
        ``predictions``.

    Raises:
        ValueError: ``widths`` does not hold 14 positive integers, ``num_classes`` is not
            a positive integer or ``dropout`` is not in ``[0, 1)``.
    """
    _check_positive("num_classes", num_classes)
    _check_dropout(dropout)
    widths = tuple(VGG_LIKE_WIDTHS if widths is None else widths)
    if len(widths) != len(VGG_LIKE_LAYERS):
        raise OptionError(
            f"widths must give {len(VGG_LIKE_LAYERS)} numbers, for "
            f"{', '.join(VGG_LIKE_LAYERS)}; got {len(widths)}"
        )
    for layer, width in zip(VGG_LIKE_LAYERS, widths):
        _check_positive(f"width of {layer}", width)
    blocks = []
    start = 0
    for block in _VGG16_BLOCKS:
        blocks.append(widths[start:start + len(block)])
        start += len(block)
    return _build(
        blocks=blocks,
        fc_units=widths[-1],
        num_classes=num_classes,
        input_shape=input_shape,
        dropout=dropout,
        conv_name=lambda b, i: f"conv{b}_{i}",
        bn_name=lambda b, i: f"conv{b}_{i}_bn",
        relu_name=lambda b, i: f"conv{b}_{i}_relu",
        pool_name=lambda b: f"pool{b}",
        model_name="vgg_like",
    )
