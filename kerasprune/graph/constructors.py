"""Constructor mappings: which constructor argument sets which sublayer width.

A composite layer (a residual block written as a ``keras.layers.Layer`` subclass) and a
model subclass that builds its graph in ``__init__`` (keras-hub Backbones) have configs
of constructor arguments, not of layers. To rebuild one with thinner sublayers as its
own class, :func:`kerasprune.rebuild` needs the arguments that build those widths. It
finds them by probing the class (building it with one or two integer arguments changed
and seeing which weights change shape); a class can instead *state* them, which is
checked before probing, in one of two ways::

    # declarative: `units` is the width of axis 1 of sublayer "inner"'s kernel
    kp.register_constructor(GatedBlock, {"units": ("inner", "kernel", 1)})

    # a function of the layer, its config and its thin sublayers' weight shapes
    @kp.register_constructor(Tower)
    def tower_config(layer, config, widths):
        return {**config, "filters": widths["conv_a"]["kernel"][-1]}

Either way the config is then built and checked like a probed one: the thin model keeps
the class only if that config builds exactly the thin sublayers (else it holds a
functional model of them, and a warning says which width differs). Handler modules can
register mappings for the classes of the library they cover.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from typing import Any, Callable, Dict, Mapping, Optional, Tuple, Union

from kerasprune.errors import RebuildError, RegistryError

__all__ = [
    "register_constructor",
    "unregister_constructor",
    "constructor_for",
    "registered_constructors",
    "Constructor",
    "WidthSource",
    "ThinWidths",
    "ConfigFunction",
    "parse_argument",
    "set_leaf",
]

#: where a constructor argument's value is read: (sublayer path, weight name, axis)
WidthSource = Tuple[str, str, int]
#: sublayer path (``block/sublayer`` for nested ones) -> weight name -> thin shape
ThinWidths = Mapping[str, Mapping[str, Tuple[int, ...]]]
#: ``(original layer, its config, thin widths) -> the new config`` (None: no config
#: of this class builds these widths)
ConfigFunction = Callable[[Any, dict, ThinWidths], Optional[dict]]
LeafPath = Tuple[Union[str, int], ...]

_ARGUMENT = re.compile(r"[A-Za-z_]\w*(?:\[\d+\]|\.[A-Za-z_]\w*)*\Z")
_PART = re.compile(r"\[(\d+)\]|\.?([A-Za-z_]\w*)")


def parse_argument(argument: str) -> LeafPath:
    """The path of keys and indices of a config entry written ``name``, ``name[1]``,
    ``name[1][0]`` or ``name.key`` (the notation kerasprune's messages use).

    Raises:
        RegistryError: ``argument`` is not written that way.
    """
    if not isinstance(argument, str) or not _ARGUMENT.match(argument):
        raise RegistryError(
            f"constructor argument {argument!r} is not a config entry written "
            "'name', 'name[1]' or 'name.key'"
        )
    return tuple(int(i) if i else key for i, key in _PART.findall(argument))


def set_leaf(node: Any, path: LeafPath, value: Any) -> Any:
    """A copy of config ``node`` with the entry at ``path`` replaced (tuples stay
    tuples; the rest is shared)."""
    if not path:
        return value
    key, rest = path[0], path[1:]
    if isinstance(node, Mapping):
        new = dict(node)
        new[key] = set_leaf(node[key], rest, value)
        return new
    items = list(node)
    items[key] = set_leaf(items[key], rest, value)
    return tuple(items) if isinstance(node, tuple) else items


def _get_leaf(node: Any, path: LeafPath) -> Any:
    for key in path:
        node = node[key]
    return node


@dataclass(frozen=True)
class Constructor:
    """How the constructor of ``cls`` sets its sublayers' widths (one registration).

    Attributes:
        cls: the layer or model class.
        widths: argument -> :data:`WidthSource` (declarative form), or None.
        function: a :data:`ConfigFunction` (functional form), or None.
    """

    cls: type
    widths: Optional[Mapping[str, WidthSource]] = None
    function: Optional[ConfigFunction] = None

    def config(self, layer: Any, config: dict, thin: ThinWidths) -> Optional[dict]:
        """The config that should build ``layer``'s class with the ``thin`` widths.

        Args:
            layer: the original layer (or model).
            config: its ``get_config()``, plain dicts and lists.
            thin: its sublayers' thin weight shapes (every sublayer with weights).

        Returns:
            The new config, or None where the registered function says no config
            builds these widths.

        Raises:
            RebuildError: the mapping names an argument, sublayer, weight or axis the
                layer does not have, or the function raises or returns no dict.
        """
        what = f"the constructor mapping registered for {self.cls.__name__} (layer '{layer.name}')"
        if self.function is not None:
            name = getattr(self.function, "__name__", repr(self.function))
            try:
                new = self.function(layer, copy.deepcopy(config), thin)
            except Exception as exc:  # the user's code: name it, keep the cause
                raise RebuildError(
                    f"{what}: {name}() raised {type(exc).__name__}: {exc}"
                ) from exc
            if new is not None and not isinstance(new, Mapping):
                raise RebuildError(
                    f"{what}: {name}() returned a {type(new).__name__}, not a config dict or None"
                )
            return None if new is None else dict(new)
        new = config
        for argument, (sublayer, weight, axis) in (self.widths or {}).items():
            path = parse_argument(argument)
            try:
                _get_leaf(config, path)
            except (KeyError, IndexError, TypeError):
                raise RebuildError(
                    f"{what} sets argument '{argument}', which is not in "
                    f"{self.cls.__name__}'s config (its keys: {', '.join(map(str, config))})"
                ) from None
            if sublayer not in thin:
                raise RebuildError(
                    f"{what} reads argument '{argument}' from sublayer '{sublayer}', which has "
                    f"no weights or does not exist (sublayers with weights: {', '.join(thin)})"
                )
            shapes = thin[sublayer]
            if weight not in shapes:
                raise RebuildError(
                    f"{what} reads argument '{argument}' from weight '{weight}' of sublayer "
                    f"'{sublayer}', which has the weights {', '.join(shapes)}"
                )
            shape = shapes[weight]
            if not -len(shape) <= axis < len(shape):
                raise RebuildError(
                    f"{what} reads argument '{argument}' from axis {axis} of weight '{weight}' "
                    f"of sublayer '{sublayer}', which has the shape {tuple(shape)}"
                )
            new = set_leaf(new, path, int(shape[axis]))
        return dict(new)


_CONSTRUCTORS: Dict[type, Constructor] = {}


def _check_widths(cls: type, widths: Any) -> Dict[str, WidthSource]:
    if not isinstance(widths, Mapping):
        raise TypeError(
            f"register_constructor({cls.__name__}, widths) takes a dict of argument -> "
            f"(sublayer path, weight name, axis), got {type(widths).__name__}"
        )
    if not widths:
        raise RegistryError(f"register_constructor({cls.__name__}, widths): widths is empty")
    out: Dict[str, WidthSource] = {}
    for argument, source in widths.items():
        parse_argument(argument)
        ok = (
            isinstance(source, (tuple, list))
            and len(source) == 3
            and all(isinstance(s, str) and s for s in source[:2])
            and isinstance(source[2], int)
            and not isinstance(source[2], bool)
        )
        if not ok:
            raise RegistryError(
                f"register_constructor({cls.__name__}): argument '{argument}' maps to "
                f"{source!r}; expected (sublayer path, weight name, axis), e.g. "
                "('dense_1', 'kernel', 1)"
            )
        out[argument] = (source[0], source[1], source[2])
    return out


def register_constructor(
    cls: type,
    widths: Optional[Mapping[str, WidthSource]] = None,
    *,
    replace: bool = False,
) -> Any:
    """State which constructor argument of ``cls`` sets which sublayer width.

    Used by :func:`kerasprune.rebuild` before probing, for composite layers (a layer
    whose weights all belong to its sublayers) and for model subclasses that build
    their graph in ``__init__``. Two forms:

    * declarative: ``register_constructor(Block, {"units": ("inner", "kernel", 1)})``:
      the new value of argument ``units`` is the thin size of axis 1 of the kernel of
      sublayer ``inner``. Arguments are config entries written ``name``, ``name[1]``
      or ``name.key`` (for nested lists and dicts); sublayer paths are relative to the
      layer (``block/sublayer`` for a composite inside it, a layer's name inside a
      model); weight names are those of ``layer.weights`` (``kernel``, ``gamma``).
      Arguments not listed keep their values.
    * a function, as a decorator: ``@register_constructor(Block)`` on
      ``def f(layer, config, widths) -> dict | None`` that returns the whole new config
      (``widths``: sublayer path -> weight name -> thin shape), or None when no config
      builds these widths.

    The registration is for ``cls`` exactly (a subclass may take other arguments).

    Args:
        cls: a ``keras.layers.Layer`` (or ``keras.Model``) subclass.
        widths: the declarative mapping; leave it out for the decorator form.
        replace: allow replacing a mapping already registered for ``cls``.

    Returns:
        ``cls`` for the declarative form; for the decorator form, a decorator that
        registers the function and returns it unchanged.

    Raises:
        TypeError: ``cls`` is not a Keras layer class, ``widths`` is not a dict, or
            the decorated object is not callable.
        RegistryError: a badly written mapping, or ``cls`` already has one and
            ``replace`` is False.
    """
    import keras

    if not (isinstance(cls, type) and issubclass(cls, keras.layers.Layer)):
        raise TypeError(f"register_constructor() takes a Keras layer or model class, got {cls!r}")

    def register(entry: Constructor) -> None:
        if cls in _CONSTRUCTORS and not replace:
            raise RegistryError(
                f"{cls.__name__} already has a constructor mapping; pass replace=True to "
                "register_constructor() to replace it"
            )
        _CONSTRUCTORS[cls] = entry

    if widths is not None:
        register(Constructor(cls, widths=_check_widths(cls, widths)))
        return cls

    def decorator(function: ConfigFunction) -> ConfigFunction:
        if not callable(function):
            raise TypeError(
                f"register_constructor({cls.__name__}) decorates a function "
                f"(layer, config, widths) -> config, got {function!r}"
            )
        register(Constructor(cls, function=function))
        return function

    return decorator


def constructor_for(cls: type) -> Optional[Constructor]:
    """The constructor mapping registered for ``cls`` exactly, or None."""
    return _CONSTRUCTORS.get(cls)


def registered_constructors() -> Dict[type, Constructor]:
    """A copy of the registry: class -> its :class:`Constructor`."""
    return dict(_CONSTRUCTORS)


def unregister_constructor(cls: type) -> None:
    """Remove the mapping registered for ``cls`` (nothing if there is none)."""
    _CONSTRUCTORS.pop(cls, None)
