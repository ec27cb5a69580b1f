"""Image classification datasets as batched ``tf.data`` pipelines (tensorflow-datasets).

:func:`load_dataset` gives ``(images, labels)`` batches ready for ``model.fit``:

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

import difflib
import os
from dataclasses import dataclass
from typing import List, Optional, Tuple, Union

import numpy as np

from kerasprune.backend import TENSORFLOW_EXTRA, require_tensorflow
from kerasprune.errors import BackendError, DatasetError, DatasetNotAvailableError, first_line

__all__ = [
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


def _load_tfds(spec: _Spec, split: str, data_dir: Optional[str], download: bool):
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
        return tfds.load(spec.tfds_name, download=False, **kwargs)
    except AssertionError:
        pass  # tfds's "could not find data in <data_dir>": not prepared there
    except Exception as exc:  # an unknown split, a damaged data_dir, ...
        raise DatasetError(
            f"cannot read split {split!r} of dataset {spec.tfds_name!r}: {_first_line(exc)}"
        ) from None

    where = data_dir or os.path.join(os.path.expanduser("~"), "tensorflow_datasets")
    advice = (
        "Without network access, prepare it on a machine that has one (tfds downloads it), "
        "copy the data_dir over and point to it with the TFDS_DATA_DIR environment "
        "variable or the data_dir argument (--data-dir)."
    )
    if not download:
        raise DatasetNotAvailableError(
            f"dataset {spec.tfds_name!r} is not available offline: no prepared copy in "
            f"{where} and downloading is off. {advice}"
        )
    try:
        return tfds.load(spec.tfds_name, download=True, **kwargs)
    except Exception as exc:  # no network, proxy, missing optional dependency, ...
        raise DatasetNotAvailableError(
            f"dataset {spec.tfds_name!r} is not available offline: no prepared copy in "
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
    ds = _load_tfds(spec, split, _resolve_data_dir(data_dir), download)
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
