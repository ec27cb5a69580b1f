"""What a gradual run checks before it writes anything to its directory.

:meth:`kerasprune.GradualPruner.run` calls :func:`check_run` before a new run writes
``run.json`` or round 0, so an argument that cannot work (an ``exclude`` pattern that
matches nothing, a target metric the model never measures, a model without a loss, an
empty dataset) fails with a :class:`~kerasprune.errors.KerasPruneError` and leaves the
directory as it was: the corrected call needs no ``resume`` and no other directory.
"""

from __future__ import annotations

from typing import Any, Iterable, List, Optional

import keras

from kerasprune.backend import host_arrays
from kerasprune.errors import DatasetError, RunError, SelectionError, TargetError, first_line
from kerasprune.graph.analysis import analyze
from kerasprune.importance import get_criterion
from kerasprune.importance.stream import count_batches, iter_batches
from kerasprune.runs.target import Target

__all__ = ["check_run", "first_batch", "has_loss", "measured_metrics"]


def has_loss(model: keras.Model) -> bool:
    """Whether ``model`` is compiled with a loss.

    The compile configuration decides where there is one: a model compiled again without
    a loss keeps its former ``model.loss``, yet neither trains nor passes it to the models
    :func:`kerasprune.rebuild` makes from it.
    """
    if not getattr(model, "compiled", False):
        return False
    try:
        config = model.get_compile_config()
    except Exception:  # a model whose compile arguments cannot be serialized
        config = None
    if config:
        return config.get("loss") is not None
    return getattr(model, "loss", None) is not None


def first_batch(data: Any, what: str) -> Optional[tuple]:
    """The first ``(x, y, sample_weight)`` batch of ``data``, without using up an iterator.

    Args:
        data: a ``tf.data.Dataset``, a ``keras.utils.PyDataset``, numpy arrays or an
            iterable of batches.
        what: how errors name ``data`` (``"train_data"``).

    Returns:
        The batch, or None for a one-pass iterator (a generator), which is not read.

    Raises:
        DatasetError: ``data`` is None or holds no batch.
    """
    if data is None:
        raise DatasetError(f"{what} is None: give the batches to use")
    if iter_is_itself(data):
        return None
    batch = next(iter_batches(data, max_batches=1), None)
    if batch is None:
        raise DatasetError(f"{what} holds no examples (no batch at all)")
    return batch


def iter_is_itself(data: Any) -> bool:
    """Whether ``data`` is a one-pass iterator (reading it would use it up)."""
    try:
        return iter(data) is data
    except TypeError:
        return False


def measured_metrics(model: keras.Model, batch: tuple) -> List[str]:
    """The names ``GradualPruner`` records for ``model`` (``val_loss``, ``val_accuracy``...),
    from one test step on ``batch``; the weights are left unchanged.

    Raises:
        DatasetError: the model cannot be evaluated on the batch (its shapes do not fit);
            the message gives Keras's first line.
    """
    x, y, sample_weight = host_arrays(batch)
    try:
        logs = model.test_on_batch(x, y, sample_weight=sample_weight, return_dict=True)
    except Exception as exc:  # shapes, dtypes or labels that do not fit the model
        raise DatasetError(
            f"model '{model.name}' cannot be evaluated on val_data: "
            f"{first_line(exc, type(exc).__name__)[:300]}"
        ) from None
    return sorted(f"val_{k}" for k in logs)


def check_run(
    model: keras.Model,
    train_data: Any,
    val_data: Any,
    *,
    target: Optional[Target],
    exclude: Iterable[str],
    criterion: str,
    fine_tune_epochs: int,
) -> None:
    """Refuse, before anything is written, a run that would fail on its arguments.

    Args:
        model: the compiled model to prune.
        train_data: the fine-tuning and scoring data.
        val_data: the data the target is measured on.
        target: the run's target, or None.
        exclude: the selection's ``exclude`` patterns.
        criterion: the importance criterion's name.
        fine_tune_epochs: epochs of fine-tuning per round.

    Raises:
        NothingPrunableError: every channel group of the model is frozen.
        SelectionError: an ``exclude`` pattern matches no group or layer.
        RunError: the model has no loss, and the run fine-tunes or scores with one.
        DatasetError: an empty dataset, or ``val_data`` the model cannot be evaluated on.
        TargetError: the target's metric is not one the model measures.
    """
    graph = analyze(model, warn=False)
    graph.require_prunable()
    graph.matching(list(exclude), error=SelectionError)
    needs = get_criterion(criterion).needs
    if not has_loss(model) and (fine_tune_epochs > 0 or needs == "labels"):
        why = "fine-tuned" if fine_tune_epochs > 0 else f"scored by {criterion!r}"
        raise RunError(
            f"model '{model.name}' is compiled without a loss, so it cannot be {why}: "
            "compile it with one, model.compile(optimizer, loss, metrics)"
        )
    if (fine_tune_epochs > 0 or needs != "weights") and not callable(train_data):  # a function of the round's seed: read per round
        if train_data is None or not count_batches(train_data):  # 0 or not known
            first_batch(train_data, "train_data")
    batch = first_batch(val_data, "val_data")
    if batch is None or target is None:
        return
    measured = measured_metrics(model, batch)
    if target.metric not in measured:
        raise TargetError(
            f"the target's metric {target.metric!r} is never measured: model '{model.name}' "
            f"reports {', '.join(measured)} on val_data (its compiled loss and metrics); "
            "target one of those, or compile the model with that metric"
        )
