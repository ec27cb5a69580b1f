"""Performance targets such as ``val_accuracy >= 0.992``."""

from __future__ import annotations

import operator
import re
from dataclasses import dataclass
from typing import Mapping, Union

from kerasprune.errors import TargetError

__all__ = ["Target", "parse_target"]

_OPS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt}
_PATTERN = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(>=|<=|>|<)\s*([-+0-9.eE]+)\s*$")


@dataclass(frozen=True)
class Target:
    """A metric that must stay on the right side of a threshold."""

    metric: str
    op: str
    threshold: float

    def met(self, metrics: Mapping[str, float]) -> bool:
        """Whether ``metrics`` (as logged: ``val_accuracy`` ...) meet the target."""
        if self.metric not in metrics:
            raise TargetError(
                f"target metric {self.metric!r} was not measured; measured: {sorted(metrics)}"
            )
        return bool(_OPS[self.op](float(metrics[self.metric]), self.threshold))

    def __str__(self) -> str:
        return f"{self.metric}{self.op}{self.threshold:g}"


def parse_target(value: Union[str, Target]) -> Target:
    """Parse ``"val_accuracy>=0.992"`` (operators ``>= <= > <``) into a :class:`Target`."""
    if isinstance(value, Target):
        return value
    m = _PATTERN.match(str(value))
    if not m:
        raise TargetError(
            f"cannot read the target {value!r}: write it as METRIC OP NUMBER, "
            "for example 'val_accuracy>=0.99' or 'val_loss<=0.05'"
        )
    return Target(m.group(1), m.group(2), float(m.group(3)))
