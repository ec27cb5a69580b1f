"""The CIFAR ResNets of He et al. 2016 ("Deep Residual Learning for Image Recognition").

A 3x3 stem convolution, then three stages of ``n`` basic blocks with ``width``,
``2*width`` and ``4*width`` filters (16/32/64 by default), global average pooling and a
softmax classifier: ``6n + 2`` weighted layers in all (ResNet-20, 32, 44, 56, 110, 1202).
The first block of stages 2 and 3 halves the feature map with a stride of 2.

Every convolution is followed by BatchNormalization. Inside a stage the shortcut is the
identity; where the width or the stride changes it is a strided 1x1 convolution with
BatchNormalization (the paper's option B).

Layer names follow the structure (``stem_conv``, ``stage2_block1_conv1``,
``stage2_block1_proj_bn``, ``stage3_block4_add``, ``predictions``), so pruning reports
are easy to read.
"""

from __future__ import annotations

import sys
from typing import Sequence

import keras

from kerasprune.errors import OptionError

__all__ = ["cifar_resnet"]


def _conv(x, filters: int, kernel_size: int, strides: int, name: str):
    # no bias: every convolution is followed by BatchNormalization
    return keras.layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding="same",
        use_bias=False,
        kernel_initializer="he_normal",
        name=name,
    )(x)


def _bn(x, name: str):
    return keras.layers.BatchNormalization(name=name)(x)


def _relu(x, name: str):
    return keras.layers.Activation("relu", name=name)(x)


def _ensure_recursion_limit(layers: int) -> None:
    # Keras maps a functional graph recursively (Function.__init__, hence also
    # Model.from_config and clone_model), about two frames per residual block along the
    # identity shortcuts; ResNet-1202 needs more than Python's default of 1000.
    needed = layers + 1000
    if sys.getrecursionlimit() < needed:
        sys.setrecursionlimit(needed)


def _basic_block(x, filters: int, strides: int, name: str):
    """Conv-BN-ReLU-Conv-BN, added to the shortcut, then ReLU."""
    y = _conv(x, filters, 3, strides, f"{name}_conv1")
    y = _bn(y, f"{name}_bn1")
    y = _relu(y, f"{name}_relu1")
    y = _conv(y, filters, 3, 1, f"{name}_conv2")
    y = _bn(y, f"{name}_bn2")
    shortcut = x
    if strides != 1 or x.shape[-1] != filters:
        shortcut = _conv(x, filters, 1, strides, f"{name}_proj_conv")
        shortcut = _bn(shortcut, f"{name}_proj_bn")
    y = keras.layers.Add(name=f"{name}_add")([shortcut, y])
    return _relu(y, f"{name}_out")


def cifar_resnet(
    depth: int,
    num_classes: int = 10,
    input_shape: Sequence[int] = (32, 32, 3),
    width: int = 16,
) -> keras.Model:
    """Build the CIFAR ResNet of the given depth (He et al. 2016, section 4.2).

    Keras walks functional graphs recursively, so very deep networks (ResNet-1202) do not
    fit Python's default recursion limit of 1000: this function raises the interpreter's
    limit (never lowers it) to what building the model, and later
    ``keras.Model.from_config`` or ``kerasprune.rebuild`` of it, needs.

    Args:
        depth: number of weighted layers, ``6n + 2`` for ``n >= 1`` blocks per stage:
            20, 32, 44, 56, 110 and 1202 are the depths of the paper.
        num_classes: units of the softmax classifier.
        input_shape: shape of one input image, channels last.
        width: filters of the stem and the first stage; the second and third stages
            have ``2 * width`` and ``4 * width``.

    Returns:
        An uncompiled functional ``keras.Model`` named ``cifar_resnet<depth>``.

    Raises:
        ValueError: ``depth`` is not of the form ``6n + 2`` with ``n >= 1``, or
            ``num_classes`` or ``width`` is not a positive integer.
    """
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 8 or (depth - 2) % 6:
        raise OptionError(
            f"CIFAR ResNet depth must be 6n+2 for a whole number n >= 1 of blocks per "
            f"stage (8, 14, 20, 32, 44, 56, 110, 1202, ...), got {depth!r}"
        )
    for arg, value in (("num_classes", num_classes), ("width", width)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise OptionError(f"{arg} must be a positive integer, got {value!r}")
    blocks = (depth - 2) // 6
    _ensure_recursion_limit(3 * blocks * 7 + 10)

    inputs = keras.Input(shape=tuple(input_shape), name="input")
    x = _conv(inputs, width, 3, 1, "stem_conv")
    x = _bn(x, "stem_bn")
    x = _relu(x, "stem_relu")
    for stage, filters in enumerate((width, 2 * width, 4 * width), start=1):
        for block in range(1, blocks + 1):
            strides = 2 if stage > 1 and block == 1 else 1
            x = _basic_block(x, filters, strides, f"stage{stage}_block{block}")
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name=f"cifar_resnet{depth}")
