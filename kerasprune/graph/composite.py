"""Composite layers, and the layers and calls of a model with them walked into.

A **composite layer** is a layer without a pruning handler of its own whose weights all
belong to sublayers (a residual block, a transformer block written as a
``keras.layers.Layer`` subclass). :func:`trace_composite` calls its ``call`` on symbolic
inputs, so that its sublayers and ``keras.ops`` operations record a functional graph of
their own, which the walk enters like a nested model. :func:`iter_layers` and
:func:`iter_calls` walk into nested models and composite layers, with paths
``outer/inner``.
"""

from __future__ import annotations

import contextlib
import inspect
import weakref
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple, Union

import keras

from kerasprune.errors import first_line
from kerasprune.graph.keras_graph import (
    calls_of,
    functional_of,
    graph_inputs,
    is_graph_model,
    iter_nodes,
    sublayers,
)
from kerasprune.graph.registry import has_handler

__all__ = [
    "is_composite",
    "is_container",
    "trace_composite",
    "trace_call",
    "traced_at_fixed_shape",
    "call_like",
    "TraceFailure",
    "iter_layers",
    "iter_calls",
    "input_key",
    "call_key",
    "scope_of",
    "FlatRunner",
]


def is_composite(layer: object) -> bool:
    """Whether ``layer`` is a composite layer that kerasprune walks inside.

    True for a layer that is not a graph model, has no pruning handler of its own, has
    sublayers, and holds no weight of its own beyond theirs (a weight the layer creates
    itself would be read by its ``call`` in a way only a handler can tell).
    """
    if not isinstance(layer, keras.layers.Layer) or is_graph_model(layer):
        return False
    if isinstance(layer, keras.Model) or has_handler(layer):
        return False
    children = sublayers(layer)
    if not children:
        return False
    owned = {id(v) for child in children for v in child.weights}
    return all(id(v) in owned for v in layer.weights)


def is_container(layer: object) -> bool:
    """Whether ``layer`` only holds other layers: a nested model or a composite layer."""
    return isinstance(layer, keras.Model) or is_composite(layer)


def iter_layers(
    model: keras.layers.Layer, prefix: str = ""
) -> Iterator[Tuple[str, keras.layers.Layer]]:
    """Yield ``(path, layer)`` for every layer of ``model``, nested models walked into.

    A nested model or a composite layer yields itself, then its layers (paths
    ``outer/inner``). Shared layers are yielded once. ``model`` may itself be a
    composite layer: then its sublayers are yielded.
    """
    seen = set()

    def walk(children, pre):
        for layer in children:
            if id(layer) in seen:
                continue
            seen.add(id(layer))
            path = pre + layer.name
            yield path, layer
            if isinstance(layer, keras.Model):
                yield from walk(layer.layers, path + "/")
            elif is_composite(layer):
                yield from walk(sublayers(layer), path + "/")

    yield from walk(model.layers if isinstance(model, keras.Model) else sublayers(model), prefix)


class TraceFailure(str):
    """Why a composite layer could not be traced (a reason to freeze its channels)."""


# layer -> {id(node): traced model or failure}: each call of a composite is traced once
_TRACES: "weakref.WeakKeyDictionary[Any, Dict[int, Union[keras.Model, TraceFailure]]]" = (
    weakref.WeakKeyDictionary()
)


def trace_composite(layer: keras.layers.Layer, node: Any) -> Union[keras.Model, TraceFailure]:
    """The functional graph of one call of composite ``layer``, or why there is none.

    The layer's ``call`` runs on fresh symbolic inputs shaped like the call's input
    tensors (positional or keyword arguments, a padding mask say; other arguments as
    given), so every sublayer and ``keras.ops`` operation it uses records a node; the
    result is a functional ``keras.Model`` from those inputs to the call's outputs,
    named like the layer. Its inputs are in the order of the call's input tensors (the
    order of ``keras.tree.flatten((args, kwargs))``). The trace adds one inbound
    node to each sublayer it calls; it is made once per call and cached.
    """
    calls = _TRACES.setdefault(layer, {})
    key = id(node)
    if key not in calls:
        calls[key] = _trace(layer, node)
        _FIRST_CALL.setdefault(layer, node)
    return calls[key]


# layer -> the first of its calls that was traced (how call_like calls a new instance)
_FIRST_CALL: "weakref.WeakKeyDictionary[Any, Any]" = weakref.WeakKeyDictionary()


def call_like(
    original: keras.layers.Layer,
    new: keras.layers.Layer,
    shapes: Optional[List[Tuple[Optional[int], ...]]] = None,
) -> None:
    """Call ``new`` (another instance of ``original``'s class) the way ``original``'s
    first traced call was made, on fresh symbolic inputs, so that it builds its weights.

    Args:
        original: a composite layer whose call was traced.
        new: the instance to build.
        shapes: the shapes of the call's input tensors, in their traced order (default:
            the original call's).

    Raises:
        ValueError: ``original`` has no traced call.
    """
    node = _FIRST_CALL.get(original)
    if node is None:
        raise ValueError(f"layer '{original.name}' has no traced call")
    order = {id(t): i for i, t in enumerate(node.input_tensors)}
    args, kwargs, _ = _fresh_arguments(
        node, lambda x: x.shape if shapes is None else shapes[order[id(x)]]
    )
    new(*args, **kwargs)


def _fresh_arguments(
    node: Any, shape_of: Callable[[Any], Tuple[Optional[int], ...]], name: Optional[str] = None
) -> Tuple[tuple, dict, List[Any]]:
    """The arguments of call ``node`` with each KerasTensor replaced by a fresh
    ``keras.Input`` of ``shape_of(tensor)`` (named ``{name}_input_{i}`` when ``name`` is
    given): ``(args, kwargs, inputs)``, the inputs in the order of the call's input
    tensors (``keras.tree`` order of ``(args, kwargs)``)."""
    from keras import tree

    fresh: Dict[int, Any] = {}
    inputs: List[Any] = []

    def replace(x):
        if isinstance(x, keras.KerasTensor):
            if id(x) not in fresh:
                label = None if name is None else f"{name}_input_{len(inputs)}"
                fresh[id(x)] = keras.Input(batch_shape=shape_of(x), dtype=x.dtype, name=label)
                inputs.append(fresh[id(x)])
            return fresh[id(x)]
        return x

    args, kwargs = tree.map_structure(
        replace, (tuple(node.arguments.args), dict(node.arguments.kwargs))
    )
    return args, kwargs, inputs


def trace_call(
    call: Callable[..., Any], layer: keras.layers.Layer, traced: keras.Model, *before: Any
) -> Optional[keras.Model]:
    """The functional model of ``call(layer, *before, *args, **kwargs)`` on fresh symbolic
    arguments shaped like those of the call of composite ``layer`` that gave ``traced``
    (its unknown axes left unknown), inputs in ``traced``'s order; None where ``call``
    returns None or the call is not found.

    A graph stand-in (:class:`~kerasprune.graph.stand_ins.GraphStandIn`) computes what a
    block's call computes with layers of its own; traced like this, it holds for every
    length where ``traced`` may hold for one only.
    """
    from keras import tree

    found = [k for k, v in _TRACES.get(layer, {}).items() if v is traced]
    node = next((n for n in calls_of(layer) if found and id(n) == found[0]), None)
    if node is None:
        return None
    args, kwargs, inputs = _fresh_arguments(node, lambda x: x.shape, layer.name)
    outputs = call(layer, *before, *args, **kwargs)
    if outputs is None:
        return None
    return keras.Model(inputs, tree.flatten(outputs), name=layer.name)


# traces made at a concrete size of an axis the call leaves unknown (see _trace)
_FIXED_SHAPE: "weakref.WeakSet[keras.Model]" = weakref.WeakSet()

# the size given to unknown axes (the batch axis too) when a call cannot be traced without
# one; multiply-adds inside such a block (count_flops) are counted at this length
FIXED_AXIS_SIZE = 8


def traced_at_fixed_shape(traced: keras.Model) -> bool:
    """Whether ``traced`` was traced with its unknown axes set to a concrete size: its
    channels are the layer's, but its graph holds only for that size."""
    return traced in _FIXED_SHAPE


def _trace(layer: keras.layers.Layer, node: Any) -> Union[keras.Model, TraceFailure]:
    traced = _trace_at(layer, node, fixed=False)
    if not isinstance(traced, TraceFailure):
        return traced
    unknown = any(d is None for t in node.input_tensors for d in tuple(t.shape))
    if not unknown:
        return traced
    # some calls need a concrete length (keras-hub's causal masks: ops.arange(seq_len)):
    # the channels do not depend on it, so the walk can use a trace at a fixed length
    retry = _trace_at(layer, node, fixed=True)
    if isinstance(retry, TraceFailure):
        if str(retry) == str(traced):
            return traced
        # both reasons: why a fixed size was tried, and what stopped the trace then
        return TraceFailure(f"{traced}; traced at a fixed size: {retry.split(': ', 1)[-1]}")
    _FIXED_SHAPE.add(retry)
    return retry


def _tolerant_output_spec(spec: Callable[..., Any]) -> Optional[Callable[..., Any]]:
    """``spec`` (a layer's bound ``compute_output_spec``) taking, and ignoring, keyword
    arguments it has no parameter for when their value is None; None when ``spec``
    takes every keyword already (``**kwargs``)."""
    try:
        params = inspect.signature(spec).parameters
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return None

    def tolerant(*args: Any, **kwargs: Any) -> Any:
        kept = {k: v for k, v in kwargs.items() if k in params or v is not None}
        return spec(*args, **kept)

    return tolerant


def _descendants(layer: keras.layers.Layer) -> List[keras.layers.Layer]:
    """Every layer below ``layer`` (children, their children...), each once."""
    out: List[keras.layers.Layer] = []
    seen = {id(layer)}
    stack = sublayers(layer)
    while stack:
        sub = stack.pop()
        if id(sub) not in seen:
            seen.add(id(sub))
            out.append(sub)
            stack.extend(sublayers(sub))
    return out


@contextlib.contextmanager
def _none_arguments_tolerated(layer: keras.layers.Layer) -> Iterator[None]:
    """While tracing ``layer``'s call, let its sublayers' symbolic calls ignore keyword
    arguments that are None and that their ``compute_output_spec`` does not take.

    A sublayer called on symbolic tensors gets its output spec from
    ``compute_output_spec(*args, **kwargs)``, with the call's arguments. A subclass that
    adds call arguments without overriding it breaks there: keras-hub's
    ``CachedMultiHeadAttention`` adds ``cache`` and ``cache_update_index`` to
    ``MultiHeadAttention.call``, whose ``compute_output_spec`` does not take them, and
    its blocks call it with ``cache=None`` (GPT-2's ``TransformerDecoder``). keras-hub's
    blocks are never called symbolically on their insides (they give their own output
    shape), so only a trace meets this. A None argument selects the call's plain path
    (no cache), whose output spec is the parent's; the call node still records it. An
    instance attribute shadows the method for the trace and is removed afterwards.
    """
    patched = []
    for sub in _descendants(layer):
        if "compute_output_spec" in vars(sub):
            continue  # an instance attribute of its own: leave it be
        tolerant = _tolerant_output_spec(sub.compute_output_spec)
        if tolerant is not None:
            object.__setattr__(sub, "compute_output_spec", tolerant)
            patched.append(sub)
    try:
        yield
    finally:
        for sub in patched:
            object.__delattr__(sub, "compute_output_spec")


def _trace_at(layer: keras.layers.Layer, node: Any, fixed: bool) -> Union[keras.Model, TraceFailure]:
    from keras import tree

    what = f"composite layer '{layer.name}' ({type(layer).__name__})"

    def shape_of(x):
        if not fixed:
            return x.shape
        return tuple(FIXED_AXIS_SIZE if d is None else d for d in x.shape)

    try:
        symbolic_args, symbolic_kwargs, inputs = _fresh_arguments(node, shape_of, layer.name)
        with _none_arguments_tolerated(layer):
            outputs = layer.call(*symbolic_args, **symbolic_kwargs)
        flat_outputs = tree.flatten(outputs)
        traced = keras.Model(inputs, flat_outputs, name=layer.name)
    except Exception as exc:  # noqa: BLE001  (whatever the layer's code raises)
        return TraceFailure(
            f"{what} cannot be traced symbolically: {first_line(exc, type(exc).__name__)[:200]}"
        )
    if len(traced.outputs) != len(node.outputs) or any(
        tuple(a.shape) != tuple(shape_of(b)) for a, b in zip(traced.outputs, node.outputs)
    ):
        return TraceFailure(f"{what} traces to outputs of other shapes than its call's")
    return traced


def iter_calls(model: keras.Model, prefix: str = "") -> Iterator[Tuple[str, object, object]]:
    """Yield ``(path, layer, node)`` for each call of a leaf layer, in topological order.

    Nested models and traceable composite layers are walked into.
    """
    for node in iter_nodes(functional_of(model)):
        op = node.operation
        path = prefix + op.name
        if is_graph_model(op):
            yield from iter_calls(op, path + "/")
            continue
        if is_composite(op):
            traced = trace_composite(op, node)
            if not isinstance(traced, TraceFailure):
                yield from iter_calls(traced, path + "/")
                continue
        yield path, op, node


def input_key(index: int) -> Tuple[Any, ...]:
    """The observation key of the model's ``index``-th input (see :class:`FlatRunner`)."""
    return ("#input", index, 0)


def call_key(scope: str, ordinal: int, output: int) -> Tuple[Any, ...]:
    """The observation key of output ``output`` of the ``ordinal``-th call node (in
    :func:`~kerasprune.graph.keras_graph.iter_nodes` order) of the graph walked in
    ``scope`` (see :func:`scope_of`; ``""`` for the model's own graph). Positions, not
    names: the operations of a composite traced again are new objects with new names."""
    return (scope, ordinal, output)


def scope_of(path: str, occurrence: int) -> str:
    """The scope of the graph of the ``occurrence``-th call walked at ``path`` of a
    nested model or composite layer (layers keep their names, so paths are stable)."""
    return f"{path}#{occurrence}"


def _trace_shaped(layer: keras.layers.Layer, node: Any, shapes: List[Tuple[int, ...]]) -> Union[keras.Model, TraceFailure]:
    """The functional graph of call ``node`` of composite ``layer`` traced again with its
    input tensors (in ``node.input_tensors`` order) of concrete ``shapes``."""
    order = {id(t): i for i, t in enumerate(node.input_tensors)}
    what = f"composite layer '{layer.name}' ({type(layer).__name__})"
    try:
        args, kwargs, inputs = _fresh_arguments(node, lambda x: shapes[order[id(x)]], layer.name)
        with _none_arguments_tolerated(layer):
            outputs = layer.call(*args, **kwargs)
        return keras.Model(inputs, keras.tree.flatten(outputs), name=layer.name)
    except Exception as exc:  # noqa: BLE001  (whatever the layer's code raises)
        return TraceFailure(
            f"{what} cannot be traced symbolically: {first_line(exc, type(exc).__name__)[:200]}"
        )


class FlatRunner:
    """Run a model call by call, nested models and composite layers walked into, and
    see (or change) any tensor the analysis walk can name.

    The model is evaluated leaf call by leaf call (a layer with a handler, a Keras
    operation, a composite layer that cannot be traced) in topological order, on
    whatever tensors it is given: symbolic ``KerasTensor``s or a batch's arrays. A
    composite's ``call`` is traced again at the shapes it receives (the batch's real size
    and sequence length; once per shapes), so a block the analysis traced at a fixed
    length is run at the data's. The layers are the model's own, so are their weights.

    Tensors are named as the analysis walk names them: :func:`input_key` for the model's
    inputs, :func:`call_key` for each output of each call (a nested graph's input has the
    key of the tensor its call was given); top-level tensors may also be named by the
    model's own KerasTensor.

    Args:
        model: a functional or Sequential model.
    """

    def __init__(self, model: keras.Model) -> None:
        self.fn = functional_of(model)
        self._traces: Dict[Tuple[int, int, Tuple[Any, ...]], keras.Model] = {}

    def __call__(
        self,
        inputs: Any,
        watch: List[Any],
        edit: Optional[Callable[[int, Any], Any]] = None,
    ) -> Tuple[List[Any], List[Any]]:
        """Evaluate the model on ``inputs`` (the structure of its inputs).

        Args:
            inputs: the model's inputs (tensors of any backend, or KerasTensors).
            watch: the tensors to return, each an observation key or a top-level
                KerasTensor of the model.
            edit: ``edit(i, value)`` replaces the ``i``-th watched tensor, for every call
                that reads it (the watched value returned is the one before the edit).

        Returns:
            ``(watched, outputs)``: the watched tensors, and the model's outputs (a list).

        Raises:
            ValueError: a watched tensor is not in the model's graph, or a composite
                cannot be traced at the shapes it receives.
        """
        index: Dict[Any, int] = {}
        for i, w in enumerate(watch):
            index[("top", id(w)) if isinstance(w, keras.KerasTensor) else ("key",) + tuple(w)] = i
        seen: List[Any] = [None] * len(watch)
        counts: Dict[str, int] = {}

        def place(value: Any, key: Tuple[Any, ...], top: Any = None) -> Any:
            for name in (("key",) + key, ("top", id(top)) if top is not None else None):
                i = index.get(name) if name is not None else None
                if i is not None and seen[i] is None:
                    seen[i] = value
                    return value if edit is None else edit(i, value)
            return value

        def run(graph: keras.Model, given: List[Any], prefix: str, scope: str, mapped: Dict[int, Any]) -> List[Any]:
            for kt, value in zip(graph.inputs, given):
                mapped[id(kt)] = value

            def swap(a: Any) -> Any:
                return mapped.get(id(a), a) if isinstance(a, keras.KerasTensor) else a

            for ordinal, node in enumerate(iter_nodes(graph)):
                op = node.operation
                path = prefix + op.name
                given_in = [swap(t) for t in node.input_tensors]
                inner: Any = None
                if is_graph_model(op):
                    inner = functional_of(op)
                elif is_composite(op) and not isinstance(trace_composite(op, node), TraceFailure):
                    inner = self._trace(op, node, [tuple(t.shape) for t in given_in])
                if inner is not None:
                    occurrence = counts.get(path, 0)
                    counts[path] = occurrence + 1
                    result = run(inner, given_in, path + "/", scope_of(path, occurrence), {})
                else:
                    args, kwargs = keras.tree.map_structure(
                        swap, (tuple(node.arguments.args), dict(node.arguments.kwargs))
                    )
                    result = keras.tree.flatten(op(*args, **kwargs))
                top_level = scope == ""
                for j, (old, value) in enumerate(zip(node.outputs, result)):
                    mapped[id(old)] = place(value, call_key(scope, ordinal, j), old if top_level else None)
            return [mapped.get(id(o), o) for o in graph.outputs]

        flat_in = keras.tree.flatten(inputs)
        if len(flat_in) != len(self.fn.inputs):
            raise ValueError(f"model '{self.fn.name}' has {len(self.fn.inputs)} inputs, got {len(flat_in)}")
        # the batch's inputs in the order of the graph's own (keras.tree order of its structure)
        by_id = {id(t): v for t, v in zip(keras.tree.flatten(graph_inputs(self.fn)), flat_in)}
        given = [place(by_id[id(t)], input_key(i), t) for i, t in enumerate(self.fn.inputs)]
        outputs = run(self.fn, given, "", "", {})
        missing = [watch[i] for i, v in enumerate(seen) if v is None]
        if missing:
            raise ValueError(f"tensor {missing[0]!r} is not in the graph of model '{self.fn.name}'")
        return seen, outputs

    def _trace(self, layer: keras.layers.Layer, node: Any, shapes: List[Tuple[Any, ...]]) -> keras.Model:
        key = (id(layer), id(node), tuple(shapes))
        if key not in self._traces:
            traced = _trace_shaped(layer, node, shapes)
            if isinstance(traced, TraceFailure):
                raise ValueError(str(traced))
            self._traces[key] = traced
        return self._traces[key]
