"""Built-in handler families; importing this package registers them all."""

from kerasprune.graph.handlers import (  # noqa: F401
    conv,
    dense,
    merge,
    normalization,
    ops,
    passthrough,
    reshape,
)
from kerasprune.graph.handlers import attention, recurrent  # noqa: F401
from kerasprune.graph.handlers.passthrough import PassThroughHandler
from kerasprune.graph.handlers.normalization import PerChannelHandler

__all__ = ["PassThroughHandler", "PerChannelHandler"]
