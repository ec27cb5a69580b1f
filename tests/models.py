"""Small hand-built models shared by the core tests."""

from __future__ import annotations

import keras
import numpy as np

L = keras.layers


def randomize(model: keras.Model, seed: int = 0, scale: float = 0.3) -> keras.Model:
    """Random weights everywhere, positive variances for normalization statistics."""
    rng = np.random.default_rng(seed)
    new = []
    for v in model.weights:
        shape = tuple(v.shape)
        if "variance" in v.name:
            new.append(rng.uniform(0.5, 1.5, size=shape).astype("float32"))
        elif v.name in ("count", "iteration") or "seed" in v.name:
            new.append(np.asarray(v.numpy()))
        else:
            new.append((rng.normal(size=shape) * scale).astype("float32"))
    model.set_weights(new)
    return model


def residual_net() -> keras.Model:
    inp = keras.Input((8, 8, 3), name="img")
    x = L.Conv2D(8, 3, padding="same", name="stem")(inp)
    x = L.BatchNormalization(name="stem_bn")(x)
    x = L.ReLU(name="stem_relu")(x)
    y = L.Conv2D(6, 3, padding="same", activation="relu", name="b1_conv1")(x)
    y = L.Conv2D(8, 3, padding="same", name="b1_conv2")(y)
    x = L.Add(name="b1_add")([x, y])
    y = L.Conv2D(12, 3, strides=2, padding="same", activation="relu", name="b2_conv1")(x)
    y = L.Conv2D(10, 3, padding="same", name="b2_conv2")(y)
    s = L.Conv2D(10, 1, strides=2, name="b2_proj")(x)
    x = L.Add(name="b2_add")([s, y])
    x = L.GlobalAveragePooling2D(name="gap")(x)
    out = L.Dense(5, name="head")(x)
    return randomize(keras.Model(inp, out, name="residual_net"))


def concat_flatten_net() -> keras.Model:
    inp = keras.Input((6, 6, 2), name="img")
    a = L.Conv2D(4, 3, padding="same", activation="relu", name="a")(inp)
    b = L.Conv2D(3, 1, activation="tanh", name="b")(inp)
    x = L.Concatenate(name="cat")([a, b])
    x = L.MaxPooling2D(name="pool")(x)
    x = L.Flatten(name="flat")(x)
    x = L.Dense(7, activation="relu", name="fc")(x)
    out = L.Dense(3, name="head")(x)
    return randomize(keras.Model(inp, out, name="concat_flatten_net"))
