"""Reference models to prune: small, readable Keras 3 functional networks."""

from kerasprune.models.resnet import cifar_resnet

__all__ = ["cifar_resnet"]
