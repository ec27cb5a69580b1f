"""Batches of scoring data, one at a time.

Data-driven criteria never hold more than one batch: the data is read batch by batch and
each batch only adds to per-channel sums. Accepted forms of ``data``:

- a ``tf.data.Dataset`` (or any iterable, a generator, a ``keras.utils.PyDataset``)
  whose elements are batches: ``x``, ``(x,)``, ``(x, y)`` or ``(x, y, sample_weight)``;
- numpy arrays, cut into batches of ``batch_size``: an array ``x``, or a tuple ``(x,)``,
  ``(x, y)`` or ``(x, y, sample_weight)``. A *tuple* is always read as ``(x, y, ...)``;
  the inputs of a multi-input model are given as a *list* or *dict* ``x``.
"""

from __future__ import annotations

import math
from typing import Any, Iterator, Optional, Tuple

import keras
import numpy as np

from kerasprune.errors import ImportanceError

__all__ = ["Batch", "iter_batches", "count_batches"]

Batch = Tuple[Any, Any, Any]


def _is_array(a: Any) -> bool:
    return isinstance(a, np.ndarray) or (hasattr(a, "shape") and hasattr(a, "dtype") and not hasattr(a, "element_spec"))


def _is_arrays(data: Any) -> bool:
    """True when ``data`` is arrays to cut into batches (not already batches)."""
    if _is_array(data):
        return True
    if isinstance(data, tuple) and data and 1 <= len(data) <= 3:
        return all(d is None or _is_array(d) or _is_structure_of_arrays(d) for d in data) and (
            _is_array(data[0]) or _is_structure_of_arrays(data[0])
        )
    return _is_structure_of_arrays(data)


def _is_structure_of_arrays(d: Any) -> bool:
    if isinstance(d, dict):
        return bool(d) and all(_is_array(v) for v in d.values())
    if isinstance(d, list):
        return bool(d) and all(_is_array(v) for v in d)
    return False


def _unpack(element: Any) -> Batch:
    if isinstance(element, tuple):
        if len(element) == 1:
            return element[0], None, None
        if len(element) == 2:
            return element[0], element[1], None
        if len(element) == 3:
            return element
        raise ImportanceError(
            f"a batch must be x, (x,), (x, y) or (x, y, sample_weight); got a tuple of {len(element)}"
        )
    return element, None, None


def _length(x: Any) -> int:
    leaves = keras.tree.flatten(x)
    n = {int(a.shape[0]) for a in leaves}
    if len(n) != 1:
        raise ImportanceError(f"the arrays of the scoring data have different lengths: {sorted(n)}")
    return n.pop()


def count_batches(data: Any, batch_size: int = 32, max_batches: Optional[int] = None) -> Optional[int]:
    """How many batches :func:`iter_batches` will yield, or None when unknown."""
    n: Optional[int] = None
    if data is None:
        n = 0
    elif _is_arrays(data):
        x = _unpack(data)[0] if isinstance(data, tuple) else data
        n = math.ceil(_length(x) / batch_size)
    elif hasattr(data, "cardinality"):
        c = int(data.cardinality())
        n = c if c >= 0 else None
    else:
        try:
            n = len(data)
        except TypeError:
            n = None
    if max_batches is not None:
        n = max_batches if n is None else min(n, max_batches)
    return n


def iter_batches(data: Any, batch_size: int = 32, max_batches: Optional[int] = None) -> Iterator[Batch]:
    """Yield ``(x, y, sample_weight)`` batches of ``data`` (``y``/``sample_weight`` may be None).

    Args:
        data: a ``tf.data.Dataset`` or iterable of batches, or numpy arrays (see the module
            docstring for the accepted forms).
        batch_size: batch size used to cut arrays (ignored for datasets and iterables).
        max_batches: stop after this many batches (None: all of them).
    """
    if batch_size < 1:
        raise ImportanceError(f"batch_size must be >= 1, got {batch_size}")
    if max_batches is not None and max_batches < 1:
        raise ImportanceError(f"max_batches must be >= 1 or None, got {max_batches}")
    limit = math.inf if max_batches is None else max_batches
    if _is_arrays(data):
        x, y, sw = _unpack(data) if isinstance(data, tuple) else (data, None, None)
        n = _length(x)
        for part in (y, sw):
            if part is not None and _length(part) != n:
                raise ImportanceError("the scoring data's x, y and sample_weight have different lengths")
        done = 0
        for start in range(0, n, batch_size):
            if done >= limit:
                return
            cut = slice(start, start + batch_size)
            take = lambda a: None if a is None else keras.tree.map_structure(lambda v: v[cut], a)  # noqa: E731
            yield take(x), take(y), take(sw)
            done += 1
        return
    if isinstance(data, keras.utils.PyDataset):
        items: Any = (data[i] for i in range(len(data)))
    else:
        try:
            items = iter(data)
        except TypeError:
            raise ImportanceError(
                f"cannot read scoring data of type {type(data).__name__}: give a tf.data.Dataset "
                "of (x, y) batches, numpy arrays (x, y), or an iterable of batches"
            ) from None
    done = 0
    for element in items:
        if done >= limit:
            return
        yield _unpack(element)
        done += 1
