"""The package's layers import one way, and Keras's private fields are read in one module."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, List, Set

PACKAGE = Path(__file__).resolve().parent.parent / "kerasprune"

# lowest first: a module may import only from its own layer or the ones before it
LAYERS = [
    "errors",
    "backend",
    "distribute",
    "runs",
    "graph",
    "costs",
    "importance",
    "selection",
    "surgery",
    "report",
    "callbacks",
    "pruning",
    "export",
    "models",
    "data",
    "cli",
    "__main__",
]

KERAS_PRIVATE = ("_nodes_by_depth", "_keras_history", "_inbound_nodes", "_inputs_struct")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> Dict[str, Path]:
    return {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _imports(path: Path, name: str, known: Set[str]) -> Set[str]:
    """Every kerasprune module ``path`` imports, anywhere in the file (function-local too)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out: Set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            candidates = [target] + [f"{target}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            candidates = [a.name for a in node.names]
        else:
            continue
        out |= {c for c in candidates if c in known and c != name}
    return out


def _graph() -> Dict[str, Set[str]]:
    mods = _modules()
    known = set(mods)
    return {m: _imports(p, m, known) for m, p in mods.items()}


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_every_module_belongs_to_a_known_layer():
    unknown = sorted({_layer(m) for m in _modules()} - set(LAYERS) - {""})
    assert not unknown, f"add {unknown} to LAYERS in tests/test_structure.py, in import order"


def test_imports_go_one_way_from_graph_to_cli():
    up = [
        f"{m} -> {t}"
        for m, targets in _graph().items()
        for t in targets
        if _layer(m) and _layer(t) and LAYERS.index(_layer(t)) > LAYERS.index(_layer(m))
    ]
    assert not up, "imports from a higher layer:\n" + "\n".join(sorted(up))


def test_no_import_cycle_anywhere_in_the_package():
    # a package importing its own submodules (its __init__) is an arrow down, not a cycle
    graph = {m: {t for t in ts if not t.startswith(m + ".")} for m, ts in _graph().items()}
    cycles: List[List[str]] = []
    state: Dict[str, int] = {}

    def visit(node: str, stack: List[str]) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [])
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_keras_private_fields_are_read_in_one_module():
    readers = {
        name: [f for f in KERAS_PRIVATE if f in path.read_text()]
        for name, path in _modules().items()
    }
    outside = {m: fs for m, fs in readers.items() if fs and m != "kerasprune.graph.keras_graph"}
    assert not outside, f"Keras internals read outside kerasprune.graph.keras_graph: {outside}"
    assert readers["kerasprune.graph.keras_graph"], "the reader module itself reads none"


def test_importing_every_layer_of_the_package_does_not_import_keras_hub():
    import subprocess
    import sys

    code = (
        "import sys, kerasprune, kerasprune.graph, kerasprune.surgery, kerasprune.pruning, "
        "kerasprune.callbacks, kerasprune.cli; print('keras_hub' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True,
        cwd=PACKAGE.parent,
    )
    assert out.stdout.strip().splitlines()[-1] == "False"


def test_keras_hub_handler_modules_load_when_a_keras_hub_layer_is_looked_up():
    keras_hub = __import__("pytest").importorskip("keras_hub")
    from kerasprune.graph import registry

    layer = keras_hub.layers.PositionEmbedding(sequence_length=4)
    registry.handler_for(layer)
    assert "keras_hub" not in registry._LAZY
    import sys

    assert "kerasprune.graph.handlers.hub_layers" in sys.modules
    assert "kerasprune.graph.handlers.hub_attention" in sys.modules
