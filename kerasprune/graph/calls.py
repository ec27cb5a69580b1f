"""Every call of every leaf layer in a model, nested models walked into."""

from __future__ import annotations

from typing import Iterator, Tuple

import keras

from kerasprune.graph.analysis import _is_graph_model, functional_of

__all__ = ["iter_calls"]


def iter_calls(model: keras.Model, prefix: str = "") -> Iterator[Tuple[str, object, object]]:
    """Yield ``(path, layer, node)`` for each call of a leaf layer, in topological order."""
    fn = functional_of(model)
    for depth in sorted(fn._nodes_by_depth.keys(), reverse=True):
        for node in fn._nodes_by_depth[depth]:
            op = node.operation
            if op is None or node.is_input:
                continue
            path = prefix + op.name
            if _is_graph_model(op):
                yield from iter_calls(op, path + "/")
            else:
                yield path, op, node
