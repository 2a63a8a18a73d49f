"""Hard limits on what a subnet search may pick: `max_params`, `max_macs`, `max_latency_ms`.

A candidate over any limit is rejected before it is scored. A limit no architecture of the space
can meet is a usage error, raised before the supernet is pretrained and naming the space's minimum.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

from torch import nn

from archnas.config.schema import CostConf
from archnas.errors import ConfigError
from archnas.latency.models import LATENCY_MODELS, UNITS, SpaceCosts, check_cost_model, check_timing
from archnas.space.store import ChoiceSpec


@dataclass(frozen=True)
class Limits:
    """Cost model name -> the largest cost allowed, and the config key each came from."""

    bounds: dict[str, float]
    keys: dict[str, str]

    @classmethod
    def from_conf(cls, conf: CostConf, prefix: str = "nas.search.cost") -> "Limits":
        latency = check_cost_model(conf.latency, f"{prefix}.latency")
        if latency not in LATENCY_MODELS:
            raise ConfigError(f"{prefix}.latency: {latency!r} is not a latency model; expected one of "
                              f"{', '.join(LATENCY_MODELS)}")
        check_cost_model(conf.pareto, f"{prefix}.pareto")
        given = {"params": ("max_params", conf.max_params), "macs": ("max_macs", conf.max_macs),
                 latency: ("max_latency_ms", conf.max_latency_ms)}
        bounds, keys = {}, {}
        for model, (key, value) in given.items():
            if value is None:
                continue
            if not value > 0:
                raise ConfigError(f"{prefix}.{key}: {value!r}; a limit must be positive (null: no limit)")
            bounds[model], keys[model] = float(value), f"{prefix}.{key}"
        return cls(bounds, keys)

    def __bool__(self) -> bool:
        return bool(self.bounds)

    def check_reachable(self, costs: SpaceCosts) -> None:
        """ConfigError when a limit is below the cheapest architecture of the space."""
        for model, bound in self.bounds.items():
            stats = costs.statistics(model)
            if stats["min"] > bound:
                exact = "" if costs.model(model).uses_table else f" ({stats['over']})"
                raise ConfigError(
                    f"{self.keys[model]}: {bound:g} is below the cheapest architecture of the space, "
                    f"{stats['min']:,} {UNITS[model]}{exact}; raise it to at least that")

    def violations(self, costs: SpaceCosts, arch: Mapping[str, Any]) -> dict[str, float]:
        """The costs of `arch` over their limits (empty: it may be picked)."""
        over = {}
        for model, bound in self.bounds.items():
            value = costs.model(model).cost(arch)
            if value > bound:
                over[model] = value
        return over

    def allows(self, costs: SpaceCosts, arch: Mapping[str, Any]) -> bool:
        return not self.violations(costs, arch)

    def describe(self) -> dict[str, float]:
        return {self.keys[m].rsplit(".", 1)[1]: b for m, b in self.bounds.items()}


def check_cost_conf(conf: CostConf, prefix: str = "nas.search.cost") -> Limits:
    """Everything in a cost section that is judged without building the space: the model names,
    the limits' values, the held-out count and the timing protocol."""
    limits = Limits.from_conf(conf, prefix)
    check_timing(conf, prefix)
    return limits


def check_limits_reachable(conf: CostConf, specs: Mapping[str, ChoiceSpec],
                           network_of: Callable[[dict[str, Any]], nn.Module], input_shape: list[int],
                           seed: int) -> None:
    """Before a supernet is pretrained: a limit below the space's cheapest architecture is refused.
    Parameters and multiply-adds are counted (exact, a few networks); a latency limit is judged on
    the same measured table the search builds, so it costs the timing of that table once more."""
    limits = check_cost_conf(conf)
    if limits:
        limits.check_reachable(SpaceCosts.from_conf(conf, specs, network_of, input_shape, seed=seed))
