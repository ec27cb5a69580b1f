"""Every exception kerasprune raises, in one place.

Every error a user can trigger derives from :class:`KerasPruneError`, and each also
derives from the built-in exception a Python user would expect (``TypeError`` for a
model kerasprune cannot read, ``ValueError`` for a bad option or keep-set, ``KeyError``
for an unknown name, ``RuntimeError`` for a handler that breaks its contract), so
existing ``except ValueError`` code keeps working. Catch :class:`KerasPruneError` to
catch them all.
"""

from __future__ import annotations

__all__ = [
    "KerasPruneError",
    "UnsupportedModelError",
    "GraphMismatchError",
    "GroupNotFoundError",
    "HandlerError",
    "RebuildError",
    "RegistryError",
    "KeepSetError",
    "FrozenGroupError",
    "ImportanceError",
    "SelectionError",
    "OptionError",
    "NothingPrunableError",
    "ScheduleError",
    "RunError",
    "TargetError",
    "TargetNotMetError",
    "SpeedupNotReachedError",
    "CallbackError",
    "PlotError",
    "ExportError",
    "DatasetError",
    "DatasetNotAvailableError",
    "UnknownModelError",
    "UsageError",
    "BackendError",
]


class KerasPruneError(Exception):
    """Base class of every error raised by kerasprune."""


# --------------------------------------------------------------------------- models, graphs


class UnsupportedModelError(KerasPruneError, TypeError):
    """The model cannot be analyzed (no functional graph, not built, ...)."""


class GraphMismatchError(KerasPruneError, ValueError):
    """A ``graph=`` argument was analyzed from another model than the one passed with it."""


class GroupNotFoundError(KerasPruneError, KeyError):
    """No channel group (or layer slot) of that name in the graph.

    The message names the closest existing names. Unlike a plain ``KeyError``, ``str()``
    gives the message itself, not its ``repr``.
    """

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class HandlerError(KerasPruneError, RuntimeError):
    """A pruning handler broke its contract (wrong number of output layouts, a slot it
    cannot slice): a bug in that handler, not in the model."""


class RebuildError(KerasPruneError, RuntimeError):
    """The edited model could not be built from its config (the message names the model
    or layer and the cause)."""


class RegistryError(KerasPruneError, ValueError):
    """A registration that would silently replace another one, or a bad registration."""


# --------------------------------------------------------------------------- keep-sets


class KeepSetError(KerasPruneError, ValueError):
    """A keep-set passed to :func:`kerasprune.rebuild` is not valid for the model."""


class FrozenGroupError(KeepSetError):
    """A keep-set asks to prune a channel group that cannot be pruned."""


# --------------------------------------------------------------------------- scoring, selection


class ImportanceError(KerasPruneError, ValueError):
    """A scoring request kerasprune cannot satisfy.

    Raised for an unknown criterion or normalization, a data-driven criterion without
    data (or without labels or a loss), and a group a criterion cannot score (``bn_gamma``
    on a group without BatchNormalization, a response criterion on a group whose channels
    no layer's weights read), and an ``exclude`` pattern that matches no group or
    layer.
    """


class SelectionError(KerasPruneError, ValueError):
    """A selection request is not valid: bad ratio, scope, unit or guard (a
    ``SelectionOptions`` that cannot be made), an option given twice with different
    values, scores that do not fit the graph, an ``exclude`` pattern that matches no
    group or layer, or a run resumed with other selection options."""


# --------------------------------------------------------------------------- loops


class OptionError(KerasPruneError, ValueError):
    """An argument outside the values it accepts (a batch size of 0, a speed-up of 1, a
    negative width); the message names the argument and what it accepts."""


class NothingPrunableError(KerasPruneError, ValueError):
    """Pruning was asked of a model none of whose channel groups may lose a channel; the
    message says why its groups are frozen."""


class ScheduleError(KerasPruneError, ValueError):
    """A pruning ratio or schedule that cannot be used (outside ``(0, 1)``, not rising, ...)."""


class RunError(KerasPruneError, ValueError):
    """A gradual run that cannot start or resume as asked: a directory that already holds
    a run (or none to resume), a model that cannot be fine-tuned."""


class TargetError(KerasPruneError, ValueError):
    """A performance target that cannot be read, or whose metric was never measured."""


class TargetNotMetError(KerasPruneError, ValueError):
    """The model is already below the performance target before any pruning."""


class SpeedupNotReachedError(KerasPruneError, ValueError):
    """Even the largest FLOPs cut allowed does not make the model fast enough."""


class CallbackError(KerasPruneError, ValueError):
    """A kerasprune callback cannot work with the model, optimizer or settings it was given."""


# --------------------------------------------------------------------------- results, data


class PlotError(KerasPruneError, ValueError):
    """A plot cannot be drawn: unsupported file type, missing metric, no data."""


class ExportError(KerasPruneError, ValueError):
    """An export that cannot be made or does not reproduce the Keras model's outputs."""


class DatasetError(KerasPruneError, ValueError):
    """A dataset cannot be loaded: unknown name, unknown split, bad argument."""


class DatasetNotAvailableError(DatasetError):
    """The dataset is not in the data directory and could not be downloaded."""


class UnknownModelError(KerasPruneError, ValueError):
    """:func:`kerasprune.models.get_model` was given a name that is not in the zoo."""


class UsageError(KerasPruneError, ValueError):
    """A command-line argument that cannot be used; the command prints it as one line."""


# --------------------------------------------------------------------------- backends


class BackendError(KerasPruneError, RuntimeError):
    """A feature that needs TensorFlow installed (``pip install kerasprune[tensorflow]``)
    or another Keras backend than the one running; the message names which."""


def first_line(exc: BaseException, default: str = "") -> str:
    """The first line of ``exc``'s message, for a one-line error that names its cause
    (Keras's messages run over several lines); ``default`` when the message is empty."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else default
