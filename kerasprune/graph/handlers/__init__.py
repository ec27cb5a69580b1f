"""Built-in handler families; importing this package registers them all."""

from kerasprune.graph.handlers import (  # noqa: F401
    applications,
    attention,
    conv,
    dense,
    einsum,
    merge,
    normalization,
    ops,
    passthrough,
    recurrent,
    reshape,
)
from kerasprune.graph.handlers.normalization import PerChannelHandler
from kerasprune.graph.handlers.passthrough import PassThroughHandler

__all__ = ["PassThroughHandler", "PerChannelHandler"]
