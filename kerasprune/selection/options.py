"""``SelectionOptions``: the ten options that say how a round chooses its channels.

Every entry point that selects channels (:func:`~kerasprune.select`,
:func:`~kerasprune.prune`, :func:`~kerasprune.prune_for_speedup`,
:class:`~kerasprune.GradualPruner`, :class:`~kerasprune.callbacks.SoftFilterPruning`)
takes one ``options=SelectionOptions(...)``; each also keeps the options as keyword
shortcuts (``kp.prune(model, 0.3, scope="layerwise")``), which
:func:`resolve_options` merges into one :class:`SelectionOptions` before any work is
done. From there on only that object travels, so a new option is one field here.

::

    opts = kp.SelectionOptions(scope="hierarchical", hierarchy="flops", round_to=8)
    keep = kp.select(graph, scores, 0.3, options=opts)
    thin = kp.prune(model, 0.3, options=opts.replace(exclude=["fc*"]))

References:

- Wang et al. (2017), gradually global pruning (GGP): Zhengtao Wang, Ce Zhu, Zhiqiang Xia,
  Qi Guo and Yipeng Liu, "Towards Thinner Convolutional Neural Networks Through Gradually
  Global Pruning", IEEE International Conference on Image Processing (ICIP), 2017;
  arXiv:1703.09916.
- Salama et al. (2019), global normalized-L1 pruning: Abdullah Salama, Oleksiy Ostapenko,
  Tassilo Klein and Moin Nabi, "Pruning at a Glance: Global Neural Pruning for Model
  Compression", arXiv preprint, 2019; arXiv:1912.00200.
- Liu and Wu (2019), mean gradient and hierarchical global pruning: Congcong Liu and
  Huaming Wu, "Channel pruning based on mean gradient for accelerating Convolutional
  Neural Networks", Signal Processing 156, 84-91, 2019; doi:10.1016/j.sigpro.2018.10.019.
"""

from __future__ import annotations

import dataclasses
import numbers
from dataclasses import dataclass
from typing import Any, Dict, Iterable, Mapping, Optional, Sequence, Tuple

import numpy as np

from kerasprune.errors import SelectionError
from kerasprune.selection.scopes import SCOPES

__all__ = ["SelectionOptions", "resolve_options", "UNITS", "METHODS", "HIERARCHIES"]

#: what a selection's ratio counts
UNITS = ("neurons", "params", "flops")
#: how the amount is chosen: the lowest ``ratio`` of the unit, or a score percentile
METHODS = ("count", "percentile")
#: how the hierarchical scope shares the budget among its levels
HIERARCHIES = ("channels", "flops")


def _choice(name: str, value: Any, allowed: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise SelectionError(f"unknown {name} {value!r}; use one of: {', '.join(allowed)}")
    return value


def _integer(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise SelectionError(f"{name} must be an integer, got {value!r}")
    if isinstance(value, numbers.Integral):
        return int(value)
    if float(value).is_integer():
        return int(value)
    raise SelectionError(f"{name} must be an integer, got {value!r}")


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise SelectionError(f"{name} must be a number, got {value!r}")
    return float(value)


def _patterns(value: Any) -> Tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    try:
        items = tuple(value)
    except TypeError:
        raise SelectionError(
            f"exclude must be fnmatch patterns (a string or a list of strings), got {value!r}"
        ) from None
    bad = [p for p in items if not isinstance(p, str)]
    if bad:
        raise SelectionError(f"exclude patterns must be strings, got {bad[0]!r}")
    return items


def _flag(name: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise SelectionError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def _uniform(value: Any) -> bool:
    return _flag("uniform", value)


def _hidden_size(value: Any) -> bool:
    return _flag("hidden_size", value)


def _scope(value: Any) -> str:
    return _choice("scope", value, tuple(SCOPES))


def _unit(value: Any) -> str:
    return _choice("unit", value, UNITS)


def _method(value: Any) -> str:
    return _choice("method", value, METHODS)


def _hierarchy(value: Any) -> str:
    return _choice("hierarchy", value, HIERARCHIES)


def _max_ratio(value: Any) -> float:
    number = _number("max_ratio", value)
    if not 0.0 < number <= 1.0:
        raise SelectionError(f"max_ratio must be in (0, 1], got {value}")
    return number


def _min_channels(value: Any) -> int:
    value = _integer("min_channels", value)
    if value < 1:
        raise SelectionError(
            f"min_channels must be at least 1 (no group may be emptied), got {value}"
        )
    return value


def _round_to(value: Any) -> int:
    value = _integer("round_to", value)
    if value < 1:
        raise SelectionError(f"round_to must be a positive integer, got {value}")
    return value


# field -> its check, in the order the fields are checked (today's order of the messages)
_CHECKS = {
    "scope": _scope,
    "unit": _unit,
    "method": _method,
    "hierarchy": _hierarchy,
    "max_ratio": _max_ratio,
    "min_channels": _min_channels,
    "round_to": _round_to,
    "exclude": _patterns,
    "uniform": _uniform,
    "hidden_size": _hidden_size,
}


@dataclass(frozen=True)
class SelectionOptions:
    """How a round chooses the channels it removes: scope, unit, guards and exclusions.

    An immutable value, checked when it is made (an invalid option never reaches a
    selection), equal to another with the same options, and serializable with
    :meth:`get_config` / :meth:`from_config` (``GradualPruner`` writes it into its
    ``run.json``). Pass it as ``options=`` to :func:`kerasprune.select`,
    :func:`kerasprune.prune`, :func:`kerasprune.prune_for_speedup`,
    :class:`kerasprune.GradualPruner` or
    :class:`kerasprune.callbacks.SoftFilterPruning`.

    Example:

    ```python
    opts = kp.SelectionOptions(scope="layerwise", round_to=8, exclude=["fc*"])
    keep = kp.select(graph, scores, 0.3, options=opts)
    wider = opts.replace(min_channels=16)
    same = kp.SelectionOptions.from_config(json.loads(json.dumps(opts.get_config())))
    assert same == opts
    ```

    Args:
        scope: ``"global"`` (one ranking over every group, Wang et al. (2017)),
            ``"layerwise"`` (the same fraction of every group) or ``"hierarchical"``
            (Liu and Wu (2019): levels by feature-map size, global inside each).
        unit: what the ratio counts: ``"neurons"`` (channels), ``"params"`` (the
            model's parameters) or ``"flops"`` (its multiply-adds per example).
        hierarchy: how the hierarchical scope shares the budget among its levels: by
            ``"channels"`` or by ``"flops"`` of each level (other scopes ignore it).
        method: ``"count"`` (remove the lowest ``ratio`` of the unit) or
            ``"percentile"`` (every channel below the ``100 * ratio``-th percentile of
            the scores, Salama et al. (2019); ``unit="neurons"`` only).
        min_channels: no group keeps fewer channels (at least 1: a group is never
            emptied).
        max_ratio: no group loses more than this fraction of its channels, in (0, 1].
        round_to: every pruned group keeps a multiple of this many channels (widths
            that suit vector units); untouched groups keep their width.
        exclude: groups left alone, as ``fnmatch`` patterns of group names or of the
            paths of the layers producing them (one string or several; see
            :meth:`kerasprune.PruningGraph.matching`). A pattern that matches nothing is
            an error when the options meet a model.
        uniform: groups that repeat from block to block (the same layers and slots
            in every block of a transformer or a ResNet stage, the same width) all lose
            the same number of channels, each its own lowest-scoring ones; the scope
            chooses how many per kind (the mean of what it would remove from each).
            Then a keras-hub model, whose constructor sets one width for all its
            blocks, is rebuilt as its own class (see :func:`kerasprune.rebuild`); a
            group that only a stand-in class can thin (``ChannelGroup.outside_class``:
            Llama's heads) is left whole.
        hidden_size: also prune the groups whose channels are normalized together
            (``LayerNormalization`` or RMS normalization over the channel axis: the
            hidden size of a transformer, the residual stream of a ConvNeXt). Removing
            such a channel changes the statistic the kept ones are divided by, so the
            thin model is no longer the original with the channels cut off, only close
            to it until fine-tuned; off by default, which leaves them alone like
            ``exclude`` does.

    Raises:
        SelectionError: an unknown scope, unit, hierarchy or method (the message lists
            the accepted values), a guard out of range, or ``method="percentile"`` with
            another unit than ``"neurons"``.
    """

    scope: str = "global"
    """One ranking over every group, the same fraction of each, or levels by size."""
    unit: str = "neurons"
    """What the ratio counts: channels, parameters or multiply-adds."""
    hierarchy: str = "channels"
    """The hierarchical scope's shares: by the channels or the FLOPs of each level."""
    method: str = "count"
    """The lowest ``ratio`` of the unit, or every channel below a score percentile."""
    min_channels: int = 1
    """The fewest channels any group keeps."""
    max_ratio: float = 1.0
    """The largest fraction of its channels any group loses."""
    round_to: int = 1
    """Every pruned group keeps a multiple of this many channels."""
    exclude: Tuple[str, ...] = ()
    """``fnmatch`` patterns of the group and layer names left alone."""
    uniform: bool = False
    """Groups repeated from block to block lose the same number of channels each."""
    hidden_size: bool = False
    """Also prune groups normalized together over their channels (a transformer's hidden size)."""

    def __post_init__(self) -> None:
        for name, check in _CHECKS.items():
            object.__setattr__(self, name, check(getattr(self, name)))
        if self.method == "percentile" and self.unit != "neurons":
            raise SelectionError(
                "method='percentile' thresholds channel scores; use unit='neurons'"
            )

    @classmethod
    def fields(cls) -> Tuple[str, ...]:
        """The names of the options, in declaration order.

        Returns:
            ``("scope", "unit", "hierarchy", "method", "min_channels", "max_ratio",
            "round_to", "exclude", "uniform", "hidden_size")``.
        """
        return tuple(f.name for f in dataclasses.fields(cls))

    def get_config(self) -> Dict[str, Any]:
        """The options as a plain, JSON-serializable dict (``exclude`` as a list).

        Returns:
            option name -> value, every option included.
        """
        config = {name: getattr(self, name) for name in self.fields()}
        config["exclude"] = list(self.exclude)
        return config

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "SelectionOptions":
        """The options of a :meth:`get_config` dict; options it leaves out take their defaults.

        Args:
            config: option name -> value.

        Returns:
            A checked :class:`SelectionOptions`.

        Raises:
            SelectionError: a name that is no option, or an invalid value.
        """
        if not isinstance(config, Mapping):
            raise SelectionError(
                f"a SelectionOptions config is a dict, got {type(config).__name__}"
            )
        _check_names(config)
        return cls(**dict(config))

    def replace(self, **changes: Any) -> "SelectionOptions":
        """A copy with some options changed (checked like a new one).

        Example:

        ```python
        opts = kp.SelectionOptions(scope="layerwise")
        opts.replace(round_to=8)   # SelectionOptions(scope='layerwise', ..., round_to=8)
        ```

        Args:
            **changes: option name -> new value.

        Returns:
            The new :class:`SelectionOptions`; this one is unchanged.

        Raises:
            SelectionError: a name that is no option, or an invalid value.
        """
        _check_names(changes)
        return dataclasses.replace(self, **changes)


def _check_names(names: Iterable[str]) -> None:
    known = SelectionOptions.fields()
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SelectionError(
            f"unknown selection option {unknown[0]!r}; the options are: {', '.join(known)}"
        )


def resolve_options(
    options: Optional[SelectionOptions] = None, **keywords: Any
) -> SelectionOptions:
    """Merge an ``options=`` argument and the keyword shortcuts into one SelectionOptions.

    Every function that takes both calls this once, first; a keyword left at ``None``
    means "not given". A keyword given alongside ``options`` must agree with it: two
    different values for one option are an error, never a silent choice.

    Example:

    ```python
    resolve_options(scope="layerwise", round_to=8)          # from the keywords
    resolve_options(SelectionOptions(round_to=8))            # the object itself
    resolve_options(SelectionOptions(round_to=8), round_to=4)   # SelectionError
    ```

    Args:
        options: a :class:`SelectionOptions`, or None (the keywords and the defaults).
        **keywords: option name -> value, or None where the caller did not give it.

    Returns:
        The one :class:`SelectionOptions` the call selects with.

    Raises:
        SelectionError: ``options`` is not a :class:`SelectionOptions`, a keyword names
            no option, a value is invalid, or a keyword contradicts ``options``.
    """
    given = {k: v for k, v in keywords.items() if v is not None}
    _check_names(given)
    if options is None:
        return SelectionOptions(**given)
    if not isinstance(options, SelectionOptions):
        raise SelectionError(
            f"options must be a kerasprune.SelectionOptions, got {type(options).__name__}"
        )
    conflicts = []
    for name, value in given.items():
        value = _CHECKS[name](value)
        if value != getattr(options, name):
            conflicts.append(f"{name}={value!r} (options has {getattr(options, name)!r})")
    if conflicts:
        raise SelectionError(
            f"selection options given twice with different values: {', '.join(conflicts)}; "
            "give each option either in options= or as a keyword, or use "
            "options.replace(...)"
        )
    return options
