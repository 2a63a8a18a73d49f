"""What an architecture of a search space costs, and the limits a search keeps to.

Cost models are registered by name (`register_cost_model`, `archnas.latency.registry`): the
built-in `params`, `macs` (exact counts) and `cpu_ms`, `ort_ms` (measured predictions) in
`archnas.latency.measure`, a plugin's own at its import. `SpaceCosts` builds the cost models of one
space from per-choice tables (`archnas.latency.table`): the exact cost of an architecture, its
expected cost under choice probabilities (differentiable, where the cost is additive over the
choices), and a cost's summary over the space (the search's `latency_stats.json`, `archnas stats
--space --latency`); `Limits` are the hard limits (`max_params`, `max_macs`, `max_latency_ms`,
`limits: {model: bound}`).
"""

from archnas.latency.limits import Limits, check_cost_conf, check_limits_reachable, given_limits
from archnas.latency.measure import TimingProtocol
from archnas.latency.models import CostModel, SpaceCosts
from archnas.latency.registry import (
    CostModelEntry,
    check_cost_model,
    cost_model,
    cost_model_names,
    exact_cost_models,
    latency_models,
    register_cost_model,
)
from archnas.latency.table import CostTable

__all__ = ["CostModel", "CostModelEntry", "CostTable", "Limits", "SpaceCosts", "TimingProtocol", "check_cost_conf",
           "check_cost_model", "check_limits_reachable", "cost_model", "cost_model_names", "exact_cost_models",
           "given_limits", "latency_models", "register_cost_model"]
