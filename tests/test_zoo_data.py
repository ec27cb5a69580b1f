"""The model zoo (kerasprune.models) and the dataset pipelines (kerasprune.data).

Parameter counts are checked against closed-form counts written out here layer by layer
(a k x k convolution from c_in to c_out channels holds k*k*c_in*c_out weights, a
BatchNormalization 4 numbers per channel), not against Keras' own count alone. MNIST
comes from the prepared offline copy in ../shared/data/tfds; CIFAR-10 is not available
offline and is tested through ``tfds.testing.mock_data``.
"""

from pathlib import Path

import keras
import numpy as np
import pytest

import kerasprune as kp
from kerasprune import data, models

tfds = pytest.importorskip("tensorflow_datasets")

SHARED_TFDS = Path(__file__).resolve().parents[2] / "shared" / "data" / "tfds"

# independent copies of the constants under test
MEAN = np.array([0.4914, 0.4822, 0.4465], np.float32)
STD = np.array([0.2470, 0.2435, 0.2616], np.float32)
ZOO = ["lenet5", "vgg16_bn", "vgg_like", "resnet20", "resnet32", "resnet56", "resnet110",
       "resnet1202", "mobilenet_v2"]


def conv(k, c_in, c_out, bias=False):
    return k * k * c_in * c_out + (c_out if bias else 0)


def bn(c):
    return 4 * c  # gamma, beta, moving mean, moving variance


def dense(n_in, n_out, bias=True):
    return n_in * n_out + (n_out if bias else 0)


def neurons(model):
    """Conv filters plus hidden Dense units (the output layer excluded), as in papers/000."""
    out_layer = model.output._keras_history[0]
    n = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            n += layer.filters
        elif isinstance(layer, keras.layers.Dense) and layer is not out_layer:
            n += layer.units
    return n


# ----------------------------------------------------------------------------- models


def test_lenet5_has_431080_parameters():
    m = models.lenet5()
    per_layer = {
        "conv1": conv(5, 1, 20, bias=True),  # 520
        "conv2": conv(5, 20, 50, bias=True),  # 25,050
        "fc1": dense(4 * 4 * 50, 500),  # 400,500 (28 -> 24 -> 12 -> 8 -> 4)
        "predictions": dense(500, 10),  # 5,010
    }
    for name, count in per_layer.items():
        assert m.get_layer(name).count_params() == count
    assert sum(per_layer.values()) == 431_080
    assert m.count_params() == 431_080
    assert m.get_layer("flatten").output.shape[-1] == 800


def vgg_params(widths, classes=10, c_in=3):
    convs, fc = widths[:-1], widths[-1]
    total = 0
    for c_out in convs:
        total += conv(3, c_in, c_out) + bn(c_out)
        c_in = c_out
    # 32x32 pooled five times leaves 1x1: Flatten gives c_in features
    return total + dense(c_in, fc, bias=False) + bn(fc) + dense(fc, classes)


def test_vgg_like_has_the_4736_neurons_of_papers_000():
    m = models.vgg_like()
    assert neurons(m) == 4736
    widths = [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512, 512]
    names = [f"conv{b}_{i}" for b, n in ((1, 2), (2, 2), (3, 3), (4, 3), (5, 3))
             for i in range(1, n + 1)] + ["fc1"]
    for name, width in zip(names, widths):
        layer = m.get_layer(name)
        assert (layer.filters if hasattr(layer, "filters") else layer.units) == width
    assert isinstance(m.get_layer("fc1_bn"), keras.layers.BatchNormalization)
    assert m.count_params() == vgg_params(widths)
    # every neuron is in a prunable channel group, and only those
    graph = kp.analyze(m, warn=False)
    assert sum(g.size for g in graph.prunable) == 4736


def test_vgg_like_builds_the_pruned_structures_of_table_1():
    aaws = [33, 34, 83, 128, 254, 256, 256, 486, 500, 448, 321, 276, 229, 6]
    m = models.vgg_like(widths=aaws)
    assert neurons(m) == 3310  # the "total" row of Table 1
    assert m.get_layer("fc1").units == 6
    assert m.count_params() == vgg_params(aaws)
    with pytest.raises(ValueError, match="14 numbers"):
        models.vgg_like(widths=aaws[:-1])


def test_vgg16_bn_parameter_count():
    m = models.vgg16_bn()
    widths = [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512, 512]
    assert m.count_params() == vgg_params(widths) == 14_996_682
    assert isinstance(m.get_layer("fc1_dropout"), keras.layers.Dropout)
    assert [l.name for l in m.layers if isinstance(l, keras.layers.Conv2D)][:3] == [
        "block1_conv1", "block1_conv2", "block2_conv1"]


def resnet_params(depth, classes=10, widths=(16, 32, 64)):
    """Count of He et al.'s CIFAR ResNet with BN and 1x1 projection shortcuts (option B)."""
    n = (depth - 2) // 6
    total = conv(3, 3, widths[0]) + bn(widths[0])
    c_in = widths[0]
    for w in widths:
        for _ in range(n):
            total += conv(3, c_in, w) + bn(w) + conv(3, w, w) + bn(w)
            if c_in != w:  # first block of stages 2 and 3
                total += conv(1, c_in, w) + bn(w)
            c_in = w
    return total + dense(c_in, classes)


@pytest.mark.parametrize("depth", [20, 32, 56])
def test_cifar_resnet_parameter_count(depth):
    m = models.cifar_resnet(depth)
    assert m.count_params() == resnet_params(depth)


def test_resnet20_counts_by_hand():
    # stem 432+64; stage 1: 3 blocks x 2 x (2304+64); stage 2: 4608+9216+256+512+128
    # + 2 x 2 x (9216+128); stage 3: 18432+36864+512+2048+256 + 2 x 2 x (36864+256);
    # classifier 650
    by_hand = 496 + 14_208 + (14_720 + 37_376) + (58_112 + 148_480) + 650
    assert by_hand == resnet_params(20) == 274_042
    m = models.get_model("resnet20")
    assert m.count_params() == by_hand
    # the moving mean and variance of the BN channels are not trainable:
    # 16 (stem) + 6 x 16 + 7 x 32 + 7 x 64 = 784 channels
    assert sum(int(np.prod(w.shape)) for w in m.trainable_weights) == by_hand - 2 * 784


def mobilenet_params(classes=10):
    stages = [(1, 16, 1), (6, 24, 2), (6, 32, 3), (6, 64, 4), (6, 96, 3), (6, 160, 3), (6, 320, 1)]
    total = conv(3, 3, 32) + bn(32)
    c_in = 32
    for t, c, n in stages:
        for _ in range(n):
            hidden = c_in * t
            if t != 1:
                total += conv(1, c_in, hidden) + bn(hidden)
            total += 9 * hidden + bn(hidden)  # depthwise 3x3
            total += conv(1, hidden, c) + bn(c)
            c_in = c
    return total + conv(1, c_in, 1280) + bn(1280) + dense(1280, classes)


def test_mobilenet_v2_cifar_structure():
    m = models.mobilenet_v2_cifar()
    assert m.count_params() == mobilenet_params() == 2_270_794
    # strides 1 for the stem and the 24-channel stage: 32 -> 16 -> 8 -> 4
    assert tuple(m.get_layer("head_conv").output.shape[1:]) == (4, 4, 1280)
    assert tuple(m.get_layer("block2_dw_conv").output.shape[1:3]) == (32, 32)
    # residual adds where stride 1 and width kept: 24:1, 32:2, 64:3, 96:2, 160:2
    adds = [l for l in m.layers if isinstance(l, keras.layers.Add)]
    assert len(adds) == 10
    assert all(isinstance(l, keras.layers.ReLU) and float(l.max_value) == 6.0
               for l in m.layers if l.name.endswith("_relu"))
    half = models.mobilenet_v2_cifar(alpha=0.5)
    assert half.get_layer("stem_conv").filters == 16
    assert half.get_layer("block1_project_conv").filters == 8
    assert half.get_layer("block17_project_conv").filters == 160
    assert half.get_layer("head_conv").filters == 1280


# prunable groups, derived from each architecture: LeNet conv1, conv2, fc1; VGG 13 convs
# + fc1; ResNet(6n+2) the first conv of each of the 3n blocks, plus one group per stage
# (stem or projection, second convs and adds coupled); MobileNetV2 the 16 expansion convs,
# the 7 stage outputs (projections coupled by the adds), the stem (through block 1's
# depthwise conv) and the head
PRUNABLE_GROUPS = {"lenet5": 3, "vgg16_bn": 14, "vgg_like": 14, "resnet20": 12,
                   "resnet32": 18, "resnet56": 30, "resnet110": 57, "mobilenet_v2": 25}


@pytest.mark.parametrize("name", sorted(PRUNABLE_GROUPS))
def test_zoo_model_builds_runs_and_analyzes(name):
    rng = np.random.default_rng(0)
    for dataset in ("cifar10", "mnist"):  # the shapes the `train` command uses
        shape = data.input_shape(dataset)
        m = models.get_model(name, num_classes=data.num_classes(dataset), input_shape=shape)
        assert isinstance(m, keras.Model) and type(m).__name__ == "Functional"
        x = rng.random((2,) + shape, dtype=np.float32)
        y = np.asarray(m(x, training=False))
        assert y.shape == (2, 10)
        np.testing.assert_allclose(y.sum(axis=1), 1.0, rtol=1e-5)  # softmax output
        assert np.all(y >= 0)
    out = m.get_layer("predictions")
    assert out.get_config()["activation"] == "softmax"
    graph = kp.analyze(m, warn=False)
    assert graph.unsupported == []  # every layer of the zoo has a pruning handler
    assert len(graph.prunable) == PRUNABLE_GROUPS[name]
    assert not graph.group_of("predictions").prunable
    assert "predictions" in graph.group_of("predictions").reason


def test_get_model_names_and_errors(monkeypatch):
    assert models.available_models() == ZOO
    built = []
    monkeypatch.setattr(models.zoo, "cifar_resnet", lambda depth, **kw: built.append((depth, kw)))
    models.get_model("resnet1202", num_classes=100)
    models.get_model("ResNet-110", input_shape=[28, 28, 1])
    assert built == [(1202, {"num_classes": 100}),
                     (110, {"num_classes": 10, "input_shape": (28, 28, 1)})]
    assert models.get_model("VGG16-BN", num_classes=3).output.shape[-1] == 3
    assert models.get_model("lenet5").input.shape[1:] == (28, 28, 1)
    with pytest.raises(ValueError) as info:
        models.get_model("resnet21")
    assert isinstance(info.value, kp.KerasPruneError)
    text = str(info.value)
    assert "'resnet21'" in text and "Did you mean" in text and "'resnet20'" in text
    assert all(n in text for n in ZOO)
    with pytest.raises(ValueError, match="Known models"):
        models.get_model("alexnet")


# ----------------------------------------------------------------------------- data


@pytest.fixture
def mnist_dir():
    if not (SHARED_TFDS / "mnist").is_dir():
        pytest.skip(f"no offline MNIST in {SHARED_TFDS}")
    return str(SHARED_TFDS)


def raw_split(name, split, data_dir=None):
    """The reference: tfds's own uint8 images and labels, untouched."""
    ds = tfds.load(name, split=split, data_dir=data_dir, as_supervised=True, download=False)
    pairs = list(ds.as_numpy_iterator())
    return np.stack([p[0] for p in pairs]), np.array([p[1] for p in pairs])


def shifted(image, dy, dx, fill):
    """``image`` moved by (dy, dx) pixels, uncovered pixels set to ``fill``."""
    h, w = image.shape[:2]
    p = max(abs(dy), abs(dx))
    padded = np.pad(image, ((p, p), (p, p), (0, 0)), constant_values=fill)
    return padded[p - dy:p - dy + h, p - dx:p - dx + w]


def matches_a_shift(aug, img, pad, flips, fill):
    for flip in flips:
        src = img[:, ::-1] if flip else img
        for dy in range(-pad, pad + 1):
            for dx in range(-pad, pad + 1):
                if np.allclose(aug, shifted(src, dy, dx, fill), atol=1e-5):
                    return True
    return False


def test_mnist_batches(mnist_dir):
    ds = data.load_dataset("mnist", split="test", batch_size=8, data_dir=mnist_dir, take=20)
    batches = list(ds.as_numpy_iterator())
    assert [len(b[0]) for b in batches] == [8, 8, 4]  # take=20 before batching
    x = np.concatenate([b[0] for b in batches])
    y = np.concatenate([b[1] for b in batches])
    assert x.shape == (20, 28, 28, 1) and x.dtype == np.float32
    assert y.dtype == np.int32 and y.min() >= 0 and y.max() <= 9
    assert 0.0 <= x.min() and x.max() <= 1.0 and x.max() == 1.0
    raw_x, raw_y = raw_split("mnist", "test[:20]", mnist_dir)
    np.testing.assert_allclose(x, raw_x.astype(np.float32) / 255.0, rtol=0, atol=1e-7)
    np.testing.assert_array_equal(y, raw_y)
    assert data.num_classes("mnist") == 10 and data.input_shape("mnist") == (28, 28, 1)
    assert data.num_classes("cifar10") == 10 and data.input_shape("CIFAR-10") == (32, 32, 3)


def test_mnist_shuffle_is_seeded_and_reshuffles(mnist_dir):
    def epochs(ds, n):
        return [np.concatenate([b[1] for b in ds.as_numpy_iterator()]) for _ in range(n)]

    kw = dict(split="train", batch_size=64, data_dir=mnist_dir, take=64, shuffle=True, seed=7)
    first, second = epochs(data.load_dataset("mnist", **kw), 2)
    again = epochs(data.load_dataset("mnist", **kw), 1)[0]
    plain = epochs(data.load_dataset("mnist", split="train", batch_size=64, data_dir=mnist_dir, take=64), 1)[0]
    np.testing.assert_array_equal(first, again)  # same seed, same order
    assert not np.array_equal(first, second)  # each epoch reshuffled
    assert sorted(first) == sorted(second) == sorted(plain)  # the same 64 examples


def test_mnist_augmentation_shifts_without_flip(mnist_dir):
    x, _ = data.load_arrays("mnist", "test", take=6, data_dir=mnist_dir)
    ds = data.load_dataset("mnist", "test", batch_size=6, data_dir=mnist_dir, take=6, augment=True)
    aug, _ = next(ds.as_numpy_iterator())
    assert aug.shape == x.shape and aug.dtype == np.float32
    assert 0.0 <= aug.min() and aug.max() <= 1.0
    for a, img in zip(aug, x):
        assert matches_a_shift(a, img, pad=2, flips=[False], fill=0.0)


def test_tfds_data_dir_is_read_at_call_time(mnist_dir, monkeypatch, tmp_path):
    import tensorflow_datasets  # noqa: F401  (imported before the variable is set)

    monkeypatch.setenv("TFDS_DATA_DIR", mnist_dir)
    x, y = data.load_arrays("mnist", "test", take=5)
    raw_x, raw_y = raw_split("mnist", "test[:5]", mnist_dir)
    np.testing.assert_allclose(x, raw_x / 255.0, atol=1e-7)
    np.testing.assert_array_equal(y, raw_y)
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))
    with pytest.raises(data.DatasetNotAvailableError, match=str(tmp_path)):
        data.load_dataset("mnist", "test", download=False)


def test_keras_fit_on_the_pipeline(mnist_dir):
    model = models.get_model("lenet5")
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    ds = data.load_dataset("mnist", "train", batch_size=16, data_dir=mnist_dir, take=32, shuffle=True)
    hist = model.fit(ds, epochs=1, verbose=0, shuffle=False)
    assert np.isfinite(hist.history["loss"][0])


def test_cifar10_standardization_with_mock_data():
    with tfds.testing.mock_data(num_examples=6):
        raw_x, raw_y = raw_split("cifar10", "train")
        x, y = data.load_arrays("cifar10", "train")
        batches = list(data.load_dataset("cifar10", "test", batch_size=4, take=5).as_numpy_iterator())
    assert x.shape == (6, 32, 32, 3) and x.dtype == np.float32 and y.dtype == np.int32
    np.testing.assert_allclose(x, (raw_x / 255.0 - MEAN) / STD, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(y, raw_y)
    assert [b[0].shape for b in batches] == [(4, 32, 32, 3), (1, 32, 32, 3)]
    # not merely scaled: values below zero and above one
    assert x.min() < -1.5 and x.max() > 1.5


def test_cifar10_augmentation_crops_and_flips_with_mock_data():
    with tfds.testing.mock_data(num_examples=8):
        raw_x, _ = raw_split("cifar10", "train")
        ds = data.load_dataset("cifar10", "train", batch_size=8, augment=True, seed=3)
        epoch1 = next(ds.as_numpy_iterator())[0]
        epoch2 = next(ds.as_numpy_iterator())[0]
        again = next(data.load_dataset("cifar10", "train", batch_size=8, augment=True,
                                       seed=3).as_numpy_iterator())[0]
    assert epoch1.shape == (8, 32, 32, 3) and epoch1.dtype == np.float32
    np.testing.assert_array_equal(epoch1, again)  # seeded
    assert not np.array_equal(epoch1, epoch2)  # fresh crops each epoch
    unstandardized = epoch1 * STD + MEAN  # back to [0, 1], the padding is black
    flipped = 0
    for a, img in zip(unstandardized, raw_x / 255.0):
        assert matches_a_shift(a, img, pad=4, flips=[False, True], fill=0.0)
        flipped += not matches_a_shift(a, img, pad=4, flips=[False], fill=0.0)
    assert 0 < flipped < 8  # both outcomes occur among 8 examples with this seed


def test_unknown_dataset_and_split(mnist_dir):
    for call in (lambda: data.load_dataset("cifar100"), lambda: data.num_classes("cifar100"),
                 lambda: data.input_shape("svhn")):
        with pytest.raises(data.DatasetError) as info:
            call()
        assert isinstance(info.value, ValueError) and isinstance(info.value, kp.KerasPruneError)
        assert "mnist" in str(info.value) and "cifar10" in str(info.value)
    with pytest.raises(data.DatasetError, match="Did you mean 'cifar10'"):
        data.load_dataset("cifar100")
    with pytest.raises(data.DatasetError, match="Unknown split 'validation'"):
        data.load_dataset("mnist", split="validation", data_dir=mnist_dir)
    with pytest.raises(data.DatasetError, match="take"):
        data.load_dataset("mnist", data_dir=mnist_dir, take=0)


def test_dataset_not_available_offline(tmp_path, monkeypatch):
    empty = str(tmp_path / "tfds")
    with pytest.raises(data.DatasetNotAvailableError) as info:
        data.load_dataset("cifar10", data_dir=empty, download=False)
    text = str(info.value)
    assert "not available offline" in text and empty in text
    assert "TFDS_DATA_DIR" in text and "data_dir" in text

    def no_network(self, *args, **kwargs):
        raise OSError("[Errno 101] Network is unreachable\n  (long details)")

    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", no_network)
    with pytest.raises(data.DatasetNotAvailableError) as info:
        data.load_dataset("cifar10", data_dir=empty)
    text = str(info.value)
    assert "Network is unreachable" in text and "long details" not in text
    assert "TFDS_DATA_DIR" in text and "\n" not in text
    assert info.value.__suppress_context__  # no chained traceback from tfds
