"""Reading a Keras 3 functional graph: the only module that touches Keras's private fields.

Keras 3 has no public API for walking a functional model node by node, so kerasprune
reads a few private attributes (``_nodes_by_depth``, ``_keras_history``,
``_inbound_nodes``, ``_inputs_struct``, ``Sequential._functional``). They are read here
and nowhere else, so that a change in a Keras release is mended in one file.
"""

from __future__ import annotations

import contextlib
import re
from typing import Any, Dict, Iterator, List, Optional, Tuple

import keras

from kerasprune.errors import UnsupportedModelError

__all__ = [
    "functional_of",
    "is_graph_model",
    "sublayers",
    "iter_nodes",
    "producer",
    "producer_name",
    "upstream_tensors",
    "calls_of",
    "readers",
    "graph_inputs",
    "is_operation",
    "operation_name",
    "describe_call",
    "has_graph_config",
    "functional_copy",
    "shapes_only",
]


def functional_of(model: keras.Model) -> keras.Model:
    """The functional graph behind ``model`` (a Functional, or a built Sequential).

    Raises:
        UnsupportedModelError: for subclassed models and unbuilt Sequential models.
    """
    if isinstance(model, keras.Sequential):
        fn = getattr(model, "_functional", None)
        if fn is None:
            raise UnsupportedModelError(
                f"Sequential model '{model.name}' is not built, so it has no graph to "
                "analyze. Give it an input shape first: start it with "
                "keras.Input(shape=...), or call model.build((None, ...)) or run it on "
                "a batch of data."
            )
        return fn
    if is_graph_model(model):
        return model
    raise UnsupportedModelError(
        f"model '{getattr(model, 'name', model)}' ({type(model).__name__}) is a "
        "subclassed keras.Model: its layers are called from Python code in call(), so "
        "there is no functional graph to read which channels connect to which. Build "
        "the same network with the functional API instead:\n"
        "    inputs = keras.Input(shape=...)\n"
        "    x = keras.layers.Conv2D(...)(inputs)\n"
        "    ...\n"
        "    model = keras.Model(inputs, outputs)\n"
        "and copy the weights over with model.set_weights(old_model.get_weights())."
    )


def is_graph_model(layer: object) -> bool:
    """Whether ``layer`` is a model with a functional graph (a Functional, a built
    Sequential) that the walk can enter."""
    if isinstance(layer, keras.Sequential):
        return getattr(layer, "_functional", None) is not None
    return (
        isinstance(layer, keras.Model)
        and hasattr(layer, "_nodes_by_depth")
        and hasattr(layer, "_run_through_graph")
        and hasattr(layer, "_inputs_struct")
    )


def sublayers(layer: keras.layers.Layer) -> List[keras.layers.Layer]:
    """The layers ``layer`` tracks as its direct children (attributes, lists of layers)."""
    return list(layer._flatten_layers(include_self=False, recursive=False))


def iter_nodes(fn: keras.Model) -> Iterator[Any]:
    """Every call node of functional graph ``fn`` (input nodes left out), inputs first.

    Each node has ``operation`` (the layer or operation called), ``input_tensors`` and
    ``outputs`` (KerasTensors).
    """
    for depth in sorted(fn._nodes_by_depth.keys(), reverse=True):
        for node in fn._nodes_by_depth[depth]:
            if node.operation is None or node.is_input:
                continue
            yield node


def producer(tensor: Any) -> Tuple[Optional[object], int, int]:
    """``(operation, node_index, tensor_index)`` that made KerasTensor ``tensor``
    (operation None for a tensor kerasprune cannot trace)."""
    hist = getattr(tensor, "_keras_history", None)
    if hist is None or hist.operation is None:
        return None, 0, 0
    return hist.operation, hist.node_index, hist.tensor_index


def producer_name(tensor: Any) -> str:
    """The name of the layer that made ``tensor`` (the tensor's own name if none)."""
    op = producer(tensor)[0]
    return op.name if op is not None else tensor.name


def upstream_tensors(tensor: Any) -> List[Any]:
    """The input tensors of the call that made ``tensor`` (empty for a graph input)."""
    op, node_index, _ = producer(tensor)
    if op is None:
        return []
    nodes = getattr(op, "_inbound_nodes", [])
    return list(nodes[node_index].input_tensors) if node_index < len(nodes) else []


def calls_of(op: Any) -> List[Any]:
    """The call nodes of operation ``op`` (a layer's calls, in every graph)."""
    return list(getattr(op, "_inbound_nodes", []))


def readers(fn: keras.Model) -> Dict[int, List[object]]:
    """id(KerasTensor) -> the operations of ``fn`` that take it as an input."""
    out: Dict[int, List[object]] = {}
    for node in iter_nodes(fn):
        for t in node.input_tensors:
            out.setdefault(id(t), []).append(node.operation)
    return out


def graph_inputs(fn: keras.Model) -> Any:
    """The inputs of functional graph ``fn`` in the structure the model was built with
    (a dict stays a dict), for building another model on the same inputs."""
    return fn._inputs_struct


def is_operation(obj: object) -> bool:
    """Whether ``obj`` is a Keras operation that is not a layer (``x + 3.0`` leaves a
    ``keras.src.ops.numpy.Add`` in the graph, ``keras.ops.relu(x)`` a ``Relu``)."""
    return isinstance(obj, keras.Operation) and not isinstance(obj, keras.layers.Layer)


_OPS_MODULE = "keras.src.ops."


def operation_name(op: object) -> str:
    """The public name of an operation's function: ``keras.ops.add`` for ``Add``,
    ``keras.ops.hard_silu`` for ``HardSilu``, ``keras.ops.image.resize`` for ``Resize``.

    The function is found by the class name in snake case, in ``keras.ops`` or in the
    ``keras.ops`` submodule named like the class's module; an operation of another
    module (a user's own) is named by its module and class.
    """
    cls = type(op)
    snake = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", cls.__name__)
    snake = snake.lower()
    module = getattr(cls, "__module__", "") or ""
    if module.startswith(_OPS_MODULE):
        sub = module[len(_OPS_MODULE):].split(".")[0]
        if callable(getattr(keras.ops, snake, None)):
            return f"keras.ops.{snake}"
        if callable(getattr(getattr(keras.ops, sub, None), snake, None)):
            return f"keras.ops.{sub}.{snake}"
    return f"{module}.{cls.__name__}"


def describe_call(obj: object, path: str) -> str:
    """How messages name a graph node: ``layer 'conv' (Conv2D)`` or
    ``operation 'add_3' (keras.ops.add)``."""
    if is_operation(obj):
        return f"operation '{path}' ({operation_name(obj)})"
    return f"layer '{path}' ({type(obj).__name__})"


def has_graph_config(model: keras.Model, config: Any) -> bool:
    """Whether ``config`` (``model.get_config()``) describes ``model``'s graph layer by
    layer (a Functional or Sequential config), rather than holding the constructor
    arguments of a class that builds its graph in ``__init__`` (keras-hub models, a
    ``keras.Model`` subclass calling ``super().__init__(inputs, outputs)``)."""
    if not isinstance(config, dict) or not isinstance(config.get("layers"), list):
        return False
    if isinstance(model, keras.Sequential):
        return True
    return "input_layers" in config and "output_layers" in config


def functional_copy(model: keras.Model) -> keras.Model:
    """A plain functional ``keras.Model`` over the graph of graph model ``model``: the
    same layer objects, inputs and outputs (in their structure), and name.

    Its ``get_config()`` is a functional config, layer by layer, also where ``model``'s
    own class has a config of constructor arguments. Nothing of ``model`` changes.
    """
    fn = functional_of(model)
    return keras.Model(fn._inputs_struct, fn._outputs_struct, name=model.name)


@contextlib.contextmanager
def shapes_only() -> Iterator[None]:
    """Build layers and models with variables that have shapes but no values.

    Inside a ``keras.StatelessScope`` Keras defers the initialization of a variable
    made with an initializer (it records it as uninitialized); a layer or model built
    here allocates no weights, so probing a constructor costs no memory. The variables
    made inside are dropped from Keras's list of uninitialized variables on exit, so
    nothing initializes them later; what was built here must not be used to compute.
    """
    from keras.src.backend.common import global_state

    key = "uninitialized_variables"
    before = list(global_state.get_global_attribute(key, [], set_to_default=True))
    try:
        with keras.StatelessScope(initialize_variables=False):
            yield
    finally:
        global_state.set_global_attribute(key, before)
