"""Models whose class builds the graph in its constructor, rebuilt as the same class.

A ``keras.Model`` subclass that builds a functional graph in ``__init__`` and calls
``super().__init__(inputs, outputs)`` (every keras-hub Backbone and Task, a user's
``class MyNet(keras.Model)``) has a config of constructor arguments (``filters=64``), not
of layers, so the rebuilder cannot edit one layer's width in it. It can still build the
same class again when the thin widths are exactly what other values of those arguments
build: a *uniform* change, every block's width following a ``filters`` or ``hidden_dim``
argument and the keep-set changing exactly what that argument changes.

:func:`same_class_config` finds this out without knowing the class. For each integer in
the config (nested lists and dicts included) it builds the class once with that integer
changed (halved; 2 for a 1), and sees which dimensions of which weights follow it and by
how much per unit (``dim = a * value + b``); a probe that fails to build, or builds other
layers or weights, rules that integer out. It then solves for the values that give the
thin dimensions, builds the class with them, and accepts the result only if every weight
shape and every layer config equals the thin model's.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import keras
import numpy as np

from kerasprune.graph.composite import is_container, iter_layers

__all__ = ["same_class_config", "model_shapes", "plain_config", "Shapes"]

Shape = Tuple[int, ...]
#: per layer of a model (in ``iter_layers`` order): its class and its weights' shapes
Shapes = List[Tuple[type, List[Shape]]]
LeafPath = Tuple[Union[str, int], ...]

# config keys whose integers are not widths: probing them would build the class in vain
_NOT_WIDTHS = {"seed", "name", "dtype"}


def model_shapes(model: keras.Model) -> Shapes:
    """Each layer's class and weight shapes, in ``iter_layers`` order (nested models
    are listed with no weights of their own: their layers follow them)."""
    out: Shapes = []
    for _, layer in iter_layers(model):
        weights = [] if is_container(layer) else layer.weights
        out.append((type(layer), [tuple(int(d) for d in w.shape) for w in weights]))
    return out


def plain_config(node: Any) -> Any:
    """A copy of a config made of plain dicts, lists and tuples.

    Keras keeps a list assigned to a layer attribute as a ``TrackedList`` that refers to
    its model, and a model's ``get_config()`` hands it on: ``copy.deepcopy`` of such a
    config copies the whole model (by saving it), this does not.
    """
    if isinstance(node, Mapping):
        return {key: plain_config(value) for key, value in node.items()}
    if isinstance(node, tuple):
        return tuple(plain_config(value) for value in node)
    if isinstance(node, list):
        return [plain_config(value) for value in node]
    if isinstance(node, np.ndarray):
        return node.copy()
    return node


def _int_leaves(config: Any) -> List[Tuple[LeafPath, int]]:
    """Every positive integer of a nested config, with its path of keys and indices."""
    out: List[Tuple[LeafPath, int]] = []

    def walk(node: Any, path: LeafPath) -> None:
        if isinstance(node, Mapping):
            for key, value in node.items():
                if key not in _NOT_WIDTHS:
                    walk(value, path + (key,))
        elif isinstance(node, (list, tuple)):
            for i, value in enumerate(node):
                walk(value, path + (i,))
        elif isinstance(node, (int, np.integer)) and not isinstance(node, bool) and node > 0:
            out.append((path, int(node)))

    walk(config, ())
    return out


def _set_leaf(node: Any, path: LeafPath, value: int) -> Any:
    """A copy of ``node`` with the integer at ``path`` replaced (tuples stay tuples)."""
    if not path:
        return value
    key, rest = path[0], path[1:]
    if isinstance(node, Mapping):
        new = dict(node)
        new[key] = _set_leaf(node[key], rest, value)
        return new
    items = list(node)
    items[key] = _set_leaf(items[key], rest, value)
    return tuple(items) if isinstance(node, tuple) else items


Builder = Optional[Callable[[Any], None]]


def _build(
    cls: type, config: dict, custom_objects: Mapping[str, type], build: Builder = None
) -> Optional[Any]:
    try:
        with keras.saving.custom_object_scope(dict(custom_objects)):
            built = cls.from_config(plain_config(config))
            if build is not None:
                build(built)  # a layer builds its weights when it is called
            return built
    except Exception:  # an argument value the class refuses: not a width to solve for
        return None


Entry = Tuple[int, int, int]  # (layer position, weight position, axis)


def _footprint(base: Shapes, probe: Shapes, step: int) -> Optional[Dict[Entry, float]]:
    """(layer, weight, axis) -> change of that dimension per unit of the probed integer,
    for the dimensions that changed; None if the probe built other layers or weights."""
    if len(base) != len(probe):
        return None
    out: Dict[Tuple[int, int, int], float] = {}
    for i, ((cls_a, shapes_a), (cls_b, shapes_b)) in enumerate(zip(base, probe)):
        if cls_a is not cls_b or len(shapes_a) != len(shapes_b):
            return None
        for w, (a, b) in enumerate(zip(shapes_a, shapes_b)):
            if len(a) != len(b):
                return None
            for axis, (x, y) in enumerate(zip(a, b)):
                if x != y:
                    out[(i, w, axis)] = (y - x) / step
    return out


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return bool(np.array_equal(np.asarray(a), np.asarray(b)))
    try:
        return bool(a == b)
    except Exception:
        return False


def _layer_config(layer: keras.layers.Layer) -> Optional[dict]:
    try:
        cfg = dict(layer.get_config())
    except Exception:  # a custom layer without get_config: compared by shapes only
        return None
    cfg.pop("name", None)  # layers named automatically get new numbers
    return cfg


def _configs_agree(candidate: keras.Model, want: Sequence[Optional[dict]]) -> bool:
    for (_, layer), cfg in zip(iter_layers(candidate), want):
        if cfg is None or is_container(layer):
            continue
        have = _layer_config(layer)
        if have is not None and not _equal(have, {k: v for k, v in cfg.items() if k != "name"}):
            return False
    return True


def _leaf_name(path: LeafPath) -> str:
    out = ""
    for key in path:
        out += f"[{key}]" if isinstance(key, int) else (f".{key}" if out else str(key))
    return out


def same_class_config(
    model: keras.Model,
    want: Shapes,
    want_configs: Sequence[Optional[dict]],
    custom_objects: Mapping[str, type],
    build: Builder = None,
) -> Union[Tuple[dict, keras.Model], str]:
    """The constructor arguments that build ``model``'s class with the thin widths.

    Args:
        model: a model whose ``get_config()`` holds constructor arguments.
        want: the thin model's layers (in ``iter_layers(model)`` order): class and
            weight shapes.
        want_configs: the thin layers' configs, in the same order (None: not compared).
        custom_objects: classes to deserialize the config with.
        build: called on each instance built from a config, to build its weights (a
            composite layer is built by calling it; a model is built already).

    Returns:
        ``(config, built)``: the changed config and the model it built, whose layers
        have exactly the ``want`` shapes and configs, and which has ``model``'s name
        (added to a config that leaves it out, where the class takes it: a nested model
        keeps the name its parent's graph calls it by); or, when no change of integer
        arguments gives them (a non-uniform keep-set, a class that refuses the values or
        cannot be built from its config at all), why not, as a phrase.
    """
    cls, config = type(model), plain_config(model.get_config())
    name = cls.__name__
    base = model_shapes(model)
    paths = [path for path, _ in iter_layers(model)]
    changed = {}
    for i, ((_, have), (_, thin)) in enumerate(zip(base, want)):
        for w, (a, b) in enumerate(zip(have, thin)):
            changed.update({(i, w, axis): y for axis, (x, y) in enumerate(zip(a, b)) if x != y})

    values: Dict[LeafPath, int] = {}
    uncovered = set(changed)
    probed = False
    for path, value in _int_leaves(config) if uncovered else []:
        probe_value = value // 2 if value >= 2 else 2
        probe = _build(cls, _set_leaf(config, path, probe_value), custom_objects, build)
        if probe is None:
            continue
        probed = True
        footprint = _footprint(base, model_shapes(probe), probe_value - value)
        del probe
        if not footprint or not (footprint.keys() & uncovered):
            continue
        steps = set()
        for (i, w, axis), per_unit in footprint.items():
            have = base[i][1][w][axis]
            steps.add((want[i][1][w][axis] - have) / per_unit)
        if len(steps) != 1:
            continue  # the keep-set changes only part of what this argument sets
        step = steps.pop()
        if not float(step).is_integer() or value + int(step) < 1:
            continue
        values[path] = value + int(step)
        uncovered -= footprint.keys()
        if not uncovered:
            break
    cannot = f"{name}.from_config(its own get_config()) fails"
    if uncovered and not probed and _build(cls, config, custom_objects, build) is None:
        return cannot
    if uncovered:
        layers = sorted({paths[i] for i, _, _ in uncovered}, key=paths.index)
        more = f" (and of {len(layers) - 1} more layers)" if len(layers) > 1 else ""
        return (
            f"no change of {name}'s integer arguments gives exactly the new widths of layer "
            f"'{layers[0]}'{more}"
        )

    new_config = config
    for path, value in values.items():
        new_config = _set_leaf(new_config, path, value)
    built = None
    if "name" not in new_config:  # a get_config without the name (keras-hub's VGGBackbone)
        named = dict(new_config, name=model.name)
        built = _build(cls, named, custom_objects, build)
        new_config = named if built is not None else new_config
    if built is None:
        built = _build(cls, new_config, custom_objects, build)
    if built is None and not values:
        return cannot
    changes = ", ".join(f"{_leaf_name(p)}={v}" for p, v in values.items())
    if built is None:
        return f"{name} refuses the arguments {changes}"
    if model_shapes(built) != list(want) or not _configs_agree(built, want_configs):
        return f"{name} built with {changes} has other layers than the thin model"
    return new_config, built
