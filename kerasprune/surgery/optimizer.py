"""Carrying an optimizer's state (step count, momenta, ...) over to a rebuilt model."""

from __future__ import annotations

import warnings
from typing import Callable, Dict, List, Mapping, Optional, Tuple

import keras
import numpy as np

__all__ = ["compile_like", "carry_optimizer_state"]


def compile_like(old: keras.Model, new: keras.Model) -> bool:
    """Compile ``new`` with ``old``'s compile arguments and a fresh optimizer of the same kind.

    Returns:
        True if ``new`` was compiled (``old`` was compiled), False otherwise.
    """
    if not getattr(old, "compiled", False):
        return False
    try:
        new.compile_from_config(old.get_compile_config())
        return True
    except Exception:  # custom, unserializable losses or metrics: reuse the objects
        cfg = dict(getattr(old, "_compile_config").config)
        opt = old.optimizer
        cfg["optimizer"] = type(opt).from_config(opt.get_config())
        new.compile(**cfg)
        return True


def _slot_owner(name: str, prefixes: List[Tuple[str, Tuple[str, int]]]):
    for prefix, owner in prefixes:
        if name.startswith(prefix):
            return owner, name[len(prefix):]
    return None, None


def _renamer(renames: Mapping[str, str]) -> Callable[[str], str]:
    """Optimizer variable name -> the name it has for the rebuilt model's variables."""
    def sanitized(path: str) -> str:
        return path.replace("/", "_") + "_"

    pairs = sorted(
        ((sanitized(old), sanitized(new)) for old, new in renames.items()), key=lambda p: -len(p[0])
    )

    def rename(name: str) -> str:
        for old, new in pairs:
            if name.startswith(old):
                return new + name[len(old):]
        return name

    return rename


def carry_optimizer_state(
    old: keras.Model,
    new: keras.Model,
    weights_of: Dict[str, Tuple[list, Callable[[list], list]]],
    renames: Optional[Mapping[str, str]] = None,
) -> int:
    """Copy ``old.optimizer``'s variables into ``new.optimizer``, sliced like the weights.

    Args:
        old: the original model, compiled, whose optimizer has been built.
        new: the rebuilt model, compiled with an optimizer of the same kind.
        weights_of: layer path -> (the layer's original weight variables, a function that
            slices a list of arrays shaped like them the way the layer's weights were).
        renames: original variable path -> the path of its counterpart in ``new``, for
            variables whose layer got another name (layers named automatically, rebuilt
            by their model's constructor).

    Returns:
        The number of optimizer variables carried over. Slots whose shape neither matches
        nor can be sliced are left freshly initialized, with a warning.
    """
    old_opt, new_opt = old.optimizer, new.optimizer
    if old_opt is None or new_opt is None or not getattr(old_opt, "built", False):
        return 0
    if not getattr(new_opt, "built", False):
        new_opt.build(new.trainable_variables)
    new_vars = {v.name: v for v in new_opt.variables}
    rename = _renamer(renames or {})
    # sanitized variable path -> (layer path, weight position); longest first
    prefixes = []
    for path, (variables, _) in weights_of.items():
        for i, v in enumerate(variables):
            prefixes.append((v.path.replace("/", "_") + "_", (path, i)))
    prefixes.sort(key=lambda p: -len(p[0]))

    carried, skipped = 0, []
    pending: Dict[Tuple[str, str], Dict[int, np.ndarray]] = {}
    for v in old_opt.variables:
        target = new_vars.get(rename(v.name))
        if target is None:
            skipped.append(v.name)
            continue
        owner, suffix = _slot_owner(v.name, prefixes)
        if owner is not None:  # a slot of a sliced weight: sliced below, per layer
            pending.setdefault((owner[0], suffix), {})[owner[1]] = np.asarray(v.numpy())
        elif tuple(target.shape) == tuple(v.shape):
            target.assign(v.numpy())
            carried += 1
        else:
            skipped.append(v.name)
    for (path, suffix), slots in pending.items():
        variables, slicer = weights_of[path]
        arrays = [slots.get(i, np.zeros(tuple(var.shape), dtype=var.dtype)) for i, var in enumerate(variables)]
        sliced = slicer(arrays)
        for i in slots:
            name = variables[i].path.replace("/", "_") + "_" + suffix
            target = new_vars.get(rename(name))
            if target is None or tuple(target.shape) != tuple(np.shape(sliced[i])):
                skipped.append(name)
                continue
            target.assign(sliced[i])
            carried += 1
    if skipped:
        warnings.warn(
            "kerasprune: optimizer variables restarted from their initial value because "
            f"their shape could not be matched: {', '.join(skipped[:5])}"
            + (" ..." if len(skipped) > 5 else ""),
            stacklevel=3,
        )
    return carried
