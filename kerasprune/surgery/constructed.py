"""Layers and models whose class builds their sublayers, rebuilt as the same class.

A ``keras.Model`` subclass that builds a functional graph in ``__init__`` and calls
``super().__init__(inputs, outputs)`` (every keras-hub Backbone and Task, a user's
``class MyNet(keras.Model)``), and a *composite* layer (a residual block written as a
``keras.layers.Layer`` subclass), have a config of constructor arguments (``filters=64``),
not of layers, so the rebuilder cannot edit one sublayer's width in it. It can still
build the same class again when the thin widths are exactly what other values of those
arguments build: a *uniform* change, every block's width following a ``filters`` or
``hidden_dim`` argument and the keep-set changing exactly what that argument changes.

:func:`same_class_config` finds these values without knowing the class, unless the
class states them (:func:`kerasprune.register_constructor`, tried first):

1. *Probe* each integer of the config (nested lists and dicts included): build the class
   once with that integer changed (halved; 2 for a 1) and see which dimensions of which
   weights change, and by how much (a *footprint*). A composite layer is built by
   calling it; where its input width must follow the argument (``x + conv(x)`` with
   ``filters`` as wide as ``x``), the probe fails on the original input shapes and is
   retried with the input's channel axis following the probed value. The input widths
   the keep-set changes are probed as well (the original config called on them).
2. *Solve*: an argument is set where its footprint, scaled, gives exactly the thin
   dimensions that are still unexplained (``dim = base + c * change``, one ``c`` for
   all of them, the new value an integer).
3. *Pairs*, where dimensions stay unexplained: two arguments that must change together
   (a residual as wide as two arguments, keras-hub Xception's identity shortcuts; query
   and key-value heads of grouped attention) are probed together, both halved, and
   solved along that direction or with one of them probed alone; two arguments that
   build alone are solved together from their own footprints. Only arguments whose
   probe failed, built other layers or touched the unexplained dimensions are paired,
   and at most :data:`PAIR_PROBES` pair probes are built.
4. *Check*: build the class with the solved values (on the thin input shapes) and accept
   the result only if every weight shape and every layer config equals the thin one.
"""

from __future__ import annotations

import contextlib
import itertools
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Set, Tuple, Union

import keras
import numpy as np

from kerasprune.graph.composite import is_container, iter_layers
from kerasprune.graph.constructors import constructor_for, set_leaf
from kerasprune.graph.keras_graph import shapes_only

__all__ = ["same_class_config", "model_shapes", "plain_config", "Shapes", "CallShapes", "PAIR_PROBES"]

Shape = Tuple[Optional[int], ...]
#: per layer of a model (in ``iter_layers`` order): its class and its weights' shapes
Shapes = List[Tuple[type, List[Tuple[int, ...]]]]
LeafPath = Tuple[Union[str, int], ...]
#: (layer position, weight position, axis) of one dimension; layer position -1 names
#: the input tensors of a composite layer's call (weight position: the input's)
Entry = Tuple[int, int, int]
INPUTS = -1

#: at most this many pair probes (each one build of the class) per same-class search
PAIR_PROBES = 2

# config keys whose integers are not widths: probing them would build the class in vain
_NOT_WIDTHS = {"seed", "name", "dtype"}
_EPS = 1e-6


def model_shapes(model: keras.layers.Layer) -> Shapes:
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


@dataclass(frozen=True)
class CallShapes:
    """How a composite layer builds its weights: by being called on inputs.

    Attributes:
        call: ``call(new_instance, shapes)`` calls a new instance on fresh symbolic
            inputs of ``shapes`` (one per input tensor of the original call, in its
            traced order), so that it builds its weights.
        original: the shapes of the original call's input tensors.
        thin: their shapes in the thin model (the channel axes the keep-set changes).
    """

    call: Callable[[Any, Sequence[Shape]], None]
    original: Tuple[Shape, ...]
    thin: Tuple[Shape, ...]

    def changed_axes(self) -> List[Tuple[int, int]]:
        """``(input, axis)`` of each input dimension the keep-set changes."""
        return [
            (i, axis)
            for i, (a, b) in enumerate(zip(self.original, self.thin))
            for axis, (x, y) in enumerate(zip(a, b))
            if x != y
        ]


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


def _build(
    cls: type, config: dict, custom_objects: Mapping[str, type],
    build: Optional[Callable[[Any], None]] = None, probe: bool = False,
) -> Optional[Any]:
    """``cls`` built from ``config`` (and by ``build``), or None where that fails. A
    ``probe`` is only measured: it is built with variables that have shapes and no
    values (:func:`~kerasprune.graph.keras_graph.shapes_only`), so probing a large model
    costs neither memory nor the time of its random initializers."""
    scope = shapes_only() if probe else contextlib.nullcontext()
    try:
        with keras.saving.custom_object_scope(dict(custom_objects)), scope:
            built = cls.from_config(plain_config(config))
            if build is not None:
                build(built)  # a layer builds its weights when it is called
            return built
    except Exception as exc:  # an argument value the class refuses: not a width to solve for
        if probe and "stateless scope" in str(exc):
            # the class makes a variable without an initializer (a keras-hub Task
            # compiles itself, making its optimizer's counter): build it for real
            return _build(cls, config, custom_objects, build)
        return None


def _footprint(base: Shapes, probe: Shapes) -> Tuple[Optional[Dict[Entry, int]], Dict[Entry, int]]:
    """``(changes, partial)``: (layer, weight, axis) -> change of that dimension, for
    the dimensions that changed; changes is None where the probe built other layers or
    weights, and partial then holds the changes of the layers before the first other one."""
    out: Dict[Entry, int] = {}
    for i, (a, b) in enumerate(itertools.zip_longest(base, probe)):
        if a is None or b is None:
            return None, out
        (cls_a, shapes_a), (cls_b, shapes_b) = a, b
        if cls_a is not cls_b or len(shapes_a) != len(shapes_b):
            return None, out
        if any(len(x) != len(y) for x, y in zip(shapes_a, shapes_b)):
            return None, out
        for w, (x_shape, y_shape) in enumerate(zip(shapes_a, shapes_b)):
            for axis, (x, y) in enumerate(zip(x_shape, y_shape)):
                if x != y:
                    out[(i, w, axis)] = y - x
    return out, {}


@dataclass
class _Probe:
    """One build of the class with some integer arguments changed.

    ``direction``: argument -> change; ``footprint``: dimension -> change (None: the
    probe failed or built other layers); ``raised``: the class refused the values;
    ``partial``: the changes before the first other layer, where it built other ones.
    """

    direction: Dict[LeafPath, int]
    footprint: Optional[Dict[Entry, int]]
    raised: bool = False
    partial: Dict[Entry, int] = field(default_factory=dict)


class _Prober:
    """Builds ``model``'s class from changed configs and measures what changed."""

    def __init__(
        self, model: Any, config: dict, custom_objects: Mapping[str, type],
        call: Optional[CallShapes],
    ) -> None:
        self.cls, self.config, self.custom_objects, self.call = type(model), config, custom_objects, call
        self.base = model_shapes(model)
        self.originals = dict(_int_leaves(config))
        self.values = set(self.originals.values()) | {
            d for shape in (call.original if call else ()) for d in shape if d is not None
        }
        self.built_any = False

    def build(
        self, config: dict, shapes: Optional[Sequence[Shape]] = None, probe: bool = False
    ) -> Optional[Any]:
        """An instance built from ``config`` (a composite called on ``shapes``, default
        the original call's), or None where that fails; a ``probe`` has weights with
        shapes and no values (see :func:`_build`)."""
        call = self.call
        if call is None:
            return _build(self.cls, config, self.custom_objects, probe=probe)
        at = call.original if shapes is None else shapes
        return _build(
            self.cls, config, self.custom_objects, lambda new: call.call(new, at), probe=probe
        )

    def measure(
        self, config: dict, shapes: Optional[Sequence[Shape]]
    ) -> Tuple[Optional[Any], Optional[Dict[Entry, int]], Dict[Entry, int]]:
        """``(built or None, changes, partial)`` of one build (see :func:`_footprint`);
        a composite's changed input dimensions are among the changes."""
        built = self.build(config, shapes, probe=True)
        if built is None:
            return None, None, {}
        self.built_any = True
        changes, partial = _footprint(self.base, model_shapes(built))
        if changes is not None and shapes is not None and self.call is not None:
            for i, (a, b) in enumerate(zip(self.call.original, shapes)):
                changes.update(
                    {(INPUTS, i, ax): y - x for ax, (x, y) in enumerate(zip(a, b)) if x != y}
                )
        return built, changes, partial

    def probe(self, direction: Dict[LeafPath, int]) -> _Probe:
        """Build the class with the arguments of ``direction`` changed by it: on the
        original input shapes, then (a composite whose call breaks or builds other
        layers there) with each input axis the keep-set changes following the argument
        whose original value it equals."""
        config = self.config
        for path, delta in direction.items():
            config = set_leaf(config, path, self.originals[path] + delta)
        tries: List[Optional[List[Shape]]] = [None]
        if self.call is not None:
            shapes = [list(s) for s in self.call.original]
            for i, axis in self.call.changed_axes():
                for path, delta in direction.items():
                    if shapes[i][axis] == self.originals[path]:
                        shapes[i][axis] = self.originals[path] + delta
                        break
            if shapes != [list(s) for s in self.call.original]:
                tries.append([tuple(s) for s in shapes])
        raised, partial = True, {}
        for shapes in tries:
            built, changes, part = self.measure(config, shapes)
            if changes is not None:
                return _Probe(direction, changes)
            raised = raised and built is None
            partial = partial or part
            del built
        return _Probe(direction, None, raised, partial)

    def input_probes(self) -> List[Dict[Entry, int]]:
        """The changes the thin input widths make, the arguments as they are: one per
        input whose width the keep-set changes and whose original config builds on it
        (an input tied to an argument, a residual's, is left to that argument)."""
        if self.call is None:
            return []
        out = []
        for i in sorted({i for i, _ in self.call.changed_axes()}):
            shapes = list(self.call.original)
            shapes[i] = self.call.thin[i]
            built, changes, _ = self.measure(self.config, shapes)
            del built
            if changes is not None:
                out.append(changes)
        return out


@dataclass
class _Move:
    """Arguments changed by ``scale`` times ``direction``, which changes the
    dimensions by ``scale`` times ``footprint``."""

    direction: Dict[LeafPath, int]
    footprint: Dict[Entry, int]
    scale: float


class _Solver:
    """The argument changes found so far, and the thin dimensions they leave unexplained.

    Args:
        target: dimension -> its change in the thin model (the dimensions it changes).
        originals: argument -> its original value.
    """

    def __init__(self, target: Dict[Entry, int], originals: Mapping[LeafPath, int]) -> None:
        self.target, self.originals = target, originals
        self.fixed: Dict[Entry, float] = {}  # what the thin inputs change by themselves
        self.moves: List[_Move] = []

    def add_fixed(self, changes: Mapping[Entry, int]) -> None:
        for entry, change in changes.items():
            self.fixed[entry] = self.fixed.get(entry, 0.0) + change

    def _predicted(self, moves: Sequence[_Move]) -> Dict[Entry, float]:
        out = dict(self.fixed)
        for move in moves:
            for entry, change in move.footprint.items():
                out[entry] = out.get(entry, 0.0) + move.scale * change
        return out

    def _unexplained(self, moves: Sequence[_Move]) -> Set[Entry]:
        predicted = self._predicted(moves)
        return {
            entry
            for entry in set(self.target) | set(predicted)
            if abs(self.target.get(entry, 0) - predicted.get(entry, 0.0)) > _EPS
        }

    def uncovered(self) -> Set[Entry]:
        """The dimensions whose thin size the changes found so far do not give."""
        return self._unexplained(self.moves)

    def values(self) -> Dict[LeafPath, int]:
        """argument -> its new value, for the arguments that change."""
        out: Dict[LeafPath, float] = {}
        for move in self.moves:
            for path, delta in move.direction.items():
                out[path] = out.get(path, float(self.originals[path])) + move.scale * delta
        return {p: int(round(v)) for p, v in out.items() if int(round(v)) != self.originals[p]}

    def solve(self, probes: Sequence[_Probe]) -> bool:
        """Add the multiples of the probes' directions that give exactly the thin sizes
        of every dimension they change (replacing earlier moves of the same arguments),
        where such integer values exist and explain more than before."""
        args = set().union(*(p.direction for p in probes))
        kept = [m for m in self.moves if not (m.direction.keys() & args)]
        predicted = self._predicted(kept)
        dims = sorted(set().union(*(p.footprint or {} for p in probes)))
        if not dims:
            return False
        a = np.array([[(p.footprint or {}).get(d, 0) for p in probes] for d in dims], dtype=float)
        r = np.array([self.target.get(d, 0) - predicted.get(d, 0.0) for d in dims], dtype=float)
        if not np.any(np.abs(r) > _EPS) or np.linalg.matrix_rank(a) < len(probes):
            return False
        scales = np.linalg.lstsq(a, r, rcond=None)[0]
        if np.max(np.abs(a @ scales - r)) > _EPS or np.all(np.abs(scales) < _EPS):
            return False
        new: Dict[LeafPath, float] = {}
        for scale, probe in zip(scales, probes):
            for path, delta in probe.direction.items():
                new[path] = new.get(path, float(self.originals[path])) + scale * delta
        if any(abs(v - round(v)) > _EPS or round(v) < 1 for v in new.values()):
            return False
        moves = kept + [_Move(p.direction, p.footprint or {}, float(s)) for s, p in zip(scales, probes)]
        before, after = self.uncovered(), self._unexplained(moves)
        if not (after < before):
            return False
        self.moves = moves
        return True


def _pair_up(prober: _Prober, solver: _Solver, singles: Sequence[_Probe]) -> None:
    """Solve arguments two at a time where single ones leave dimensions unexplained.

    Two arguments that each build alone and touch the unexplained dimensions are solved
    together from their own probes (no build). Two arguments whose probes failed or
    built other layers (with changes before the first other layer that touch the
    unexplained dimensions, or no build at all) are probed together (tied widths: a
    residual as wide as both); an argument whose value the class refused is probed with
    each argument that built alone and touches the unexplained dimensions or was solved
    (a value allowed only together with another: grouped query heads), the closest in
    the config first. Failed pairs of equal values (tied widths are equal) come first,
    then those whose changes before the first other layer overlap most; pairs of unequal
    values that share no such change are not probed. At most :data:`PAIR_PROBES` builds.
    """
    unexplained = solver.uncovered()
    order = {tuple(p.direction): i for i, p in enumerate(singles)}
    built = [p for p in singles if p.footprint is not None]
    touching = [p for p in built if p.footprint.keys() & unexplained]
    solved = {path for move in solver.moves for path in move.direction}
    partners = touching + [p for p in built if p not in touching and p.direction.keys() & solved]
    failed = [
        p for p in singles if p.footprint is None and (p.raised or p.partial.keys() & unexplained)
    ]
    for a, b in itertools.combinations(touching, 2):
        if solver.solve([a, b]) and not solver.uncovered():
            return

    def tied(pair: Tuple[_Probe, _Probe]) -> Tuple[bool, int]:
        (a,), (b,) = pair[0].direction, pair[1].direction
        shared = len(pair[0].partial.keys() & pair[1].partial.keys())
        return prober.originals[a] != prober.originals[b], -shared

    pairs = sorted(
        (pair for pair in itertools.combinations(failed, 2) if tied(pair) != (True, 0)), key=tied
    )
    for a in (p for p in failed if p.raised):
        here = order[tuple(a.direction)]
        pairs += [(a, b) for b in sorted(partners, key=lambda b: abs(order[tuple(b.direction)] - here))]
    budget = PAIR_PROBES
    for a, b in pairs:
        if budget <= 0 or not solver.uncovered():
            return
        budget -= 1
        joint = prober.probe({**a.direction, **b.direction})
        if joint.footprint is None:
            continue
        if b.footprint is not None and solver.solve([joint, b]):
            continue
        solver.solve([joint])


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


def _config_differs(candidate: Any, want: Sequence[Optional[dict]]) -> Optional[str]:
    """The path of the first layer of ``candidate`` whose config is not the wanted one."""
    for (path, layer), cfg in zip(iter_layers(candidate), want):
        if cfg is None or is_container(layer):
            continue
        have = _layer_config(layer)
        if have is not None and not _equal(have, {k: v for k, v in cfg.items() if k != "name"}):
            return path
    return None


def _leaf_name(path: LeafPath) -> str:
    out = ""
    for key in path:
        out += f"[{key}]" if isinstance(key, int) else (f".{key}" if out else str(key))
    return out


class _Names:
    """Words for the dimensions of a model's layers, for the messages."""

    def __init__(self, model: Any, base: Shapes, call: Optional[CallShapes]) -> None:
        self.layers = list(iter_layers(model))
        self.base, self.call = base, call

    def weight(self, i: int, w: int) -> str:
        layer = self.layers[i][1]
        return layer.weights[w].name if w < len(layer.weights) else f"weight {w}"

    def width(self, entry: Entry, target: Mapping[Entry, int]) -> str:
        i, w, axis = entry
        if i == INPUTS:
            have = self.call.original[w][axis]
            return f"of its input {w} (axis {axis}: {have} -> {have + target.get(entry, 0)})"
        have = self.base[i][1][w][axis]
        return (
            f"of layer '{self.layers[i][0]}' ({self.weight(i, w)} axis {axis}: "
            f"{have} -> {have + target.get(entry, 0)})"
        )

    def difference(self, have: Shapes, want: Shapes) -> str:
        """Where ``have`` first differs from ``want``, as a phrase."""
        for i, ((cls_a, a), (cls_b, b)) in enumerate(zip(have, want)):
            if cls_a is not cls_b or len(a) != len(b):
                return f"layer {i} is a {cls_a.__name__} where the thin model has a {cls_b.__name__}"
            for w, (x, y) in enumerate(zip(a, b)):
                if x != y:
                    return (
                        f"layer '{self.layers[i][0]}' gets {self.weight(i, w)} {x}, the thin "
                        f"model's is {y}"
                    )
        return f"it has {len(have)} layers, the thin model {len(want)}"


def _thin_widths(model: Any, want: Shapes) -> Dict[str, Dict[str, Tuple[int, ...]]]:
    """sublayer path -> weight name -> thin shape, for the sublayers with weights."""
    out: Dict[str, Dict[str, Tuple[int, ...]]] = {}
    for (path, layer), (_, shapes) in zip(iter_layers(model), want):
        if is_container(layer) or not layer.weights:
            continue
        named = out.setdefault(path, {})
        for weight, shape in zip(layer.weights, shapes):
            named.setdefault(weight.name, tuple(shape))
    return out


def _changes(old: Any, new: Any) -> str:
    """``name=value`` of the integers that differ between two configs."""
    before = dict(_int_leaves(old))
    return ", ".join(
        f"{_leaf_name(p)}={v}" for p, v in _int_leaves(new) if p in before and before[p] != v
    )


def same_class_config(
    model: keras.layers.Layer,
    want: Shapes,
    want_configs: Sequence[Optional[dict]],
    custom_objects: Mapping[str, type],
    call: Optional[CallShapes] = None,
) -> Union[Tuple[dict, Any], str]:
    """The constructor arguments that build ``model``'s class with the thin widths.

    Args:
        model: a model (or composite layer) whose ``get_config()`` holds constructor
            arguments.
        want: the thin model's layers (in ``iter_layers(model)`` order): class and
            weight shapes.
        want_configs: the thin layers' configs, in the same order (None: not compared).
        custom_objects: classes to deserialize the config with.
        call: for a composite layer, how it is called to build its weights, on which
            input shapes before and after thinning (a model is built by its
            constructor).

    Returns:
        ``(config, built)``: the changed config and the instance it built, whose layers
        have exactly the ``want`` shapes and configs, and which has ``model``'s name
        (added to a config that leaves it out, where the class takes it: a nested model
        keeps the name its parent's graph calls it by); or, when no change of integer
        arguments gives them (a non-uniform keep-set, a class that refuses the values or
        cannot be built from its config at all), why not, as a phrase that names the
        first width no argument sets.

    Raises:
        RebuildError: the class's registered constructor mapping does not fit it (see
            :func:`kerasprune.register_constructor`).
    """
    cls, config = type(model), plain_config(model.get_config())
    name = cls.__name__
    base = model_shapes(model)
    names = _Names(model, base, call)
    prober = _Prober(model, config, custom_objects, call)
    cannot = f"{name}.from_config(its own get_config()) fails"

    rule = constructor_for(cls)
    if rule is not None:  # stated by the user or a handler module: no probing
        new_config = rule.config(model, config, _thin_widths(model, want))
        if new_config is None:
            return f"the constructor mapping registered for {name} gives no config for these widths"
        return _checked(
            model, prober, config, plain_config(new_config), want, want_configs, names, mapped=True
        )

    target: Dict[Entry, int] = {}
    for i, ((_, have), (_, thin)) in enumerate(zip(base, want)):
        for w, (a, b) in enumerate(zip(have, thin)):
            target.update({(i, w, axis): y - x for axis, (x, y) in enumerate(zip(a, b)) if x != y})
    if call is not None:
        for i, axis in call.changed_axes():
            target[(INPUTS, i, axis)] = call.thin[i][axis] - call.original[i][axis]
    solver = _Solver(target, prober.originals)
    if target:
        for changes in prober.input_probes():
            solver.add_fixed(changes)
    singles: List[_Probe] = []
    for path, value in _int_leaves(config) if solver.uncovered() else []:
        probe_value = value // 2 if value >= 2 else 2
        probe = prober.probe({path: probe_value - value})
        if probe.footprint is None and value > 2 and probe_value in prober.values:
            # the halved value equals another width, which can build other layers (an
            # identity shortcut instead of a projection): one step instead
            retry = prober.probe({path: -1})
            probe = retry if retry.footprint is not None else probe
        singles.append(probe)
        if probe.footprint is not None:
            solver.solve([probe])
        if not solver.uncovered():
            break
    if solver.uncovered():
        _pair_up(prober, solver, singles)

    uncovered = solver.uncovered()
    if uncovered and not prober.built_any and prober.build(config, probe=True) is None:
        return cannot
    if uncovered:
        first = min(uncovered, key=lambda e: (e[0] if e[0] != INPUTS else len(base), e[1:]))
        layers = {e[0] for e in uncovered}
        more = f" (and of {len(layers) - 1} more layers)" if len(layers) > 1 else ""
        return (
            f"no change of {name}'s integer arguments gives exactly the new widths "
            f"{names.width(first, target)}{more}"
        )
    new_config = config
    for path, value in solver.values().items():
        new_config = set_leaf(new_config, path, value)
    return _checked(model, prober, config, new_config, want, want_configs, names)


def _checked(
    model: Any, prober: _Prober, config: dict, new_config: dict, want: Shapes,
    want_configs: Sequence[Optional[dict]], names: _Names, mapped: bool = False,
) -> Union[Tuple[dict, Any], str]:
    """Build ``new_config`` (on the thin inputs) and accept it where it gives exactly
    the thin layers; else why not (``mapped``: the config comes from the class's
    registered constructor mapping)."""
    name = type(model).__name__
    shapes = None if prober.call is None else prober.call.thin
    built = None
    if "name" not in new_config:  # a get_config without the name (keras-hub's VGGBackbone)
        named = dict(new_config, name=model.name)
        built = prober.build(named, shapes)
        new_config = named if built is not None else new_config
    if built is None:
        built = prober.build(new_config, shapes)
    changes = _changes(config, new_config)
    if built is None and not changes:
        return f"{name}.from_config(its own get_config()) fails"
    by = " by its registered constructor mapping" if mapped else ""
    if built is None:
        return f"{name} refuses the arguments {changes}{by}"
    what = f"{name} built{by}" + (f" with {changes}" if changes else "")
    have = model_shapes(built)
    if have != list(want):
        return f"{what} has other layers than the thin model: {names.difference(have, want)}"
    differs = _config_differs(built, want_configs)
    if differs is not None:
        return f"{what} has other layers than the thin model: layer '{differs}' gets another config"
    return new_config, built
