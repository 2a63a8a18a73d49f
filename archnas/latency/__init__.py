"""What an architecture of a search space costs, and the limits a search keeps to.

`SpaceCosts` builds the cost models of one space (`params`, `macs`, `cpu_ms`, `ort_ms`: see
`archnas.latency.models`) from per-choice tables (`archnas.latency.table`), times networks with
one protocol (`archnas.latency.measure`) and summarizes a cost over the space (the search's
`latency_stats.json`, `archnas stats --space --latency`); `Limits` are the hard limits
(`max_params`, `max_macs`, `max_latency_ms`).
"""

from archnas.latency.limits import Limits, check_cost_conf, check_limits_reachable
from archnas.latency.measure import TimingProtocol
from archnas.latency.models import COST_MODELS, LATENCY_MODELS, UNITS, CostModel, SpaceCosts, check_cost_model
from archnas.latency.table import CostTable

__all__ = ["COST_MODELS", "LATENCY_MODELS", "UNITS", "CostModel", "CostTable", "Limits", "SpaceCosts", "TimingProtocol",
           "check_cost_conf", "check_limits_reachable",
           "check_cost_model"]
