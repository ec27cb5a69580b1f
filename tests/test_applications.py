"""keras.applications models, analyzed and pruned whole.

MobileNetV2 (inverted residuals, depthwise convs, ``ReLU(6)``), ResNet50V2 (pre-activation
residual stages with projection and max-pool shortcuts), DenseNet121 (concatenations
that grow channel by channel), EfficientNetB0 (swish, squeeze-and-excitation gates,
``Rescaling`` and ``Normalization`` on the input) and Xception (separable convs, residual
adds with strided projection shortcuts) are built with ``weights=None``, the smallest
input each accepts (Xception needs 71x71, InceptionV3 75x75) and a 5-class linear head. Each one is
analyzed, loses about 30% of every prunable group (random channels), is rebuilt, and
must equal the original with the removed channels cut off and survive a ``.keras``
round trip unchanged.
"""

from __future__ import annotations

from typing import Callable, Dict

import keras
import numpy as np
import pytest
from reference import assert_close, cut_off, random_keep

import kerasprune as kp

A = keras.applications
Build = Callable[[], keras.Model]


def _app(cls, side: int) -> Build:
    def build() -> keras.Model:
        return cls(
            input_shape=(side, side, 3), weights=None, classes=5, classifier_activation=None
        )

    build.__name__ = cls.__name__
    return build


APPLICATIONS: Dict[str, Build] = {
    "MobileNetV2": _app(A.MobileNetV2, 32),
    "ResNet50V2": _app(A.ResNet50V2, 32),
    "DenseNet121": _app(A.DenseNet121, 32),
    "EfficientNetB0": _app(A.EfficientNetB0, 32),
    "Xception": _app(A.Xception, 71),
    "InceptionV3": _app(A.InceptionV3, 75),  # BatchNormalization(scale=False) everywhere
}

# layers whose output channels the architecture itself ties together (residual adds,
# squeeze-and-excitation gates): (model, layer, layer) that must share one group;
# "layer:slot" names another slot than the layer's output
COUPLED = [
    ("MobileNetV2", "block_1_project", "block_2_project"),  # block_2_add
    ("MobileNetV2", "block_3_project", "block_5_project"),  # block_4_add, block_5_add
    ("MobileNetV2", "block_13_expand", "block_13_depthwise:channels"),  # depthwise passes them
    ("ResNet50V2", "conv2_block1_0_conv", "conv2_block3_3_conv"),  # projection + adds
    ("ResNet50V2", "conv4_block1_0_conv", "conv4_block6_3_conv"),
    ("EfficientNetB0", "block2b_expand_conv", "block2b_se_expand"),  # the SE gate
    ("EfficientNetB0", "block2a_project_conv", "block2b_project_conv"),  # block2b_add
    ("Xception", "block4_sepconv2", "block12_sepconv3"),  # middle flow adds
]
# layers that must NOT share a group (independent filter sets)
SEPARATE = [
    ("MobileNetV2", "block_1_expand", "block_2_expand"),
    ("ResNet50V2", "conv2_block1_1_conv", "conv2_block1_2_conv"),
    ("DenseNet121", "conv2_block1_2_conv", "conv2_block2_2_conv"),  # concat slices
    ("DenseNet121", "conv1_conv", "conv2_block1_2_conv"),
    ("EfficientNetB0", "block2b_se_reduce", "block2b_expand_conv"),
    ("Xception", "block4_sepconv1", "block4_sepconv2"),
    ("InceptionV3", "conv2d_5", "conv2d_7"),  # two branches of mixed0
]


def _group(graph: kp.PruningGraph, where: str) -> kp.ChannelGroup:
    layer, _, slot = where.partition(":")
    return graph.group_of(layer, slot or "out")


def perturb_statistics(model: keras.Model, seed: int = 0) -> keras.Model:
    """Random BatchNormalization parameters and statistics and random biases.

    Kernels keep their initializers' (variance-preserving) values so that a deep random
    network neither explodes nor fades; the per-channel parameters get values far from
    the defaults (gamma 1, beta 0, mean 0, variance 1, bias 0) so that every channel
    carries a distinct, non-zero signal and a mis-sliced one shows.
    """
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            for v in layer.weights:  # gamma and beta are absent with scale/center=False
                n = tuple(v.shape)
                if v.name in ("gamma", "moving_variance"):
                    v.assign(rng.uniform(0.5, 1.5, n).astype("float32"))
                else:
                    v.assign(rng.normal(0.0, 0.2, n).astype("float32"))
        elif getattr(layer, "bias", None) is not None and not isinstance(
            layer, keras.layers.Normalization
        ):
            b = layer.bias
            b.assign(rng.normal(0.0, 0.1, tuple(b.shape)).astype("float32"))
    return model


@pytest.fixture(scope="module")
def batch() -> Dict[int, np.ndarray]:
    rng = np.random.default_rng(7)
    return {side: rng.uniform(0, 1, (2, side, side, 3)).astype("float32") for side in (32, 71, 75)}


@pytest.mark.filterwarnings("ignore:.*input_shape.*")
@pytest.mark.parametrize("name", list(APPLICATIONS))
def test_application_loses_30_percent_of_every_group_exactly_and_round_trips(
    name: str, batch, tmp_path
) -> None:
    model = perturb_statistics(APPLICATIONS[name]())
    graph = kp.analyze(model)
    assert not graph.unsupported, graph.unsupported
    # only the model input's channels and the classifier's units are frozen
    for grp in graph.frozen:
        assert all(
            r.startswith("fed by model input") or r.startswith("reaches model output")
            for r in grp.reasons
        ), (grp.name, grp.reasons)
    assert len(graph.prunable) == len(graph.groups) - 2

    keep = random_keep(graph, np.random.default_rng(0), fraction=0.7)
    thin = kp.rebuild(model, keep, graph=graph)
    before, after = kp.count_params(model).total, kp.count_params(thin).total
    assert 0.3 < after / before < 0.7  # ~30% of both sides of most kernels: ~0.49 left

    x = batch[model.input_shape[1]]
    out = np.asarray(thin(x, training=False))
    ref = np.asarray(cut_off(model, graph, keep)(x, training=False))
    assert np.isfinite(ref).all() and np.abs(ref).max() > 1e-3
    assert_close(out, ref)
    full = np.asarray(model(x, training=False))
    assert np.abs(full - ref).max() > 1e-4  # the removed channels did matter

    path = tmp_path / f"{name}.keras"
    thin.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_array_equal(np.asarray(loaded(x, training=False)), out)


@pytest.mark.filterwarnings("ignore:.*input_shape.*")
@pytest.mark.parametrize("name", list(APPLICATIONS))
def test_application_groups_follow_its_residual_adds_gates_and_concatenations(name: str) -> None:
    model = APPLICATIONS[name]()
    graph = kp.analyze(model)
    for _, a, b in [c for c in COUPLED if c[0] == name]:
        assert _group(graph, a) is _group(graph, b), (a, b)
    for _, a, b in [c for c in SEPARATE if c[0] == name]:
        assert _group(graph, a) is not _group(graph, b), (a, b)
    if name == "DenseNet121":
        # every layer of a dense block adds its own 32-channel slice to the concatenation
        grp = graph.group_of("conv2_block3_2_conv")
        assert grp.size == 32 and grp.producers == ["conv2_block3_2_conv"]
        offsets = {m.layer: m.offset for m in grp.members if m.slot == "in"}
        # conv1 gives 64 channels, each earlier layer 32: block 3's slice starts at 128
        assert offsets["conv2_block4_1_conv"] == 64 + 2 * 32


def test_keras_ops_named_like_layers_do_not_break_the_rebuild(tmp_path) -> None:
    """``x + 3.0`` leaves a ``keras.ops`` ``Add`` operation in the graph, next to the
    ``Add`` layer. The rebuild used to put every class of the model into a custom-object
    scope by bare name, so one ``Add`` stood in for the other and deserializing the
    edited config failed. Keras classes are now left to Keras.
    """
    L = keras.layers
    inp = keras.Input((6, 6, 3))
    x = L.Conv2D(4, 1, name="c1")(inp)
    x = L.Add(name="res")([x, L.Conv2D(4, 3, padding="same", name="c2")(x)])  # the layer first
    gate = L.ReLU(6.0, name="relu6")(x + 3.0) * (1.0 / 6.0)  # ops Add and Multiply
    x = L.Multiply(name="gate")([x, gate])
    x = L.Conv2D(5, 1, name="c3")(x)
    model = keras.Model(inp, L.Dense(2, name="head")(L.GlobalAveragePooling2D(name="gap")(x)))
    graph = kp.analyze(model)
    # the operations have handlers (tests/test_ops.py): the gate prunes with the block
    group = graph.group_of("c1")
    assert group.prunable and group is graph.group_of("c2")
    keep = {group.name: [1, 3], "c3": [0, 2, 4]}
    thin = kp.rebuild(model, keep, graph=graph)
    x = np.random.default_rng(0).normal(size=(2, 6, 6, 3)).astype("float32")
    assert_close(thin(x), cut_off(model, graph, keep)(x))
    thin.save(tmp_path / "ops.keras")
    np.testing.assert_array_equal(keras.models.load_model(tmp_path / "ops.keras")(x), thin(x))


def test_inception_resnet_v2_scaled_residuals_are_prunable_and_exact() -> None:
    """Its ``x + scale * r`` residuals are a custom layer (``CustomScaleLayer``): handled as
    an element-wise merge, every group but the model's input and head is prunable."""
    model = perturb_statistics(
        A.InceptionResNetV2(
            input_shape=(75, 75, 3), weights=None, classes=5, classifier_activation=None
        )
    )
    graph = kp.analyze(model)
    assert graph.frozen and all(
        "fed by model input" in g.reason or "reaches model output" in g.reason
        for g in graph.frozen
    ), [(g.name, g.reason) for g in graph.frozen]
    keep = random_keep(graph, np.random.default_rng(0), fraction=0.7)
    thin = kp.rebuild(model, keep, graph=graph)
    x = np.random.default_rng(1).normal(size=(2, 75, 75, 3)).astype("float32")
    assert_close(thin(x), cut_off(model, graph, keep)(x), rtol=1e-4)
