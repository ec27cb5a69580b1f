"""The public API: what ``import kerasprune`` offers and how its errors are built."""

from __future__ import annotations

import importlib
import inspect

import keras
import pytest

import kerasprune as kp
from kerasprune import errors

PUBLIC_PACKAGES = [
    "kerasprune",
    "kerasprune.graph",
    "kerasprune.costs",
    "kerasprune.importance",
    "kerasprune.selection",
    "kerasprune.surgery",
    "kerasprune.report",
    "kerasprune.callbacks",
    "kerasprune.pruning",
    "kerasprune.runs",
    "kerasprune.export",
    "kerasprune.models",
    "kerasprune.errors",
]


def test_star_import_gives_every_name_of_all():
    namespace: dict = {}
    exec("from kerasprune import *", namespace)
    missing = [n for n in kp.__all__ if n not in namespace]
    assert not missing


@pytest.mark.parametrize("package", PUBLIC_PACKAGES)
def test_every_name_in_all_resolves(package):
    module = importlib.import_module(package)
    missing = [n for n in module.__all__ if not hasattr(module, n)]
    assert not missing, f"{package}.__all__ names missing attributes: {missing}"
    assert len(set(module.__all__)) == len(module.__all__), f"{package}.__all__ repeats names"


def _error_classes():
    return [
        obj
        for _, obj in inspect.getmembers(errors, inspect.isclass)
        if issubclass(obj, Exception) and obj.__module__ == errors.__name__
    ]


def test_every_error_class_is_in_the_errors_module_and_exported_at_the_top():
    names = {cls.__name__ for cls in _error_classes()}
    assert names == set(errors.__all__)
    assert names <= set(kp.__all__)
    assert all(getattr(kp, n) is getattr(errors, n) for n in names)


def test_no_error_class_is_defined_outside_the_errors_module():
    import pkgutil

    defined_elsewhere = []
    for info in pkgutil.walk_packages(kp.__path__, "kerasprune."):
        if info.name in ("kerasprune.errors", "kerasprune.__main__"):
            continue
        module = importlib.import_module(info.name)
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if issubclass(obj, BaseException) and obj.__module__ == info.name:
                defined_elsewhere.append(f"{info.name}.{obj.__name__}")
    assert not defined_elsewhere


@pytest.mark.parametrize("cls", _error_classes(), ids=lambda c: c.__name__)
def test_each_error_is_a_kerasprune_error_and_a_builtin_one(cls):
    assert issubclass(cls, kp.KerasPruneError)
    if cls is not kp.KerasPruneError:
        builtins = (TypeError, ValueError, KeyError, RuntimeError)
        assert issubclass(cls, builtins), f"{cls.__name__} derives from no built-in error"


def test_group_not_found_prints_its_message_not_a_repr():
    err = kp.GroupNotFoundError("no channel group named 'x'")
    assert str(err) == "no channel group named 'x'"
    assert isinstance(err, KeyError)


def test_constructor_mappings_are_registered_through_the_top_level_package():
    from kerasprune.graph import constructors

    assert "register_constructor" in kp.__all__
    assert kp.register_constructor is constructors.register_constructor
    assert kp.graph.register_constructor is constructors.register_constructor


def test_a_stand_in_is_registered_from_kerasprune_graph():
    from kerasprune.graph import stand_ins

    assert kp.graph.register_stand_in is stand_ins.register_stand_in
    with pytest.raises(kp.RegistryError, match="two classes"):
        kp.graph.register_stand_in("LlamaTransformerDecoder", object, dict)


def test_a_graph_stand_in_is_registered_from_kerasprune_graph_with_its_arguments_checked():
    from kerasprune.graph import stand_ins

    assert kp.graph.register_graph_stand_in is stand_ins.register_graph_stand_in
    assert kp.graph.graph_stand_in_for is stand_ins.graph_stand_in_for
    with pytest.raises(kp.RegistryError, match="takes a class"):
        kp.graph.register_graph_stand_in("TransformerDecoder", lambda block, kept, x: x)
    with pytest.raises(kp.RegistryError, match="takes functions"):
        kp.graph.register_graph_stand_in(keras.layers.Dense, "not a function")
    assert kp.graph.graph_stand_in_for(keras.layers.Dense(2)) is None
