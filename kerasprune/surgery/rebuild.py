"""The rebuilder: a new, thinner keras.Model with the kept channels only.

The new model is built from the original's config with the changed widths edited in,
then given the original's weights, sliced. A model (or nested model) whose class builds
its graph in its constructor has no layers in its config, only constructor arguments:
it is rebuilt as the same class with other arguments where the keep-set is a change of
them (:mod:`kerasprune.surgery.constructed`), and otherwise as a plain functional
``keras.Model`` over the same layers, with a warning.
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional, Set, Tuple

import keras
import numpy as np

from kerasprune.errors import HandlerError, RebuildError, first_line
from kerasprune.graph.analysis import analyze
from kerasprune.graph.composite import call_like, is_container, iter_layers, trace_call, traced_at_fixed_shape
from kerasprune.graph.groups import PruningGraph, check_graph
from kerasprune.graph.handler import SlotMasks, handler_step
from kerasprune.graph.keras_graph import (
    functional_copy,
    has_graph_config,
    is_graph_model,
    producer_name,
    shapes_only,
)
from kerasprune.graph.stand_ins import graph_stand_in_for, stand_in_config, stand_in_for, stand_in_order
from kerasprune.surgery.constructed import CallShapes, model_shapes, plain_config, same_class_config
from kerasprune.surgery.keep import keep_masks
from kerasprune.surgery.optimizer import carry_optimizer_state, compile_like

__all__ = ["rebuild"]


def _is_keras_builtin(cls: type) -> bool:
    module = getattr(cls, "__module__", "") or ""
    return module == "keras" or module.startswith("keras.")


_ZEROS = {"module": "keras.initializers", "class_name": "Zeros", "config": {}, "registered_name": None}


def _skip_random_init(index: Dict[str, dict], layers: Dict[str, keras.layers.Layer]) -> Dict[str, Dict[str, object]]:
    """Make the edited config build its weights with zeros instead of random draws.

    Every weight of the rebuilt model is then set from the original, so drawing random
    initial values is wasted work, and for large kernels it is most of ``from_config``'s
    time (VGG-16: 0.23 s of 0.34 s). Only plain initializer attributes of Keras's own
    layers are swapped (``layer.kernel_initializer`` and the like, not properties that
    forward to an inner cell); :func:`_restore_init` puts the originals back on the new
    layers, so their configs are unchanged.

    Returns:
        path -> {attribute: the original serialized initializer}.
    """
    swapped: Dict[str, Dict[str, object]] = {}
    for path, entry in index.items():
        layer = layers.get(path)
        if layer is None or isinstance(layer, keras.Model) or not layer.weights:
            continue
        if not _is_keras_builtin(type(layer)):
            continue
        cfg = entry.get("config", {})
        for key, value in list(cfg.items()):
            if key.endswith("_initializer") and value is not None and key in vars(layer):
                swapped.setdefault(path, {})[key] = value
                cfg[key] = dict(_ZEROS)
    return swapped


def _restore_init(swapped: Dict[str, Dict[str, object]], layers: Dict[str, keras.layers.Layer]) -> None:
    """Give the rebuilt layers the initializers of the original config back."""
    for path, attrs in swapped.items():
        for key, value in attrs.items():
            setattr(layers[path], key, keras.initializers.get(copy.deepcopy(value)))


def _custom_objects(model: keras.Model) -> Dict[str, type]:
    """The model's own (non-Keras) classes by name, for deserializing the edited config.

    Keras classes are left out: Keras finds them by module, and their bare names collide
    (the ``Add`` layer and the ``Add`` operation that ``x + 3.0`` leaves in a graph).
    """
    objs: Dict[str, type] = {}
    for cls in [type(model)] + [type(layer) for _, layer in iter_layers(model)]:
        if not _is_keras_builtin(cls):
            objs.setdefault(cls.__name__, cls)
    return objs


def _carry_weightless(original: Any, new: Any) -> None:
    """Give ``new`` (built by ``original``'s constructor) the original's layers that are
    no part of its graph and hold no weights: a keras-hub Task's preprocessor and its
    tokenizer, whose vocabulary is an asset that a config does not carry."""
    graph_layers = {id(layer) for _, layer in iter_layers(original)}
    for name, value in list(vars(original).items()):
        if not isinstance(value, keras.layers.Layer) or id(value) in graph_layers:
            continue
        if value.weights or type(vars(new).get(name)) is not type(value):
            continue
        setattr(new, name, value)


def _shared_across_nesting(model: keras.Model) -> Optional[str]:
    """The path of a layer that ``model``'s own graph calls and one of its nested models
    holds too (keras-hub's CausalLM calls its backbone's token embedding for the
    logits), or None. A functional config lists such a layer twice, and deserializing it
    makes two layers of it."""
    top = {id(layer): layer.name for layer in model.layers}
    for path, layer in iter_layers(model):
        if "/" in path and id(layer) in top:
            return path
    return None


def _describe(layer: Any) -> str:
    return f"'{getattr(layer, 'name', layer)}' ({type(layer).__name__})"


class _Plan:
    """The config the thin model is built from, and how its layers pair with the original's.

    Args:
        model: the original model.
        graph: its analysis.
        slot_masks: layer path -> the masks of its changed slots.
        thin: layer path -> the sliced weights of each changed layer with weights.
        custom_objects: the model's own classes, for deserializing.

    Attributes:
        index: layer path -> its entry in the config (the layers of graph configs).
        same_class: path of each model rebuilt by its own constructor ('' for the top).
        built: path -> the model :func:`same_class_config` built and checked.
        plain: ``(path, class name, why)`` of each model rebuilt as a plain functional
            model (the top model's path is '').
        composites: path of each composite layer rebuilt as a functional model of its
            sublayers.
    """

    def __init__(
        self,
        model: keras.Model,
        graph: PruningGraph,
        slot_masks: Mapping[str, SlotMasks],
        thin: Mapping[str, list],
        custom_objects: Mapping[str, type],
    ) -> None:
        self.graph = graph
        self.slot_masks = slot_masks
        self.thin = thin
        self.custom_objects = custom_objects
        self.layers = dict(iter_layers(model))
        self.index: Dict[str, dict] = {}
        self.same_class: List[str] = []
        self.built: Dict[str, keras.Model] = {}
        self.plain: List[Tuple[str, str, str]] = []
        self.composites: List[str] = []
        #: path prefixes of nested models merged into their parent -> the parent's prefix
        self.aliases: Dict[str, str] = {}
        #: path of each block rebuilt as its stand-in -> (its class name, the stand-in's)
        self.stand_ins: Dict[str, Tuple[str, str]] = {}
        #: path of each block rebuilt as a stand-in whose sublayers have other paths ->
        #: its sublayer paths -> the stand-in's
        self.renamed: Dict[str, Dict[str, str]] = {}
        #: paths of the layers a graph stand-in built thin itself (no config to edit)
        self.prebuilt: Set[str] = set()

    def model_config(self, model: keras.Model, path: str) -> Tuple[Optional[dict], dict]:
        """``(serialized plain model or None, config)`` to build ``model`` (at ``path``):
        the first is given when the model is rebuilt as a plain functional model."""
        try:
            config = model.get_config()
        except Exception as exc:  # constructor arguments Keras cannot serialize
            config, found = None, f"its get_config() fails ({type(exc).__name__}: {exc})"
        if has_graph_config(model, config):
            config = copy.deepcopy(config)
            self._enter(config, path)
            return None, config
        if config is not None:
            found = same_class_config(model, *self._thin_layers(model, path), self.custom_objects)
        if not isinstance(found, str):
            self.same_class.append(path)
            self.built[path] = found[1]
            return None, plain_config(found[0])
        self.plain.append((path, type(model).__name__, found))
        try:
            with self._serializing_stand_ins(model, path) as rewrite:
                serialized = keras.saving.serialize_keras_object(functional_copy(model))
            rewrite(serialized)
        except Exception as exc:
            raise RebuildError(
                f"model {_describe(model)} builds its graph in its constructor, {found}, and "
                "its graph cannot be serialized as a plain functional model either: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        config = serialized["config"]
        config["trainable"] = model.trainable
        self._enter(config, path)
        shared = _shared_across_nesting(model)
        if shared is not None:
            self._inline_sharing(model, config, path, shared, found)
        return serialized, config

    def _inline_sharing(self, model: keras.Model, config: dict, path: str, shared: str, found: str) -> None:
        """Merge the nested model that shares layer ``shared`` with ``model``'s own graph
        into ``model``'s plain functional config.

        A functional config lists a layer used by both a model and a nested model twice,
        and deserializing it would make two layers of it (keras-hub's CausalLM calls its
        backbone's token embedding again for the tied logits: the thin model would hold
        two embeddings). With the nested model's layers spliced into the outer config
        (:func:`_inline_nested`) the layer is one entry with both calls, as in the
        original. The layers' new paths lose the nested model's prefix
        (:attr:`aliases`).
        """
        nested = shared.split("/")[0]
        entries = [e for e in config["layers"] if e.get("name") == nested]
        if shared.count("/") != 1 or len(entries) != 1 or entries[0].get("class_name") != "Functional":
            raise RebuildError(
                f"model {_describe(model)} builds its graph in its constructor, {found}, and "
                f"as a plain functional model it would hold two copies of layer '{shared}', "
                "which it shares with a nested model (a tied embedding): prune it uniformly "
                "(uniform=True: as many channels from every block) so that its own "
                "constructor builds the thin model"
            )
        try:
            _inline_nested(config, entries[0])
        except ValueError as exc:
            raise RebuildError(
                f"model {_describe(model)} shares layer '{shared}' with its nested model "
                f"'{nested}', which cannot be merged into it: {exc}"
            ) from exc
        prefix = (path + "/" if path else "") + nested + "/"
        self.aliases[prefix] = path + "/" if path else ""

    @contextlib.contextmanager
    def _serializing_stand_ins(self, model: keras.Model, path: str) -> Iterator[Any]:
        """While ``model`` is serialized, each block of it with a stand-in
        (:mod:`kerasprune.graph.stand_ins`) gives the stand-in's config; the function
        yielded then writes the stand-in's class into those entries of the result (every
        entry of a class stood in for: an instance without a stand-in of such a class
        could not have been serialized)."""
        prefix = path + "/" if path else ""
        patched, headers = [], {}
        for sub, layer in iter_layers(model):
            found = stand_in_for(layer)
            if found is None or "get_config" in vars(layer) or _serializes(layer):
                continue  # a block that serializes keeps its class unless it must change
            config = stand_in_config(layer, found)
            object.__setattr__(layer, "get_config", lambda _c=config: copy.deepcopy(_c))
            patched.append(layer)
            headers.setdefault(type(layer).__name__, _class_header(found.cls, config))
            self.stand_ins[prefix + sub] = (type(layer).__name__, found.cls.__name__)

        def rewrite(node: Any) -> None:
            if isinstance(node, dict):
                header = headers.get(node.get("class_name"))
                if header is not None and isinstance(node.get("config"), dict):
                    node.update(header)
                for v in node.values():
                    rewrite(v)
            elif isinstance(node, list):
                for v in node:
                    rewrite(v)

        try:
            yield rewrite
        finally:
            for layer in patched:
                object.__delattr__(layer, "get_config")

    def new_path(self, path: str) -> str:
        """The path in the thin model of the original's layer at ``path``."""
        for prefix, to in self.aliases.items():
            if path.startswith(prefix):
                return to + path[len(prefix):]
        return path

    def _enter(self, config: dict, path: str) -> None:
        prefix = path + "/" if path else ""
        for entry in config.get("layers", []):
            cfg = entry.get("config", {})
            layer_path = prefix + cfg.get("name", entry.get("name"))
            self.index[layer_path] = entry
            entry.pop("build_config", None)  # rebuilt layers are built by the graph calls
            layer = self.layers.get(layer_path)
            if layer_path in self.graph.composites and any(
                changed.startswith(layer_path + "/") for changed in self.slot_masks
            ):
                why = self._same_class_composite(entry, layer, layer_path)
                if why is not None and stand_in_for(layer) is not None:
                    why = self._stand_in_composite(entry, layer, layer_path, why)
                if why is not None:
                    self._as_functional(entry, layer_path, why)
                    self._enter(entry["config"], layer_path)
                continue
            if layer is None or not is_graph_model(layer):
                continue
            plain, entry["config"] = self.model_config(layer, layer_path)
            if plain is not None:
                for key in ("module", "class_name", "registered_name"):
                    entry[key] = plain.get(key)

    def _same_class_composite(self, entry: dict, layer: keras.layers.Layer, path: str) -> Optional[str]:
        """Rebuild composite layer ``path`` as its own class when other values of its
        integer constructor arguments build exactly its thin sublayers (see
        :func:`~kerasprune.surgery.constructed.same_class_config`); returns None when it
        does, else why not."""
        try:
            layer.get_config()
        except Exception as exc:  # constructor arguments Keras cannot serialize
            return f"its get_config() fails ({type(exc).__name__})"
        call = self._call_shapes(layer, path)
        found = same_class_config(layer, *self._thin_layers(layer, path), self.custom_objects, call)
        if isinstance(found, str):
            return found
        entry["config"] = plain_config(found[0])
        self.same_class.append(path)
        return None

    def _call_shapes(self, layer: keras.layers.Layer, path: str) -> CallShapes:
        """How composite layer ``path`` is called to be built: the shapes of what enters
        it in the original, and thin."""
        traced = self.graph.composites[path]
        original, shapes = [], []
        for kt in traced.inputs:
            shape = list(kt.shape)
            original.append(tuple(shape))
            masks = self.slot_masks.get(f"{path}/{producer_name(kt)}", {})
            mask = masks.get("channels") if masks else None
            if mask is not None:
                shape[masks.axes["channels"]] = int(np.count_nonzero(mask))
            shapes.append(tuple(shape))
        return CallShapes(
            lambda new, at: call_like(layer, new, list(at)), tuple(original), tuple(shapes)
        )

    def _stand_in_composite(self, entry: dict, layer: keras.layers.Layer, path: str, why: str) -> Optional[str]:
        """Rebuild composite layer ``path`` as its stand-in's class with the thin widths
        (its own class cannot hold them: ``why``); returns None when that works, else
        why not. The stand-in's layers pair with the original's by position, with the
        same weight shapes."""
        found = stand_in_for(layer)
        call = self._call_shapes(layer, path)
        with shapes_only():
            base = found.cls.from_config(stand_in_config(layer, found))
            call.call(base, call.original)
        have, mine = model_shapes(base), model_shapes(layer)
        order = stand_in_order(found, [p for p, _ in iter_layers(layer)], [p for p, _ in iter_layers(base)])
        paired = [i for i in order if i is not None]
        unpaired = [w for i, (_, w) in enumerate(mine) if i not in paired]
        if [w for _, w in have] != [[] if i is None else mine[i][1] for i in order] or any(unpaired):
            return f"{why}, and its stand-in {found.cls.__name__} holds other weights"
        want, _ = self._thin_layers(layer, path)
        want = [(cls, [] if i is None else want[i][1]) for (cls, _), i in zip(have, order)]
        built = same_class_config(base, want, [None] * len(want), self.custom_objects, call)
        if isinstance(built, str):
            return f"{why}, and its stand-in: {built}"
        entry.update(_class_header(found.cls, built[0]))
        entry["config"] = plain_config(built[0])
        self.same_class.append(path)
        self.stand_ins[path] = (type(layer).__name__, found.cls.__name__)
        self.renamed[path] = dict(found.names)
        return None

    def _as_functional(self, entry: dict, path: str, why: str) -> None:
        """Replace composite layer ``path``'s entry by the functional model its call
        traced to (same name, same inbound calls).

        A composite layer's config holds its constructor arguments, not its sublayers,
        so the new widths of its sublayers cannot be written into it; the functional
        model's sublayer entries are then edited like those of any nested model.
        """
        layer = self.graph.record(path).layer
        traced = self.graph.composites[path]
        stand_in = graph_stand_in_for(layer) if traced_at_fixed_shape(traced) else None
        if stand_in is not None:
            kept = {name: self.slot_masks.get(f"{path}/{name}") for name in stand_in.thin}
            traced = trace_call(stand_in.call, layer, traced, kept) or traced
            if not traced_at_fixed_shape(traced):
                self.stand_ins[path] = (type(layer).__name__, stand_in.what)
                self.prebuilt.update(f"{path}/{name}" for name in stand_in.thin)
        if traced_at_fixed_shape(traced):
            raise RebuildError(
                f"composite layer '{path}' ({type(layer).__name__}) has thinner sublayers, and "
                f"{why}; it could only be traced with its unknown axes at a fixed size (its "
                "call needs a concrete sequence length), so its sublayers cannot be rebuilt as "
                "a functional model that holds for every size either; prune it uniformly (so "
                "that its constructor arguments build it) or state its constructor mapping "
                "(kerasprune.register_constructor)"
            )
        try:
            traced_config = copy.deepcopy(traced.get_config())
        except Exception as exc:  # a sublayer Keras cannot serialize
            raise RebuildError(
                f"composite layer '{path}' ({type(layer).__name__}) has thinner sublayers and "
                f"{why}, and the functional model of its sublayers cannot be serialized "
                f"either ({type(exc).__name__}: {first_line(exc, 'no message')})"
            ) from exc
        self.composites.append(path)
        if path not in self.stand_ins:  # else the stand-ins' warning says it
            warnings.warn(
                f"kerasprune: composite layer '{path}' ({type(layer).__name__}) has thinner "
                f"sublayers, and {why}; the thin model holds it as a functional model of the "
                "same sublayers instead",
                stacklevel=4,
            )
        # the functional model takes the call's tensors as one flat list (the traced order);
        # the other arguments are part of the trace
        inbound = []
        for call in entry.get("inbound_nodes", []):
            tensors = _config_tensors((call.get("args", []), call.get("kwargs", {})))
            inbound.append({"args": tensors if len(tensors) == 1 else [tensors], "kwargs": {}})
        entry.clear()
        entry.update(
            {
                "module": "keras.src.models.functional",
                "class_name": "Functional",
                "config": traced_config,
                "registered_name": "Functional",
                "name": layer.name,
                "inbound_nodes": inbound,
            }
        )

    def _thin_layers(self, model: keras.Model, path: str) -> Tuple[list, list]:
        """The thin shapes and configs of ``model``'s layers, in ``iter_layers`` order."""
        prefix = path + "/" if path else ""
        shapes = model_shapes(model)
        configs: List[Optional[dict]] = []
        for i, (sub, layer) in enumerate(iter_layers(model)):
            layer_path = prefix + sub
            if layer_path in self.thin:
                shapes[i] = (shapes[i][0], [tuple(np.shape(w)) for w in self.thin[layer_path]])
            if is_container(layer):
                configs.append(None)
                continue
            try:
                cfg = plain_config(layer.get_config())
            except Exception:
                configs.append(None)
                continue
            masks = self.slot_masks.get(layer_path)
            if masks:
                _edit_config(self.graph, layer_path, layer, cfg, masks)
            configs.append(cfg)
        return shapes, configs

    def inside_same_class(self, path: str) -> bool:
        """Whether the layer at ``path`` is built by a same-class model's constructor."""
        return any(p == "" or path.startswith(p + "/") for p in self.same_class)


def _edit_config(
    graph: PruningGraph, path: str, layer: keras.layers.Layer, config: dict, masks: SlotMasks
) -> None:
    """The handler's ``edit_config``, its failures a RebuildError naming the layer."""
    handler = graph.record(path).handler
    with handler_step(handler, layer, path, "edit_config", RebuildError):
        handler.edit_config(layer, config, masks)


def _config_tensors(node: Any) -> List[dict]:
    """The serialized tensors of a config's call arguments, in ``keras.tree`` order
    (dict keys sorted), as :func:`~kerasprune.graph.composite.trace_composite` orders its
    inputs."""
    if isinstance(node, dict):
        if node.get("class_name") == "__keras_tensor__":
            return [node]
        return [t for key in sorted(node) for t in _config_tensors(node[key])]
    if isinstance(node, (list, tuple)):
        return [t for item in node for t in _config_tensors(item)]
    return []


def _is_history(node: Any) -> bool:
    return (
        isinstance(node, list) and len(node) == 3 and isinstance(node[0], str)
        and all(isinstance(i, int) for i in node[1:])
    )


def _histories(node: Any) -> List[list]:
    """The ``[layer, node, tensor]`` references of a config's ``input_layers`` or
    ``output_layers``, in ``keras.tree`` order (dict keys sorted)."""
    if _is_history(node):
        return [node]
    if isinstance(node, dict):
        return [h for key in sorted(node) for h in _histories(node[key])]
    if isinstance(node, (list, tuple)):
        return [h for item in node for h in _histories(item)]
    return []


def _map_histories(node: Any, fn: Any) -> Any:
    """``node`` with every tensor reference ``[layer, node, tensor]`` (in serialized
    tensors and in ``output_layers``) replaced by ``fn(reference)``, in place."""
    if isinstance(node, dict):
        if node.get("class_name") == "__keras_tensor__":
            cfg = node["config"]
            cfg["keras_history"] = list(fn(list(cfg["keras_history"])))
            return node
        for key in node:
            node[key] = _map_histories(node[key], fn)
        return node
    if _is_history(node):
        return list(fn(node))
    if isinstance(node, (list, tuple)):
        return type(node)(_map_histories(item, fn) for item in node)
    return node


def _inline_nested(outer: dict, entry: dict) -> None:
    """Splice the functional model of layer entry ``entry`` into functional config
    ``outer``, in place: its layers join ``outer``'s, its inputs become the tensors it
    was called on, and its outputs the tensors that ``outer`` read from it. A layer both
    hold (same name) becomes one entry with the nested calls first and ``outer``'s after.

    Raises:
        ValueError: the nested model is called more than once, its inputs do not match
            its call, or a name is taken in both with different layers' entries.
    """
    inner = entry["config"]
    calls = entry.get("inbound_nodes", [])
    if len(calls) != 1:
        raise ValueError(f"it is called {len(calls)} times")
    call_tensors = _config_tensors((calls[0].get("args", []), calls[0].get("kwargs", {})))
    inputs = _histories(inner.get("input_layers", []))
    if len(call_tensors) != len(inputs):
        raise ValueError(f"its {len(inputs)} inputs are called with {len(call_tensors)} tensors")
    fed = {h[0]: t["config"]["keras_history"] for h, t in zip(inputs, call_tensors)}
    outputs = [list(fed.get(h[0], h)) for h in _histories(inner.get("output_layers", []))]
    nested_name = entry["name"]
    position = next(i for i, e in enumerate(outer["layers"]) if e is entry)
    others = {e["name"]: e for e in outer["layers"] if e is not entry}
    kept, shift = [], {}
    for e in inner["layers"]:
        if e["name"] in fed:
            continue  # an input of the nested model: its tensor is the call's
        _map_histories(e.get("inbound_nodes", []), lambda h: fed.get(h[0], h))
        twin = others.get(e["name"])
        if twin is not None:
            if twin.get("class_name") != e.get("class_name") or twin.get("config") != e.get("config"):
                raise ValueError(f"both hold a layer named '{e['name']}'")
            shift[e["name"]] = len(e.get("inbound_nodes", []))
            e["inbound_nodes"] = e.get("inbound_nodes", []) + twin.get("inbound_nodes", [])
            outer["layers"] = [x for x in outer["layers"] if x is not twin]
        kept.append(e)

    def outer_reference(h: list) -> list:
        if h[0] == nested_name:
            return list(outputs[h[2]])
        if h[0] in shift:
            return [h[0], h[1] + shift[h[0]], h[2]]
        return h

    rest = [e for e in outer["layers"] if e is not entry]
    for e in rest:
        _map_histories(e.get("inbound_nodes", []), outer_reference)
    for e in kept:  # the calls that came from the outer entry of a shared layer
        nodes = e.get("inbound_nodes", [])
        if e["name"] in shift:
            e["inbound_nodes"] = nodes[: shift[e["name"]]] + [
                _map_histories(n, outer_reference) for n in nodes[shift[e["name"]]:]
            ]
    outer["output_layers"] = _map_histories(outer["output_layers"], outer_reference)
    before = outer["layers"][position - 1] if position else None
    at = next(i + 1 for i, e in enumerate(rest) if e is before) if position else 0
    outer["layers"] = rest[:at] + kept + rest[at:]


_LIVE = "kerasprune>live:"


def _live_layer(original: keras.layers.Lambda) -> type:
    """A deserializer that builds a new ``Lambda`` around ``original``'s own function.

    A ``Lambda`` holding a Python lambda cannot be re-created from its config in safe
    mode (its function is serialized as bytecode, which Keras refuses to load), and a
    function that closes over live objects would not survive the round trip anyway. The
    model being rebuilt is live, so its functions are reused as they are.
    """

    class _Live:
        @classmethod
        def from_config(cls, config: dict) -> keras.layers.Lambda:
            return keras.layers.Lambda(
                original.function,
                output_shape=original._output_shape,
                mask=original.mask,
                arguments=dict(original.arguments),
                name=config.get("name", original.name),
                dtype=original.dtype_policy,
                trainable=original.trainable,
            )

    return _Live


def _reuse_live_functions(
    index: Mapping[str, dict], layers: Mapping[str, keras.layers.Layer], custom_objects: Dict[str, Any]
) -> None:
    """Point every ``Lambda`` entry of the edited config at the original's function.

    Each entry gets a name of its own, looked up in ``custom_objects``
    (:func:`_live_layer`); the layer's config itself is not changed, so the thin model
    saves as the original does (Keras serializes the function, and loading a Python
    lambda needs ``safe_mode=False`` there as for the original).
    """
    for path, entry in index.items():
        layer = layers.get(path)
        if type(layer) is not keras.layers.Lambda:
            continue
        token = _LIVE + path
        entry.update(class_name=token, registered_name=token, module=None)
        custom_objects[token] = _live_layer(layer)


def _culprit(
    index: Mapping[str, dict],
    layers: Mapping[str, keras.layers.Layer],
    custom_objects: Mapping[str, type],
) -> str:
    """' (layer ...)' naming the first layer whose edited entry does not deserialize."""
    with keras.saving.custom_object_scope(dict(custom_objects)):
        for path, entry in index.items():
            if is_graph_model(layers.get(path)):
                continue
            try:
                keras.saving.deserialize_keras_object(copy.deepcopy(entry))
            except Exception as exc:
                return f" (layer '{path}' ({type(layers.get(path)).__name__}): {exc})"
    return ""


def _blocks(n: int) -> str:
    return "1 block is rebuilt as its stand-in" if n == 1 else f"{n} blocks are rebuilt as their stand-ins"


def _serializes(layer: keras.layers.Layer) -> bool:
    """Whether ``layer.get_config()`` works."""
    try:
        layer.get_config()
    except Exception:  # noqa: BLE001  (the reason it needs a stand-in to be serialized)
        return False
    return True


def _class_header(cls: type, config: dict) -> Dict[str, Any]:
    """The ``module``, ``class_name`` and ``registered_name`` Keras writes into the
    serialized entry of a ``cls`` instance (made from ``config``, not built)."""
    serialized = keras.saving.serialize_keras_object(cls.from_config(config))
    return {k: serialized.get(k) for k in ("module", "class_name", "registered_name")}


def _inside(path: str, prefixes: Iterable[str]) -> bool:
    return any(path == p or path.startswith(p + "/") for p in prefixes)


def _pairs(model: keras.Model, new: keras.Model, plan: _Plan) -> List[Tuple[str, Any, Any]]:
    """``(path, original layer, rebuilt layer)`` for every layer of ``model``.

    Layers pair by path, except inside a model rebuilt by its own constructor, where
    they pair by position (automatically named layers get new numbers there).
    """
    new_layers = dict(iter_layers(new))
    by_position: Dict[str, Any] = {}
    for prefix in plan.same_class:
        old_sub = model if prefix == "" else plan.layers[prefix]
        new_sub = new if prefix == "" else new_layers.get(plan.new_path(prefix))
        if new_sub is None:
            continue
        sub = prefix + "/" if prefix else ""
        if prefix in plan.renamed:  # a stand-in: its sublayers pair by their paths
            names, inner = plan.renamed[prefix], dict(iter_layers(new_sub))
            for p, _ in iter_layers(old_sub):
                if names.get(p, p) in inner:
                    by_position[sub + p] = inner[names.get(p, p)]
            continue
        for (p, _), (_, n) in zip(iter_layers(old_sub), iter_layers(new_sub)):
            by_position[sub + p] = n
    plain = {path for path, _, _ in plan.plain} | set(plan.composites)
    out = []
    for path, layer in iter_layers(model):
        if plan.inside_same_class(path):
            new_layer = by_position.get(path)
        else:
            new_layer = new_layers.get(plan.new_path(path))
        if path in plain and isinstance(new_layer, keras.Model):
            pass  # a plain functional model now
        elif new_layer is None and (not layer.weights or is_container(layer)):
            continue  # a composite layer's sublayer that its call never uses
        elif new_layer is not None and _inside(path, plan.stand_ins):
            pass  # a stand-in's layer: another class, the same weights
        elif new_layer is None or type(new_layer) is not type(layer):
            raise RebuildError(
                f"layer '{path}' ({type(layer).__name__}) is missing from the rebuilt model"
            )
        out.append((path, layer, new_layer))
    return out


def _slice(graph: PruningGraph, path: str, layer: keras.layers.Layer, masks: SlotMasks) -> list:
    """The layer's weights sliced by its handler, its failures a RebuildError."""
    handler = graph.record(path).handler
    weights = [np.asarray(w) for w in layer.get_weights()]
    with handler_step(handler, layer, path, "slice_weights", RebuildError):
        return list(handler.slice_weights(layer, weights, masks))


def rebuild(
    model: keras.Model,
    keep: Mapping[str, Iterable[int]],
    *,
    graph: Optional[PruningGraph] = None,
    compile: bool = True,
    carry_optimizer: bool = True,
) -> keras.Model:
    """Build a new model that keeps only the listed channels of each group.

    The new model has the same layer names, classes, inputs and outputs as ``model``;
    layer configs change only where a width changes; weights are sliced with numpy. Dtype
    policies (mixed precision included), trainable flags, regularizers, initializers and
    constraints are carried over through the layer configs. ``model`` itself is never
    modified, whether the rebuild succeeds or fails.

    A model whose class builds its graph in its constructor (a ``keras.Model`` subclass
    calling ``super().__init__(inputs, outputs)`` in ``__init__``, every keras-hub
    Backbone and Task; also when nested in another model) has constructor arguments for
    a config. When the keep-set changes exactly what other values of its integer
    arguments change (all blocks' widths follow a ``filters`` or ``hidden_dim``
    argument, and every changed width is one of them), the thin model is the same class
    built with those values, with the sliced weights: it keeps its class, methods and
    ``.keras`` registration (layers that Keras named automatically get new numbers).
    Otherwise the thin model (or the nested model) is a plain functional
    ``keras.Model`` with the same layers, names and weights, and a warning says so (and
    which width no argument sets): the class's own methods and attributes are not
    carried over. Composite layers (a residual block written as a Layer subclass) are
    rebuilt the same way. A class can state which argument sets which width instead of
    being probed: :func:`kerasprune.register_constructor`.

    Args:
        model: a functional or Sequential Keras 3 model, or a subclass built functionally.
        keep: group name -> indices of the channels to keep (a boolean mask of the
            group's size is accepted too). Groups not listed keep every channel.
        graph: the result of ``analyze(model)``, if already computed.
        compile: if ``model`` is compiled, compile the new model with the same loss,
            metrics and a fresh optimizer of the same kind and settings.
        carry_optimizer: when compiling and ``model``'s optimizer has state, copy it (step
            count, momenta, second moments, ...) into the new optimizer, sliced like the
            weights, so fine-tuning continues instead of restarting.

    Returns:
        The new ``keras.Model``: of the same class as ``model``, or a plain functional
        model for a class whose constructor cannot build the thin widths (see above).

    Raises:
        KeepSetError: the keep-set does not fit the model (see the message).
        FrozenGroupError: the keep-set removes channels of a frozen group.
        UnsupportedModelError: the model has no functional graph or is not built.
        RebuildError: the thin model could not be built; the message names the layer
            (or model) and its class, and the cause.
    """
    check_graph(graph, model, "rebuild")
    if graph is None:
        graph = analyze(model, warn=False)
    masks = keep_masks(graph, keep)
    slot_masks = graph.slot_masks(masks)
    layers = dict(iter_layers(model))
    thin = {
        path: _slice(graph, path, layers[path], layer_masks)
        for path, layer_masks in slot_masks.items()
        if path in layers and not is_container(layers[path]) and layers[path].weights
    }

    custom_objects = _custom_objects(model)
    plan = _Plan(model, graph, slot_masks, thin, custom_objects)
    plain, config = plan.model_config(model, "")
    for path, layer_masks in slot_masks.items():
        if plan.inside_same_class(path) or path in plan.prebuilt:
            continue  # its width comes from the constructor arguments (or a stand-in)
        entry = plan.index.get(path)
        if entry is None or not isinstance(entry.get("config"), dict):
            layer = layers.get(path)
            raise RebuildError(
                f"layer '{path}' ({type(layer).__name__}) has no entry in the config of "
                f"model '{model.name}' ({type(model).__name__}) to edit its width in"
            )
        _edit_config(graph, path, graph.record(path).layer, entry["config"], layer_masks)
    swapped = _skip_random_init(plan.index, layers)
    _reuse_live_functions(plan.index, layers, custom_objects)

    if "" in plan.built:
        new = plan.built[""]
    else:
        cls = type(model) if plain is None else keras.Model
        try:
            with keras.saving.custom_object_scope(custom_objects):
                new = cls.from_config(config)
        except Exception as exc:  # surface which layer broke, not a deep traceback only
            culprit = _culprit(plan.index, layers, custom_objects)
            raise RebuildError(
                f"could not rebuild model '{model.name}' ({type(model).__name__}) from its "
                f"edited config{culprit}: {type(exc).__name__}: {exc}"
            ) from exc
    if plan.stand_ins:
        pairs = sorted(set(plan.stand_ins.values()))
        names = ", ".join(f"{a} as {b}" for a, b in pairs)
        warnings.warn(
            f"kerasprune: {_blocks(len(plan.stand_ins))} ({names}), computing the same with "
            "the same weights: a block's own class cannot hold its thin widths (see "
            "kerasprune.graph.stand_ins)",
            stacklevel=2,
        )
    for path, cls_name, why in plan.plain:
        warnings.warn(
            f"kerasprune: model '{path or model.name}' ({cls_name}) builds its graph in its "
            f"constructor, and {why}: it is rebuilt as a plain functional keras.Model with "
            f"the same layers and weights, without {cls_name}'s own methods and attributes",
            stacklevel=2,
        )

    new.trainable = model.trainable  # first: on a Model it cascades to every layer
    new_layers = dict(iter_layers(new))
    for path in plan.same_class:
        before, after = (model, new) if not path else (plan.layers.get(path), new_layers.get(plan.new_path(path)))
        if before is not None and after is not None:
            _carry_weightless(before, after)
    _restore_init({plan.new_path(path): attrs for path, attrs in swapped.items()}, new_layers)
    sliced: Dict[str, tuple] = {}
    renames: Dict[str, str] = {}
    for path, layer, new_layer in _pairs(model, new, plan):
        new_layer.trainable = layer.trainable
        if is_container(layer) or not layer.weights:
            continue
        # automatically named layers rebuilt by a constructor get new numbers
        for a, b in zip(layer.weights, new_layer.weights):
            if a.path != b.path:
                renames[a.path] = b.path
        if path in thin:
            weights = thin[path]
            handler, layer_masks = graph.record(path).handler, slot_masks[path]

            def slicer(arrays, _h=handler, _l=layer, _m=layer_masks):
                return _h.slice_weights(_l, arrays, _m)

            sliced[path] = (list(layer.weights), slicer)
        else:
            weights = [np.asarray(w) for w in layer.get_weights()]
        try:
            new_layer.set_weights(weights)
        except ValueError as exc:
            if path not in thin:
                raise RebuildError(
                    f"the rebuilt layer '{path}' ({type(layer).__name__}) does not take the "
                    f"original's weights: {exc}"
                ) from exc
            raise HandlerError(
                f"the pruning handler {type(graph.record(path).handler).__name__} of layer "
                f"'{path}' ({type(layer).__name__}) sliced weights that do not fit the "
                f"rebuilt layer: {exc}"
            ) from exc
        finalize = getattr(new_layer, "finalize_state", None)
        if finalize is not None:  # adapted preprocessing layers (Normalization) derive
            finalize()  # their constants from the weights just set, as after loading

    if compile and compile_like(model, new) and carry_optimizer:
        carry_optimizer_state(model, new, sliced, renames)
    return new
