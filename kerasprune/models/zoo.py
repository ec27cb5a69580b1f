"""Look up a zoo model by name: :func:`get_model` and :func:`available_models`."""

from __future__ import annotations

import difflib
from typing import Any, Callable, Dict, List, Optional, Sequence

import keras

from kerasprune.errors import UnknownModelError
from kerasprune.models.lenet import lenet5
from kerasprune.models.mobilenet import mobilenet_v2_cifar
from kerasprune.models.resnet import cifar_resnet
from kerasprune.models.vgg import vgg16_bn, vgg_like

__all__ = ["get_model", "available_models", "UnknownModelError"]


def _resnet(depth: int) -> Callable[..., keras.Model]:
    def build(**kwargs: Any) -> keras.Model:
        return cifar_resnet(depth, **kwargs)

    build.__doc__ = f"CIFAR ResNet-{depth} (see :func:`kerasprune.models.cifar_resnet`)."
    return build


# name -> builder taking num_classes, input_shape and the builder's own keywords
_ZOO: Dict[str, Callable[..., keras.Model]] = {
    "lenet5": lenet5,
    "vgg16_bn": vgg16_bn,
    "vgg_like": vgg_like,
    "resnet20": _resnet(20),
    "resnet32": _resnet(32),
    "resnet56": _resnet(56),
    "resnet110": _resnet(110),
    "resnet1202": _resnet(1202),
    "mobilenet_v2": mobilenet_v2_cifar,
}


def _key(name: str) -> str:
    # "VGG16-BN", "vgg16_bn" and "vgg16bn" name the same model
    return name.strip().lower().replace("-", "").replace("_", "")


_BY_KEY = {_key(name): name for name in _ZOO}


def available_models() -> List[str]:
    """The names :func:`get_model` accepts, in a fixed order."""
    return list(_ZOO)


def get_model(
    name: str,
    num_classes: int = 10,
    input_shape: Optional[Sequence[int]] = None,
    **kwargs: Any,
) -> keras.Model:
    """Build a zoo model by name.

    Names are those of :func:`available_models`: ``lenet5``, ``vgg16_bn``, ``vgg_like``,
    ``resnet20``, ``resnet32``, ``resnet56``, ``resnet110``, ``resnet1202`` and
    ``mobilenet_v2``. Case, ``-`` and ``_`` are ignored (``"ResNet-20"``, ``"VGG16_BN"``).

    Args:
        name: the model's name.
        num_classes: units of the softmax classifier.
        input_shape: shape of one input image, channels last; ``None`` keeps the
            builder's default (28x28x1 for ``lenet5``, 32x32x3 for the others).
        **kwargs: further keywords of the builder (``dropout`` of the VGGs, ``widths``
            of ``vgg_like``, ``width`` of the ResNets, ``alpha`` of ``mobilenet_v2``,
            ``conv_activation`` of ``lenet5``).

    Returns:
        A new, uncompiled functional ``keras.Model``.

    Raises:
        UnknownModelError: (a ``ValueError``) ``name`` is not a zoo model; the message
            lists the known names and the closest ones.
    """
    if not isinstance(name, str) or _key(name) not in _BY_KEY:
        known = available_models()
        close = difflib.get_close_matches(str(name).strip().lower(), known, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise UnknownModelError(
            f"unknown model {name!r}.{hint} Known models: {', '.join(known)}."
        )
    builder = _ZOO[_BY_KEY[_key(name)]]
    if input_shape is not None:
        kwargs["input_shape"] = tuple(input_shape)
    return builder(num_classes=num_classes, **kwargs)
