"""What a model and its channels cost: parameters, multiply-adds, measured latency.

``counting`` counts a model's parameters and multiply-adds (FLOPs) per layer;
``channels`` says what each channel of a group costs and measures what a whole keep-set
removes, for selection by parameters or FLOPs; ``latency`` times a model's calls. It
sits just above :mod:`kerasprune.graph`, below importance and selection.
"""

from kerasprune.costs.channels import ChannelCosts, RemovalMeter, channel_costs
from kerasprune.costs.counting import FlopCount, ParamCount, count_flops, count_params
from kerasprune.costs.latency import LatencyMeter

__all__ = [
    "count_params",
    "count_flops",
    "ParamCount",
    "FlopCount",
    "ChannelCosts",
    "channel_costs",
    "RemovalMeter",
    "LatencyMeter",
]
