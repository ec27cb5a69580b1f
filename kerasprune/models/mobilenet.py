"""MobileNetV2 (Sandler et al. 2018) adapted to 32x32 inputs such as CIFAR-10.

The ImageNet network downsamples 32 times; on a 32x32 image that leaves a 1x1 map after
the third stage. As is usual for CIFAR, the stem convolution and the first block of the
24-filter stage use stride 1 instead of 2, so the network downsamples 8 times
(32 -> 16 -> 8 -> 4) and ends on a 4x4x1280 map before global average pooling.

Stages (expansion t, output channels c, blocks n, stride s of the first block):

    stem   3x3 conv, 32, stride 1
    t=1  c=16   n=1 s=1
    t=6  c=24   n=2 s=1   (2 on ImageNet)
    t=6  c=32   n=3 s=2
    t=6  c=64   n=4 s=2
    t=6  c=96   n=3 s=1
    t=6  c=160  n=3 s=2
    t=6  c=320  n=1 s=1
    head 1x1 conv, 1280
    global average pooling, Dense classes (softmax)

Each inverted residual block is: 1x1 expansion conv (left out when t=1), 3x3
depthwise conv, 1x1 linear projection conv, each followed by BatchNormalization, ReLU6
after the first two; a residual ``Add`` joins input and output when the stride is 1 and
the widths match. The width multiplier ``alpha`` scales every width, rounded to a
multiple of 8 as in the paper's reference implementation; the head keeps 1280 channels
for ``alpha <= 1``.

Layer names: ``stem_conv``, ``stem_bn``, ``stem_relu``, ``block3_expand_conv``,
``block3_dw_conv``, ``block3_project_bn``, ``block3_add``, ..., ``head_conv``, ``pool``,
``predictions`` (blocks are numbered from 1 across the whole network, 17 in all).
"""

from __future__ import annotations

from typing import Sequence, Tuple

import keras

from kerasprune.errors import OptionError

__all__ = ["mobilenet_v2_cifar", "MOBILENET_V2_CIFAR_STAGES"]

#: (expansion, output channels, blocks, stride of the first block), CIFAR strides.
MOBILENET_V2_CIFAR_STAGES: Tuple[Tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 1),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


def _round_width(value: float, divisor: int = 8) -> int:
    """Nearest multiple of ``divisor`` (at least ``divisor``), never below 90% of ``value``."""
    width = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if width < 0.9 * value:
        width += divisor
    return width


def _bn(x, name: str):
    return keras.layers.BatchNormalization(name=name)(x)


def _relu6(x, name: str):
    return keras.layers.ReLU(6.0, name=name)(x)


def _pointwise(x, filters: int, name: str):
    return keras.layers.Conv2D(
        filters, 1, use_bias=False, kernel_initializer="he_normal", name=name
    )(x)


def _inverted_residual(x, expansion: int, filters: int, strides: int, name: str):
    in_channels = x.shape[-1]
    y = x
    if expansion != 1:
        y = _pointwise(y, in_channels * expansion, f"{name}_expand_conv")
        y = _bn(y, f"{name}_expand_bn")
        y = _relu6(y, f"{name}_expand_relu")
    y = keras.layers.DepthwiseConv2D(
        3,
        strides=strides,
        padding="same",
        use_bias=False,
        depthwise_initializer="he_normal",
        name=f"{name}_dw_conv",
    )(y)
    y = _bn(y, f"{name}_dw_bn")
    y = _relu6(y, f"{name}_dw_relu")
    y = _pointwise(y, filters, f"{name}_project_conv")
    y = _bn(y, f"{name}_project_bn")
    if strides == 1 and in_channels == filters:
        y = keras.layers.Add(name=f"{name}_add")([x, y])
    return y


def mobilenet_v2_cifar(
    num_classes: int = 10,
    input_shape: Sequence[int] = (32, 32, 3),
    alpha: float = 1.0,
) -> keras.Model:
    """Build MobileNetV2 for 32x32 images (stride-1 stem and first 24-filter block).

    With the defaults (10 classes, ``alpha=1``) the model has 2,270,794 parameters, of
    which 34,112 are BatchNormalization moving statistics.

    Args:
        num_classes: units of the softmax classifier.
        input_shape: shape of one input image, channels last.
        alpha: width multiplier; every width is ``alpha`` times the paper's, rounded to a
            multiple of 8 (the 1280-channel head only grows, for ``alpha > 1``).

    Returns:
        An uncompiled functional ``keras.Model`` named ``mobilenet_v2_cifar``.

    Raises:
        ValueError: ``num_classes`` is not a positive integer or ``alpha`` is not a
            positive number.
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise OptionError(f"num_classes must be a positive integer, got {num_classes!r}")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not alpha > 0:
        raise OptionError(f"alpha must be a positive number, got {alpha!r}")

    inputs = keras.Input(shape=tuple(input_shape), name="input")
    x = keras.layers.Conv2D(
        _round_width(32 * alpha),
        3,
        strides=1,
        padding="same",
        use_bias=False,
        kernel_initializer="he_normal",
        name="stem_conv",
    )(inputs)
    x = _bn(x, "stem_bn")
    x = _relu6(x, "stem_relu")
    block = 0
    for expansion, channels, repeats, first_stride in MOBILENET_V2_CIFAR_STAGES:
        filters = _round_width(channels * alpha)
        for i in range(repeats):
            block += 1
            strides = first_stride if i == 0 else 1
            x = _inverted_residual(x, expansion, filters, strides, f"block{block}")
    head = _round_width(1280 * alpha) if alpha > 1.0 else 1280
    x = _pointwise(x, head, "head_conv")
    x = _bn(x, "head_bn")
    x = _relu6(x, "head_relu")
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name="mobilenet_v2_cifar")
