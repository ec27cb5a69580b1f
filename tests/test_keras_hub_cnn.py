"""keras-hub CNN backbones, and a task model around one, analyzed and pruned whole.

Tiny configurations of ``ResNetBackbone`` (v1 with basic and with bottleneck blocks, v2
with pre-activation), ``CSPNetBackbone``, ``DenseNetBackbone``, ``VGGBackbone`` and
``XceptionBackbone`` are built from their constructors (random weights, no preset is
downloaded) on 32x32 images, with their BatchNormalization statistics and biases
perturbed so that a mis-sliced channel shows. For each one:

1. every channel is prunable but the model input's and those that reach the model
   output (a backbone's output features are frozen by design);
2. a random keep-set (about 30% of every prunable group removed) rebuilds to the
   original with the removed channels cut off, and the thin model survives a
   ``.keras`` round trip;
3. a *uniform* keep-set (the same number removed from every layer one constructor
   argument sets) rebuilds as the same keras-hub class with that argument changed, and
   a non-uniform one as a plain functional model with a warning. Where a family has no
   uniform keep-set, the test says why.
"""

from __future__ import annotations

from typing import Callable, Dict, Mapping

import keras
import numpy as np
import pytest
from reference import assert_close, cut_off, random_keep
from test_applications import perturb_statistics
from test_subclassed_models import PLAIN, rebuild_and_warnings

import kerasprune as kp

keras_hub = pytest.importorskip("keras_hub")
M = keras_hub.models
SHAPE = (32, 32, 3)
FROZEN_BY_DESIGN = ("fed by model input", "reaches model output")


def resnet_v1_basic() -> keras.Model:
    """Three stacks of basic blocks; a first stack of 64 filters (the class requires
    it), which the identity shortcuts of basic blocks tie to the last stem convolution."""
    return M.ResNetBackbone(
        input_conv_filters=[8, 64],
        input_conv_kernel_sizes=[3, 3],
        stackwise_num_filters=[64, 8, 8],
        stackwise_num_blocks=[2, 2, 1],
        stackwise_num_strides=[1, 2, 2],
        block_type="basic_block",
        image_shape=SHAPE,
    )


def resnet_v1_bottleneck() -> keras.Model:
    """Three stacks of bottleneck blocks (1x1, 3x3, 1x1 expanding 4x)."""
    return M.ResNetBackbone(
        input_conv_filters=[8],
        input_conv_kernel_sizes=[3],
        stackwise_num_filters=[64, 4, 4],
        stackwise_num_blocks=[1, 2, 1],
        stackwise_num_strides=[1, 2, 2],
        block_type="bottleneck_block",
        image_shape=SHAPE,
    )


def resnet_v2() -> keras.Model:
    """Pre-activation bottleneck blocks; the stem pads with ``keras.ops.pad(-inf)``."""
    return M.ResNetBackbone(
        input_conv_filters=[8],
        input_conv_kernel_sizes=[3],
        stackwise_num_filters=[64, 4, 4],
        stackwise_num_blocks=[1, 2, 1],
        stackwise_num_strides=[1, 2, 2],
        block_type="bottleneck_block",
        use_pre_activation=True,
        image_shape=SHAPE,
    )


def cspnet() -> keras.Model:
    """Cross stages (CSPResNet-50's ratios): ``keras.ops.split`` halves each stage's
    expansion along the channels."""
    return M.CSPNetBackbone(
        stem_filters=8,
        stem_kernel_size=3,
        stem_strides=1,
        stackwise_depth=[1, 2],
        stackwise_strides=[1, 2],
        stackwise_num_filters=[8, 16],
        block_type="bottleneck_block",
        stage_type="csp",
        bottle_ratio=[0.5],
        block_ratio=[1.0],
        expand_ratio=[2.0],
        image_shape=SHAPE,
    )


def densenet() -> keras.Model:
    """Two dense blocks of two layers (4 channels each) and a transition."""
    return M.DenseNetBackbone(stackwise_num_repeats=[2, 2], growth_rate=4, image_shape=SHAPE)


def vgg() -> keras.Model:
    return M.VGGBackbone(
        stackwise_num_repeats=[2, 2], stackwise_num_filters=[8, 16], image_shape=SHAPE
    )


def xception() -> keras.Model:
    """Entry block, a strided residual block, an identity residual block, a strided exit
    block and the last block (Xception-41's pattern, narrow)."""
    return M.XceptionBackbone(
        stackwise_conv_filters=[[8, 16], [24, 24], [24, 24], [32, 48], [48, 64]],
        stackwise_pooling=[False, True, False, True, False],
        image_shape=SHAPE,
    )


BACKBONES: Dict[str, Callable[[], keras.Model]] = {
    "ResNet_v1_basic": resnet_v1_basic,
    "ResNet_v1_bottleneck": resnet_v1_bottleneck,
    "ResNet_v2": resnet_v2,
    "CSPNet": cspnet,
    "DenseNet": densenet,
    "VGG": vgg,
    "Xception": xception,
}


def vgg_classifier() -> keras.Model:
    """VGG's own task: a head of two convolutions (``pooling_hidden_dim``), pooling and
    a Dense classifier, in a Sequential model; the backbone's output feeds the head."""
    task = M.VGGImageClassifier(
        backbone=perturb_statistics(vgg()), num_classes=3, pooling_hidden_dim=8
    )
    perturb_statistics(task.head)  # the head's biases
    return task


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.default_rng(7).uniform(0, 1, (2,) + SHAPE).astype("float32")


def drop(graph: kp.PruningGraph, removed: Mapping[str, int], seed: int = 0) -> dict:
    """A keep-set that removes ``removed[group]`` random channels from each listed group,
    the same number from each of its blocks."""
    rng = np.random.default_rng(seed)
    keep = {}
    for name, n in removed.items():
        group = graph[name]
        per = group.size // group.blocks
        keep[name] = [
            b * per + int(i)
            for b in range(group.blocks)
            for i in np.sort(rng.choice(per, per - n // group.blocks, replace=False))
        ]
    return keep


def frozen_other_than_by_design(graph: kp.PruningGraph) -> list:
    """``(group, reasons)`` of the frozen groups whose reasons are not the model input or
    output."""
    return [
        (g.name, g.reasons)
        for g in graph.frozen
        if not all(r.startswith(FROZEN_BY_DESIGN) for r in g.reasons)
    ]


def check_thin(
    model: keras.Model, graph: kp.PruningGraph, keep: dict, thin: keras.Model,
    x: np.ndarray, path, rtol: float = 1e-5,
) -> keras.Model:
    """The thin model equals the cut-off original, the removed channels mattered, and a
    ``.keras`` round trip gives back the same class and outputs."""
    out = np.asarray(thin(x, training=False))
    ref = np.asarray(cut_off(model, graph, keep)(x, training=False))
    assert np.isfinite(ref).all() and np.abs(ref).max() > 1e-3
    assert_close(out, ref, rtol=rtol)
    assert np.abs(np.asarray(model(x, training=False)) - ref).max() > 1e-4
    thin.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded) is type(thin)
    np.testing.assert_array_equal(np.asarray(loaded(x, training=False)), out)
    return loaded


# -- 1 and 2: analysis, exact rebuild, round trip ------------------------------------------


@pytest.mark.parametrize("name", list(BACKBONES))
def test_backbone_prunes_all_but_input_and_output_exactly_and_round_trips(
    name: str, images, tmp_path
) -> None:
    model = perturb_statistics(BACKBONES[name]())
    graph = kp.analyze(model)
    assert not graph.unsupported, graph.unsupported
    assert not frozen_other_than_by_design(graph), frozen_other_than_by_design(graph)
    assert [g.size for g in graph.frozen if g.reason.startswith("fed by model input")] == [3]

    keep = random_keep(graph, np.random.default_rng(0), fraction=0.7)
    thin, _ = rebuild_and_warnings(model, keep, graph)
    assert kp.count_params(thin).total < kp.count_params(model).total
    check_thin(model, graph, keep, thin, images, tmp_path / f"{name}.keras")


@pytest.mark.filterwarnings("ignore:`compile\\(\\)` was not called:UserWarning")  # loading a Task
def test_vgg_classifier_prunes_the_backbone_output_too_and_round_trips(images, tmp_path):
    """Inside the task, the backbone's output feeds the head: only the input and the
    class scores stay frozen."""
    model = vgg_classifier()
    graph = kp.analyze(model)
    assert not graph.unsupported, graph.unsupported
    frozen = {g.name: g.reason for g in graph.frozen}
    assert len(frozen) == 2 and frozen["head/predictions"].startswith("reaches model output")
    assert frozen[model.layers[0].name].startswith("fed by model input")
    assert graph.group_of("vgg_backbone/block2_conv2").prunable
    keep = random_keep(graph, np.random.default_rng(0), fraction=0.7)
    # random_keep removes round(30%) of every group: the two convolutions of each VGG
    # block, and the head's two, lose the same number. One more from fc1 alone: the task
    # is no change of its arguments any more, its backbone still is
    keep["head/fc1"] = keep["head/fc1"][1:]
    thin, warned = rebuild_and_warnings(model, keep, graph)
    assert type(thin).__name__ == "Functional"
    assert type(thin.get_layer("vgg_backbone")) is M.VGGBackbone
    assert len(warned) == 1 and "(VGGImageClassifier)" in warned[0] and PLAIN in warned[0]
    check_thin(model, graph, keep, thin, images, tmp_path / "task.keras")


# -- 3: uniform keep-sets keep the class ---------------------------------------------------

# (family, a uniform keep-set: group -> channels removed, the constructor argument it
# changes and its new value): the groups are all those the argument sets, each losing
# what the architecture ties to one unit of it
UNIFORM = [
    # stackwise_num_filters[1] of basic blocks: each block's first convolution and the
    # stack's residual group (second convolutions and projection shortcut)
    (
        "ResNet_v1_basic",
        {
            "stack1_block0_1_conv": 3,
            "stack1_block1_1_conv": 3,
            "stack1_block0_2_conv+stack1_block0_0_conv+stack1_block1_2_conv": 3,
        },
        ("stackwise_num_filters", [64, 5, 8]),
    ),
    # the first stem convolution: input_conv_filters[0]
    ("ResNet_v1_basic", {"conv1_conv": 5}, ("input_conv_filters", [3, 64])),
    # stackwise_num_filters[1] of bottleneck blocks: the 1x1 and 3x3 convolutions of
    # each block lose 1, the 4x wider residual group 4
    (
        "ResNet_v1_bottleneck",
        {
            "stack1_block0_1_conv": 1,
            "stack1_block0_2_conv": 1,
            "stack1_block1_1_conv": 1,
            "stack1_block1_2_conv": 1,
            "stack1_block0_3_conv+stack1_block0_0_conv+stack1_block1_3_conv": 4,
        },
        ("stackwise_num_filters", [64, 3, 4]),
    ),
    (
        "ResNet_v2",
        {
            "stack1_block0_1_conv": 1,
            "stack1_block0_2_conv": 1,
            "stack1_block1_1_conv": 1,
            "stack1_block1_2_conv": 1,
            "stack1_block0_0_conv+stack1_block0_3_conv+stack1_block1_3_conv": 4,
        },
        ("stackwise_num_filters", [64, 3, 4]),
    ),
    ("CSPNet", {"csp_stem_conv_0": 3}, ("stem_filters", 5)),
    # stackwise_num_filters[0]: the expansion (2x, split in halves: 2 from each), the
    # bottleneck (0.5x), both transitions, and the next stage's downsampling convolution
    # (as wide as its input)
    (
        "CSPNet",
        {
            "stage_0_csp_conv_exp": 4,
            "stage_0_block_0_bottleneck_block_conv_1": 1,
            "stage_0_block_0_bottleneck_block_conv_2": 1,
            "stage_0_csp_conv_transition_b": 2,
            "stage_0_csp_conv_transition": 2,
            "stage_1_csp_conv_down_1": 2,
        },
        ("stackwise_num_filters", [6, 16]),
    ),
    # stackwise_num_filters[0]: both convolutions of the first block
    ("VGG", {"block1_conv1": 3, "block1_conv2": 3}, ("stackwise_num_filters", [5, 16])),
    # Xception's widths are one argument per convolution
    (
        "Xception",
        {"block1_conv2": 4, "block4_sepconv1": 8},
        ("stackwise_conv_filters", [[8, 12], [24, 24], [24, 24], [24, 48], [48, 64]]),
    ),
    # the residual group of blocks 2 and 3 is as wide as two arguments that must stay
    # equal (block 3's shortcut is the identity): either one alone builds other layers,
    # both probed together build these widths
    (
        "Xception",
        {"block2_sepconv2+block2_residual_conv+block3_sepconv2": 4},
        ("stackwise_conv_filters", [[8, 16], [24, 20], [24, 20], [32, 48], [48, 64]]),
    ),
]

# family -> (a keep-set that gives a plain functional model, why)
PLAIN_KEEP = {
    "ResNet_v1_basic": ({"stack1_block0_1_conv": 3}, "one block of the stack only"),
    "ResNet_v1_bottleneck": (
        {"stack1_block0_1_conv": 1, "stack1_block0_2_conv": 1}, "one block of the stack only"
    ),
    "ResNet_v2": ({"stack1_block1_2_conv": 2}, "one convolution of one block"),
    "CSPNet": (
        {"stage_0_block_0_bottleneck_block_conv_1": 1},
        "the first bottleneck convolution alone: the second is as wide",
    ),
    "VGG": ({"block1_conv1": 3}, "block1_conv2 keeps the 8 of stackwise_num_filters[0]"),
    # Xception has none: see test_every_xception_keep_set_keeps_its_class
}


def _value(config: Mapping, name: str):
    """A config value, with tuples as lists (nested ones too)."""
    value = config[name]
    if not isinstance(value, (list, tuple)):
        return value
    return [list(v) if isinstance(v, (list, tuple)) else v for v in value]


@pytest.mark.parametrize(
    "family, removed, changed", UNIFORM, ids=[f"{c[0]}-{c[2][0]}" for c in UNIFORM]
)
def test_uniform_keep_set_keeps_the_keras_hub_class(
    family: str, removed: Dict[str, int], changed, images, tmp_path
) -> None:
    model = perturb_statistics(BACKBONES[family]())
    graph = kp.analyze(model)
    keep = drop(graph, removed)
    thin, warned = rebuild_and_warnings(model, keep, graph)
    assert type(thin) is type(model) and not warned, warned
    assert thin.name == model.name
    argument, value = changed
    assert _value(thin.get_config(), argument) == value
    loaded = check_thin(model, graph, keep, thin, images, tmp_path / "m.keras")
    assert _value(loaded.get_config(), argument) == value


@pytest.mark.parametrize("family", list(PLAIN_KEEP))
def test_non_uniform_keep_set_gives_a_plain_functional_model_and_a_warning(
    family: str, images, tmp_path
) -> None:
    model = perturb_statistics(BACKBONES[family]())
    graph = kp.analyze(model)
    keep = drop(graph, PLAIN_KEEP[family][0])
    thin, warned = rebuild_and_warnings(model, keep, graph)
    assert type(thin).__name__ == "Functional"
    cls = type(model).__name__
    assert len(warned) == 1 and f"({cls})" in warned[0] and PLAIN in warned[0]
    assert f"no change of {cls}'s integer arguments gives exactly the new widths" in warned[0]
    assert [lay.name for lay in thin.layers] == [lay.name for lay in model.layers]
    check_thin(model, graph, keep, thin, images, tmp_path / "m.keras")


def test_every_xception_keep_set_keeps_its_class(images, tmp_path) -> None:
    """Every prunable group of XceptionBackbone is as wide as one argument, or as the
    two tied ones of an identity shortcut (solved together), so even a random keep-set
    is a change of its arguments: no plain functional model, no warning."""
    model = perturb_statistics(xception())
    graph = kp.analyze(model)
    keep = random_keep(graph, np.random.default_rng(0), fraction=0.7)
    thin, warned = rebuild_and_warnings(model, keep, graph)
    assert type(thin) is M.XceptionBackbone and not warned, warned
    filters = _value(thin.get_config(), "stackwise_conv_filters")
    assert filters[1][1] == filters[2][1] == len(keep[graph.group_of("block3_sepconv2").name])
    check_thin(model, graph, keep, thin, images, tmp_path / "m.keras")


def test_densenet_has_no_uniform_keep_set(images, tmp_path) -> None:
    """DenseNetBackbone's stem has a fixed 64 filters and ``growth_rate`` also sets the
    last dense block's slices, which reach the output: no prunable group follows an
    argument alone. Even the same number removed from every bottleneck convolution
    (``4 * growth_rate`` wide) is a plain functional model."""
    model = perturb_statistics(densenet())
    graph = kp.analyze(model)
    bottlenecks = [g.name for g in graph.prunable if g.name.endswith("_1_conv")]
    assert len(bottlenecks) == 4
    keep = drop(graph, {name: 4 for name in bottlenecks})
    thin, warned = rebuild_and_warnings(model, keep, graph)
    assert type(thin).__name__ == "Functional"
    assert len(warned) == 1 and "(DenseNetBackbone)" in warned[0] and PLAIN in warned[0]
    check_thin(model, graph, keep, thin, images, tmp_path / "m.keras")


@pytest.mark.filterwarnings("ignore:`compile\\(\\)` was not called:UserWarning")  # loading a Task
def test_vgg_classifier_keeps_its_class_and_its_backbone_class(images, tmp_path) -> None:
    """``pooling_hidden_dim`` sets both head convolutions, ``stackwise_num_filters[1]``
    both convolutions of the backbone's second block (its output feeds the head)."""
    model = vgg_classifier()
    graph = kp.analyze(model)
    removed = {
        "head/fc1": 3, "head/fc2": 3,
        "vgg_backbone/block2_conv1": 6, "vgg_backbone/block2_conv2": 6,
    }
    keep = drop(graph, removed)
    thin, warned = rebuild_and_warnings(model, keep, graph)
    assert type(thin) is M.VGGImageClassifier and not warned, warned
    # (the backbone is built by VGGImageClassifier.from_config, from a config without
    # its name, as when keras-hub loads the task: it may be named vgg_backbone_N)
    assert type(thin.backbone) is M.VGGBackbone
    assert thin.get_config()["pooling_hidden_dim"] == 5
    assert list(thin.backbone.get_config()["stackwise_num_filters"]) == [8, 10]
    check_thin(model, graph, keep, thin, images, tmp_path / "task.keras")


def test_split_of_the_channels_keeps_cspnet_stages_in_two_equal_halves() -> None:
    """``keras.ops.split(x, 2, axis=-1)`` of each cross stage's expansion: the expansion
    is one group kept in 2 equal blocks, and the residual of the blocks that follow it
    runs on its second half."""
    graph = kp.analyze(cspnet())
    group = graph.group_of("stage_0_csp_conv_exp")
    assert group.prunable and group.blocks == 2 and group.size == 16
    assert graph.group_of("stage_0_block_0_bottleneck_block_conv_3") is group
    assert graph.group_of("stage_1_csp_conv_exp").blocks == 2
