"""Reference models to prune: small, readable Keras 3 functional networks.

One module per family: :mod:`~kerasprune.models.lenet` (LeNet-5, MNIST),
:mod:`~kerasprune.models.vgg` (CIFAR VGG-16 with BatchNormalization and the VGG-like net
of Wang et al. (2017)), :mod:`~kerasprune.models.resnet` (CIFAR ResNets) and
:mod:`~kerasprune.models.mobilenet` (MobileNetV2 for 32x32 inputs). :func:`get_model`
builds any of them by name.

References:

- Wang et al. (2017), gradually global pruning (GGP): Zhengtao Wang, Ce Zhu, Zhiqiang Xia,
  Qi Guo and Yipeng Liu, "Towards Thinner Convolutional Neural Networks Through Gradually
  Global Pruning", IEEE International Conference on Image Processing (ICIP), 2017;
  arXiv:1703.09916.
"""

from kerasprune.models.lenet import lenet5
from kerasprune.models.mobilenet import MOBILENET_V2_CIFAR_STAGES, mobilenet_v2_cifar
from kerasprune.models.resnet import cifar_resnet
from kerasprune.models.vgg import VGG_LIKE_LAYERS, VGG_LIKE_WIDTHS, vgg16_bn, vgg_like
from kerasprune.models.zoo import UnknownModelError, available_models, get_model

__all__ = [
    "get_model",
    "available_models",
    "UnknownModelError",
    "lenet5",
    "vgg16_bn",
    "vgg_like",
    "VGG_LIKE_LAYERS",
    "VGG_LIKE_WIDTHS",
    "cifar_resnet",
    "mobilenet_v2_cifar",
    "MOBILENET_V2_CIFAR_STAGES",
]
