"""Data for ``model.fit`` as batched ``tf.data`` pipelines: a user's own, and the papers'.

:func:`load_data` reads the data a user has as ``(train, val)``: a directory of images in
one folder per class, a ``.npz`` file of ``x``/``y`` arrays, ``module:function`` returning
``(train, val)``, any tensorflow-datasets name, or one of the datasets below. Those inputs
are fed as they are (float32, image pixels 0 to 255): the preprocessing a model expects
is inside the model, or given as ``rescale``. The ``kerasprune`` command's ``--data``
calls it.

:func:`load_dataset` prepares the papers' datasets, ``(images, labels)`` batches ready
for ``model.fit``:

- ``mnist`` and ``fashion_mnist``: 28x28x1 float32 images scaled to ``[0, 1]``.
- ``cifar10``: 32x32x3 float32 images standardized per channel,
  ``(x / 255 - CIFAR10_MEAN) / CIFAR10_STD``, with the usual CIFAR-10 training-set
  statistics (mean 0.4914, 0.4822, 0.4465; std 0.2470, 0.2435, 0.2616: the standard
  deviation over all pixels; some code uses 0.2023, 0.1994, 0.2010, the mean of the
  per-image deviations, instead).

Labels are int32 class indices. ``augment=True`` applies the standard light
augmentation before standardization: a random crop of the image zero-padded by 4
pixels (2 for the 28x28 datasets) and, for CIFAR-10 only, a random horizontal flip (a
flipped digit is another glyph). Augmentation and shuffling are seeded: the same
``seed`` gives the same sequence of epochs, and each epoch differs from the last.

Data come from a tensorflow-datasets ``data_dir``: the ``data_dir`` argument, else the
``TFDS_DATA_DIR`` environment variable (read at each call, so setting it after
``tensorflow_datasets`` was imported works too), else ``~/tensorflow_datasets``. A
dataset that is not there is downloaded by tfds; where that fails (no network) a
:class:`DatasetNotAvailableError` says so in one line.

The loaders need TensorFlow and tensorflow-datasets (``pip install kerasprune[tensorflow]``,
else a :class:`~kerasprune.errors.BackendError` says so); the pipelines they return feed
``model.fit`` on every Keras backend.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
import io
import math
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Optional, Sequence, Tuple, Union

import numpy as np

from kerasprune.backend import TENSORFLOW_EXTRA, require_tensorflow
from kerasprune.errors import BackendError, DatasetError, DatasetNotAvailableError, first_line

__all__ = [
    "load_data",
    "data_kind",
    "DataSplits",
    "DATA_KINDS",
    "load_dataset",
    "load_arrays",
    "num_classes",
    "input_shape",
    "available_datasets",
    "DatasetError",
    "DatasetNotAvailableError",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
]

#: Per-channel mean of the CIFAR-10 training images, on the ``[0, 1]`` scale.
CIFAR10_MEAN: Tuple[float, float, float] = (0.4914, 0.4822, 0.4465)
#: Per-channel standard deviation of the CIFAR-10 training images, on the ``[0, 1]`` scale.
CIFAR10_STD: Tuple[float, float, float] = (0.2470, 0.2435, 0.2616)

_SHUFFLE_BUFFER = 10_000


@dataclass(frozen=True)
class _Spec:
    tfds_name: str
    shape: Tuple[int, int, int]
    classes: int
    mean: Optional[Tuple[float, ...]]  # None: scale to [0, 1] only
    std: Optional[Tuple[float, ...]]
    pad: int  # zero padding of the random crop
    flip: bool  # random horizontal flip


_DATASETS = {
    "mnist": _Spec("mnist", (28, 28, 1), 10, None, None, pad=2, flip=False),
    "fashion_mnist": _Spec("fashion_mnist", (28, 28, 1), 10, None, None, pad=2, flip=False),
    "cifar10": _Spec("cifar10", (32, 32, 3), 10, CIFAR10_MEAN, CIFAR10_STD, pad=4, flip=True),
}


def _key(name: str) -> str:
    # "CIFAR-10", "cifar_10" and "cifar10" name the same dataset
    return name.strip().lower().replace("-", "").replace("_", "")


_BY_KEY = {_key(n): n for n in _DATASETS}


def available_datasets() -> List[str]:
    """The dataset names :func:`load_dataset` knows how to prepare."""
    return list(_DATASETS)


def _spec(name: str) -> _Spec:
    if isinstance(name, str) and _key(name) in _BY_KEY:
        return _DATASETS[_BY_KEY[_key(name)]]
    known = available_datasets()
    close = difflib.get_close_matches(str(name).strip().lower(), known, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise DatasetError(f"unknown dataset {name!r}.{hint} Known datasets: {', '.join(known)}.")


def num_classes(name: str) -> int:
    """Number of classes of a dataset (10 for all of them so far)."""
    return _spec(name).classes


def input_shape(name: str) -> Tuple[int, int, int]:
    """Shape of one image of a dataset, channels last: ``(28, 28, 1)``, ``(32, 32, 3)``."""
    return _spec(name).shape


def _resolve_data_dir(data_dir: Optional[Union[str, os.PathLike]]) -> Optional[str]:
    # tfds reads TFDS_DATA_DIR once, when it is imported; read it at each call instead
    if data_dir is not None:
        return os.path.expanduser(os.fspath(data_dir))
    return os.environ.get("TFDS_DATA_DIR") or None


def _first_line(exc: BaseException) -> str:
    line = first_line(exc)
    return f"{type(exc).__name__}: {line[:300]}" if line else type(exc).__name__


def _load_tfds(tfds_name: str, split: str, data_dir: Optional[str], download: bool):
    """The split as a dataset of ``(uint8 image, int64 label)``, with readable errors."""
    try:
        import tensorflow_datasets as tfds
    except ImportError as exc:
        raise BackendError(f"kerasprune.data needs tensorflow-datasets, which is not installed: {TENSORFLOW_EXTRA}") from exc

    kwargs = dict(
        split=split,
        data_dir=data_dir,
        as_supervised=True,
        shuffle_files=False,
        read_config=tfds.ReadConfig(try_autocache=False),
    )
    try:
        return tfds.load(tfds_name, download=False, **kwargs)
    except AssertionError:
        pass  # tfds's "could not find data in <data_dir>": not prepared there
    except Exception as exc:  # an unknown split, a damaged data_dir, ...
        raise DatasetError(
            f"cannot read split {split!r} of dataset {tfds_name!r}: {_first_line(exc)}"
        ) from None

    where = data_dir or os.path.join(os.path.expanduser("~"), "tensorflow_datasets")
    advice = (
        "Without network access, prepare it on a machine that has one (tfds downloads it), "
        "copy the data_dir over and point to it with the TFDS_DATA_DIR environment "
        "variable or the data_dir argument (--data-dir)."
    )
    if not download:
        raise DatasetNotAvailableError(
            f"dataset {tfds_name!r} is not available offline: no prepared copy in "
            f"{where} and downloading is off. {advice}"
        )
    try:
        return tfds.load(tfds_name, download=True, **kwargs)
    except Exception as exc:  # no network, proxy, missing optional dependency, ...
        raise DatasetNotAvailableError(
            f"dataset {tfds_name!r} is not available offline: no prepared copy in "
            f"{where}, and downloading it failed ({_first_line(exc)}), as it does with no "
            f"network. {advice}"
        ) from None


def _check_count(arg: str, value: object, allow_none: bool = False) -> None:
    if allow_none and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise DatasetError(f"{arg} must be a positive integer, got {value!r}")


def load_dataset(
    name: str,
    split: str = "train",
    batch_size: int = 128,
    data_dir: Optional[Union[str, os.PathLike]] = None,
    augment: bool = False,
    take: Optional[int] = None,
    shuffle: bool = False,
    seed: int = 0,
    *,
    cache: bool = True,
    download: bool = True,
):
    """A batched, prefetched ``tf.data.Dataset`` of ``(images, labels)``.

    The pipeline: read the split (tfds split syntax, ``"train[:90%]"`` works), keep the
    first ``take`` examples, cache them in memory, shuffle, augment, scale (and
    standardize, CIFAR-10), batch, prefetch.

    Args:
        name: ``"mnist"``, ``"fashion_mnist"`` or ``"cifar10"`` (case, ``-`` and ``_``
            ignored).
        split: a tfds split, ``"train"``, ``"test"``, ``"train[:90%]"``, ...
        batch_size: examples per batch (the last batch may be smaller).
        data_dir: the tensorflow-datasets data directory; ``None`` uses
            ``$TFDS_DATA_DIR``, else ``~/tensorflow_datasets``.
        augment: random crop of the zero-padded image (pad 4, or 2 for 28x28 images) and,
            for CIFAR-10, random horizontal flip. Shapes are unchanged.
        take: use only the first ``take`` examples of the split (before shuffling, so
            the subset is the same every epoch).
        shuffle: shuffle the examples, anew each epoch.
        seed: seed of the shuffle and of the augmentation.
        cache: keep the decoded ``uint8`` examples in memory after the first epoch.
        download: let tfds download a dataset missing from ``data_dir``.

    Returns:
        A ``tf.data.Dataset`` of ``(float32 images (B, H, W, C), int32 labels (B,))``.

    Raises:
        DatasetError: unknown dataset name, unknown split, or a bad argument.
        DatasetNotAvailableError: the dataset is neither in ``data_dir`` nor could be
            downloaded.
        BackendError: TensorFlow or tensorflow-datasets is not installed.
    """
    spec = _spec(name)
    _check_count("batch_size", batch_size)
    _check_count("take", take, allow_none=True)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise DatasetError(f"seed must be an integer, got {seed!r}")

    tf = require_tensorflow("kerasprune.data (tf.data pipelines)")
    ds = _load_tfds(spec.tfds_name, split, _resolve_data_dir(data_dir), download)
    if take is not None:
        ds = ds.take(int(take))
    if cache:
        ds = ds.cache()
    if shuffle:
        buffer = min(int(take), _SHUFFLE_BUFFER) if take is not None else _SHUFFLE_BUFFER
        ds = ds.shuffle(buffer, seed=int(seed), reshuffle_each_iteration=True)

    height, width, channels = spec.shape
    mean = tf.constant(spec.mean, tf.float32) if spec.mean is not None else None
    std = tf.constant(spec.std, tf.float32) if spec.std is not None else None

    def scale(image, label):
        image = tf.cast(image, tf.float32) / 255.0
        if mean is not None:
            image = (image - mean) / std
        return image, tf.cast(label, tf.int32)

    def random_crop_flip(example, pair):
        image, label = example
        image = tf.cast(image, tf.float32)
        crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(pair, 2))
        if spec.pad:
            image = tf.pad(image, [[spec.pad, spec.pad], [spec.pad, spec.pad], [0, 0]])
            image = tf.image.stateless_random_crop(image, (height, width, channels), seed=crop_seed)
        if spec.flip:
            image = tf.image.stateless_random_flip_left_right(image, seed=flip_seed)
        return image, label

    if augment:
        # one fresh pair of seeds per example and per epoch, reproducible from `seed`
        seeds = tf.data.Dataset.random(seed=int(seed), rerandomize_each_iteration=True).batch(2)
        ds = tf.data.Dataset.zip((ds, seeds)).map(random_crop_flip, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.map(scale, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(int(batch_size)).prefetch(tf.data.AUTOTUNE)


def load_arrays(
    name: str,
    split: str = "test",
    take: Optional[int] = None,
    data_dir: Optional[Union[str, os.PathLike]] = None,
    *,
    download: bool = True,
) -> Tuple[np.ndarray, np.ndarray]:
    """A split as NumPy arrays, preprocessed like :func:`load_dataset` (no augmentation).

    Args:
        name: dataset name, as for :func:`load_dataset`.
        split: a tfds split.
        take: only the first ``take`` examples.
        data_dir: the tensorflow-datasets data directory (default as for
            :func:`load_dataset`).
        download: let tfds download a dataset missing from ``data_dir``.

    Returns:
        ``(x, y)``: float32 images ``(N, H, W, C)`` and int32 labels ``(N,)``.

    Raises:
        DatasetError: as :func:`load_dataset`.
    """
    spec = _spec(name)
    ds = load_dataset(
        name, split=split, batch_size=1024, data_dir=data_dir, take=take, cache=False, download=download
    )
    xs, ys = [], []
    for x, y in ds.as_numpy_iterator():
        xs.append(x)
        ys.append(y)
    if not xs:
        return np.zeros((0,) + spec.shape, np.float32), np.zeros((0,), np.int32)
    return np.concatenate(xs), np.concatenate(ys)


# --------------------------------------------------------------------------- a user's own data

#: the kinds of data source :func:`load_data` reads, as :func:`data_kind` names them
DATA_KINDS = ("dataset", "tfds", "npz", "directory", "function")

_FUNCTION = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
_TFDS_NAME = re.compile(r"^[a-z][a-z0-9_]*(/[a-z0-9_.]+)?(:[0-9.*]+)?$")  # name/config:version
_COLOR_MODES = {1: "grayscale", 3: "rgb", 4: "rgba"}
_IMAGE_SUFFIXES = (".bmp", ".gif", ".jpeg", ".jpg", ".png")  # image_dataset_from_directory's


class DataSplits(tuple):
    """``(train, val)``: the two batched datasets of :func:`load_data`, unpacked as a pair.

    Attributes:
        train: the training batches (shuffled anew each epoch).
        val: the validation batches (the split metrics and targets are measured on).
        num_classes: the number of classes, where the source says it (a dataset's info,
            a directory's class folders, the largest integer label of a ``.npz`` plus
            one), else None.
        input_shape: the shape of one input example, from the datasets' element spec
            (None for a ``module:function`` source that is not a ``tf.data.Dataset``).
        kind: which of :data:`DATA_KINDS` the source is.
        source: the source as given.
    """

    def __new__(cls, train: Any, val: Any, *, num_classes: Optional[int] = None,
                input_shape: Optional[Tuple[int, ...]] = None, kind: str = "",
                source: str = "") -> "DataSplits":
        self = super().__new__(cls, (train, val))
        self.num_classes = num_classes
        self.input_shape = input_shape
        self.kind = kind
        self.source = source
        return self

    @property
    def train(self) -> Any:
        """The training batches."""
        return self[0]

    @property
    def val(self) -> Any:
        """The validation batches."""
        return self[1]


def data_kind(source: Union[str, os.PathLike]) -> str:
    """Which kind of data source ``source`` names (one of :data:`DATA_KINDS`).

    - ``"dataset"``: a dataset kerasprune prepares (:func:`available_datasets`);
    - ``"function"``: ``module:function`` (``my_data:load``), a Python function returning
      ``(train, val)``;
    - ``"npz"``: a ``.npz`` file of arrays;
    - ``"directory"``: a directory of images in one folder per class;
    - ``"tfds"``: any other name, read as a tensorflow-datasets name (``"mnist:3.0.1"``,
      ``"tf_flowers"``).

    Args:
        source: the source, as :func:`load_data` takes it.

    Returns:
        The kind.

    Raises:
        DatasetError: ``source`` looks like a file or directory that does not exist, or is
            a file of another type.
    """
    text = os.fspath(source).strip()
    if not text:
        raise DatasetError("the data source is empty: give a directory of images, a .npz file, "
                           "module:function or a dataset name")
    path = Path(os.path.expanduser(text))
    if path.is_dir():
        return "directory"
    if path.suffix == ".npz":
        if not path.is_file():
            raise DatasetError(f"no such file: {text}")
        return "npz"
    if _key(text) in _BY_KEY:
        return "dataset"
    if _FUNCTION.match(text) and not path.exists():
        return "function"
    if path.exists():
        raise DatasetError(
            f"cannot read {text} as data: give a directory of images in class folders, a .npz "
            "file with x and y arrays, module:function or a dataset name"
        )
    if not _TFDS_NAME.match(text):
        raise DatasetError(f"no such directory or file: {text}")
    return "tfds"


def check_options(source: str, kind: str, *, augment: bool = False,
                  rescale: Optional[float] = None, take: Optional[int] = None,
                  val_take: Optional[int] = None, image_size: Any = None) -> None:
    """Refuse options of :func:`load_data` that do not apply to a kind of source.

    Args:
        source: the source, for the message.
        kind: its kind (:func:`data_kind`).
        augment, rescale, take, val_take, image_size: as :func:`load_data` takes them.

    Raises:
        DatasetError: ``augment`` for other data than the prepared datasets, ``rescale`` for
            a prepared dataset, or any of them for ``module:function`` data.
    """
    if kind == "function":
        given = [n for n, v in (("take (--take)", take), ("val_take (--val-take)", val_take),
                                ("rescale (--rescale)", rescale),
                                ("image_size (--image-size)", image_size), ("augment", augment))
                 if v not in (None, False)]
        if given:
            raise DatasetError(f"the (train, val) of {source} are used as they are: "
                               f"{', '.join(given)} does not apply to them")
    if augment and kind != "dataset":
        raise DatasetError(
            f"augment (--augment) applies to the datasets kerasprune prepares "
            f"({', '.join(_DATASETS)}); for {source}, put augmentation layers "
            "(keras.layers.RandomCrop, RandomFlip) in the model, where they run in training only"
        )
    if kind == "dataset" and rescale is not None:
        raise DatasetError(f"rescale (--rescale) applies to a user's data; {source} is already "
                           "scaled as kerasprune.data says")


def _count(arg: str, value: object) -> Optional[int]:
    _check_count(arg, value, allow_none=True)
    return None if value is None else int(value)


def _image_size(image_size: Optional[Sequence[int]]) -> Optional[Tuple[int, int]]:
    if image_size is None:
        return None
    size = tuple(image_size)
    if len(size) != 2 or not all(isinstance(v, (int, np.integer)) and v >= 1 for v in size):
        raise DatasetError(f"image_size must be two positive integers (height, width), "
                           f"got {image_size!r}")
    return int(size[0]), int(size[1])


def _pipeline(tf, ds, *, batch_size: int, take: Optional[int], shuffle: bool, seed: int,
              rescale: Optional[float], cache: bool = True):
    """Unbatched ``(x, y)`` examples -> take, cache, shuffle, float32 and rescale, batch."""
    if take is not None:
        ds = ds.take(take)
    if cache:
        ds = ds.cache()
    if shuffle:
        buffer = min(take, _SHUFFLE_BUFFER) if take is not None else _SHUFFLE_BUFFER
        ds = ds.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)

    def convert(x, y):
        x = tf.cast(x, tf.float32)
        if rescale is not None:
            x = x * rescale
        return x, tf.cast(y, tf.int32)

    return ds.map(convert, num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size).prefetch(
        tf.data.AUTOTUNE)


def _element_shape(ds) -> Optional[Tuple[int, ...]]:
    spec = getattr(ds, "element_spec", None)
    if isinstance(spec, tuple) and spec and hasattr(spec[0], "shape"):
        return tuple(spec[0].shape)[1:]
    return None


def _first(ds) -> bool:
    """Whether ``ds`` (batches) has at least one element (reads one at most)."""
    if hasattr(ds, "cardinality"):
        n = int(ds.cardinality())
        if n == 0:
            return False
        if n > 0:
            return True
    if hasattr(ds, "__len__"):
        return len(ds) > 0
    for _ in ds.take(1) if hasattr(ds, "take") else ds:
        return True
    return False


def _require_examples(ds, what: str) -> None:
    if not _first(ds):
        raise DatasetError(f"{what} holds no examples")


def _from_directory(tf, directory: str, *, image_size, channels: int, val_fraction: float,
                    seed: int):
    import keras

    if channels not in _COLOR_MODES:
        raise DatasetError(f"images have 1, 3 or 4 channels (grayscale, rgb, rgba); the model "
                           f"takes {channels}")
    count = sum(1 for f in Path(directory).glob("*/**/*")
                if f.suffix.lower() in _IMAGE_SUFFIXES and f.is_file())
    if count and int(count * val_fraction) == 0:
        raise DatasetError(
            f"{directory} holds {count} images, of which val_fraction {val_fraction:g} "
            "(--val-fraction) holds out none for validation: give more images or a larger "
            "fraction"
        )
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # "Using N files for training."
            train, val = keras.utils.image_dataset_from_directory(
                directory, labels="inferred", label_mode="int",
                color_mode=_COLOR_MODES[channels], image_size=image_size, batch_size=None,
                shuffle=True, seed=seed, validation_split=val_fraction, subset="both",
                verbose=False,
            )
    except (ValueError, OSError) as exc:
        raise DatasetError(f"cannot read images from {directory}: {first_line(exc)}") from None
    names = list(train.class_names)
    if len(names) < 2:
        raise DatasetError(
            f"{directory} has {len(names)} class folder{'s' if len(names) != 1 else ''}"
            f"{' (' + names[0] + ')' if names else ''}: put the images of each class in a "
            "folder of its own, directory/<class>/<image>, two classes at least"
        )
    return train, val, len(names)


def _from_npz(tf, path: str, *, val_fraction: float, seed: int):
    try:
        with np.load(path, allow_pickle=False) as arrays:
            found = {k: arrays[k] for k in arrays.files}
    except (OSError, ValueError) as exc:
        raise DatasetError(f"cannot read {path} as a .npz file: {first_line(exc)}") from None
    missing = [k for k in ("x", "y") if k not in found]
    if missing:
        raise DatasetError(f"{path} holds no {' and no '.join(missing)} array (it holds "
                           f"{', '.join(sorted(found)) or 'nothing'}): save it with "
                           "np.savez(path, x=inputs, y=labels[, x_val=..., y_val=...])")
    if ("x_val" in found) != ("y_val" in found):
        raise DatasetError(f"{path} holds one of x_val and y_val: give both, or neither")
    x, y = found["x"], found["y"]
    if len(x) != len(y):
        raise DatasetError(f"{path}: x holds {len(x)} examples and y {len(y)} labels")
    if "x_val" in found:
        xv, yv = found["x_val"], found["y_val"]
        if len(xv) != len(yv):
            raise DatasetError(f"{path}: x_val holds {len(xv)} examples and y_val {len(yv)}")
    else:
        order = np.random.default_rng(seed).permutation(len(x))
        n_val = int(round(len(x) * val_fraction))
        xv, yv = x[order[:n_val]], y[order[:n_val]]
        x, y = x[order[n_val:]], y[order[n_val:]]
    labels = [a for a in (y, yv) if a.size]
    classes = None
    if labels and all(np.issubdtype(a.dtype, np.integer) and a.ndim == 1 for a in labels):
        classes = int(max(a.max() for a in labels)) + 1
    train = tf.data.Dataset.from_tensor_slices((x, y))
    val = tf.data.Dataset.from_tensor_slices((xv, yv))
    return train, val, classes, (len(x), len(xv))


def _from_function(source: str):
    module_name, _, function_name = source.partition(":")
    cwd = os.getcwd()
    added = cwd not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise DatasetError(f"cannot import {module_name!r} for {source}: {first_line(exc)}"
                               ) from None
    finally:
        if added:
            sys.path.remove(cwd)
    fn = getattr(module, function_name, None)
    if not callable(fn):
        raise DatasetError(f"{module_name} has no function {function_name!r} ({source})")
    result = fn()
    if not (isinstance(result, (tuple, list)) and len(result) == 2):
        raise DatasetError(f"{source}() must return (train, val), two datasets; it returned "
                           f"{type(result).__name__}")
    return result


def load_data(
    source: Union[str, os.PathLike],
    *,
    batch_size: int = 128,
    train_split: str = "train[:90%]",
    val_split: str = "train[90%:]",
    val_fraction: float = 0.1,
    image_size: Optional[Sequence[int]] = None,
    channels: int = 3,
    rescale: Optional[float] = None,
    take: Optional[int] = None,
    val_take: Optional[int] = None,
    augment: bool = False,
    seed: int = 0,
    data_dir: Optional[Union[str, os.PathLike]] = None,
    download: bool = True,
) -> DataSplits:
    """Training and validation batches from data a user has, as ``(train, val)``.

    ``source`` is one of (:func:`data_kind` tells which):

    - a dataset kerasprune prepares, ``"mnist"``, ``"fashion_mnist"``, ``"cifar10"``:
      :func:`load_dataset` of ``train_split`` and ``val_split``, scaled (and standardized)
      as it says;
    - any other tensorflow-datasets name (``"mnist:3.0.1"``, ``"tf_flowers"``): its
      ``train_split`` and ``val_split`` as ``(image, label)`` pairs, resized to
      ``image_size`` when given;
    - a directory of images in one folder per class, ``directory/<class>/<image>``
      (``keras.utils.image_dataset_from_directory``): read at ``image_size`` (default
      256x256) with ``channels`` colour channels; a seeded ``val_fraction`` of the images
      is the validation set, labels are the class indices in the folders' alphabetical
      order;
    - a ``.npz`` file with arrays ``x`` and ``y`` (integer labels), and ``x_val`` and
      ``y_val`` for validation; without them a seeded ``val_fraction`` of ``x`` is;
    - ``"module:function"``: ``function()`` of that module (imported with the working
      directory on ``sys.path``) returns ``(train, val)``, used as they are.

    Inputs other than those of the prepared datasets are fed as they are, converted to
    float32: image pixels are 0 to 255. The preprocessing the model expects is either part
    of the model (a ``keras.layers.Rescaling`` layer, say) or given here: ``rescale``
    multiplies every input (``1 / 255`` gives ``[0, 1]``).

    Args:
        source: the data, as above.
        batch_size: examples per batch.
        train_split: the tfds split trained on (tensorflow-datasets sources).
        val_split: the tfds split metrics are measured on (tensorflow-datasets sources).
        val_fraction: the fraction of a directory's images (or of a ``.npz`` without
            ``x_val``) held out for validation, in ``(0, 1)``.
        image_size: ``(height, width)`` images are resized to (directories, tfds sources).
        channels: colour channels of a directory's images: 1, 3 or 4.
        rescale: a factor every input is multiplied by (not for the prepared datasets).
        take: use only the first ``take`` training examples.
        val_take: use only the first ``val_take`` validation examples.
        augment: the random crop (and flip) of :func:`load_dataset`; only for the
            prepared datasets (put augmentation layers in the model for other data).
        seed: seed of the shuffle, the held-out fraction and the augmentation.
        data_dir: the tensorflow-datasets data directory (as for :func:`load_dataset`).
        download: let tfds download a dataset missing from ``data_dir``.

    Returns:
        A :class:`DataSplits`: ``train, val = load_data(...)``, with ``num_classes`` and
        ``input_shape`` where they are known.

    Raises:
        DatasetError: a source that does not exist or cannot be read, a bad argument, an
            option that does not apply to the source, or a split with no examples.
        DatasetNotAvailableError: a tensorflow-datasets dataset that is not available.
        BackendError: TensorFlow (or tensorflow-datasets) is not installed.
    """
    kind = data_kind(source)
    text = os.fspath(source).strip()
    _check_count("batch_size", batch_size)
    take, val_take = _count("take", take), _count("val_take", val_take)
    size = _image_size(image_size)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise DatasetError(f"seed must be an integer, got {seed!r}")
    if not (isinstance(val_fraction, (int, float)) and 0.0 < val_fraction < 1.0):
        raise DatasetError(f"val_fraction must be between 0 and 1, got {val_fraction!r}")
    if rescale is not None and not (isinstance(rescale, (int, float)) and math.isfinite(rescale)
                                    and rescale > 0):
        raise DatasetError(f"rescale must be a positive number, got {rescale!r}")
    check_options(text, kind, augment=augment, rescale=rescale, take=take, val_take=val_take,
                  image_size=size)
    if kind == "function":
        train, val = _from_function(text)
        _require_examples(train, f"the training set of {text}")
        _require_examples(val, f"the validation set of {text}")
        return DataSplits(train, val, input_shape=_element_shape(train), kind=kind, source=text)
    if kind == "dataset":
        spec = _spec(text)
        common = dict(batch_size=batch_size, data_dir=data_dir, seed=seed, download=download)
        train = load_dataset(text, split=train_split, augment=augment, take=take, shuffle=True,
                             **common)
        val = load_dataset(text, split=val_split, take=val_take, **common)
        _require_examples(train, f"split {train_split!r} of {text}")
        _require_examples(val, f"split {val_split!r} of {text}")
        return DataSplits(train, val, num_classes=spec.classes, input_shape=spec.shape,
                          kind=kind, source=text)

    tf = require_tensorflow("kerasprune.data (tf.data pipelines)")
    seed = int(seed)
    classes = None
    if kind == "directory":
        train, val, classes = _from_directory(tf, text, image_size=size or (256, 256),
                                              channels=channels, val_fraction=val_fraction,
                                              seed=seed)
        what = (f"the training images of {text}", f"the validation images of {text} "
                f"(val_fraction {val_fraction:g})")
    elif kind == "npz":
        train, val, classes, counts = _from_npz(tf, text, val_fraction=val_fraction, seed=seed)
        what = (f"x of {text}", f"the validation examples of {text}")
        for n, w in zip(counts, what):
            if n == 0:
                raise DatasetError(f"{w} holds no examples")
    else:  # a tensorflow-datasets name
        where = _resolve_data_dir(data_dir)
        train = _load_tfds(text, train_split, where, download)
        val = _load_tfds(text, val_split, where, download)
        classes = _tfds_classes(text, where)
        if size is not None:
            train, val = (d.map(lambda x, y: (tf.image.resize(x, size), y)) for d in (train, val))
        what = (f"split {train_split!r} of {text}", f"split {val_split!r} of {text}")
    train = _pipeline(tf, train, batch_size=int(batch_size), take=take, shuffle=True, seed=seed,
                      rescale=rescale)
    val = _pipeline(tf, val, batch_size=int(batch_size), take=val_take, shuffle=False, seed=seed,
                    rescale=rescale)
    _require_examples(train, what[0])
    _require_examples(val, what[1])
    return DataSplits(train, val, num_classes=classes, input_shape=_element_shape(train),
                      kind=kind, source=text)


def _tfds_classes(name: str, data_dir: Optional[str]) -> Optional[int]:
    """The number of classes of a tensorflow-datasets dataset's ``label``, if it says."""
    import tensorflow_datasets as tfds

    try:
        label = tfds.builder(name, data_dir=data_dir).info.features["label"]
        return int(label.num_classes)
    except Exception:  # no label feature, or one without classes
        return None
