"""Hard limits on what a subnet search may pick: `max_params`, `max_macs`, `max_latency_ms`, and
`limits: {cost model: bound}` for any registered cost model (a plugin's too).

A candidate over any limit is rejected before it is scored. A limit no architecture of the space
can meet is a usage error, raised before the supernet is pretrained and naming the space's minimum.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional, Sequence

from torch import nn

from archnas.config.schema import CostConf
from archnas.errors import ConfigError
from archnas.latency.constrained import best_row_within, first_row_allowed
from archnas.latency.models import SpaceCosts, check_timing
from archnas.latency.registry import check_cost_model, cost_model, exact_cost_models, latency_models
from archnas.latency.table import row_to_arch
from archnas.space.store import ChoiceSpec


def limit_settings(conf: CostConf) -> list[tuple[str, str, Optional[float]]]:
    """(key under the cost section, cost model name, bound) of every limit the section can hold,
    given or not; names are not checked here (`Limits.from_conf` does)."""
    return [("max_params", "params", conf.max_params), ("max_macs", "macs", conf.max_macs),
            ("max_latency_ms", conf.latency, conf.max_latency_ms),
            *[(f"limits.{name}", name, bound) for name, bound in conf.limits.items()]]


def given_limits(conf: CostConf) -> list[str]:
    """The keys under the cost section of the limits set (not null): what an algorithm that picks
    no subnets refuses, and what makes the preflight judge limits against the space."""
    return [key for key, _, bound in limit_settings(conf) if bound is not None]


@dataclass(frozen=True)
class Limits:
    """Cost model name -> the largest cost allowed, and the config key each came from."""

    bounds: dict[str, float]
    keys: dict[str, str]
    prefix: str = "nas.search.cost"

    @classmethod
    def from_conf(cls, conf: CostConf, prefix: str = "nas.search.cost") -> "Limits":
        latency = check_cost_model(conf.latency, f"{prefix}.latency")
        if latency not in latency_models():
            raise ConfigError(f"{prefix}.latency: {latency!r} is not a latency model; expected one of "
                              f"{', '.join(latency_models())}")
        check_cost_model(conf.pareto, f"{prefix}.pareto")
        bounds: dict[str, float] = {}
        keys: dict[str, str] = {}
        for key, model, value in limit_settings(conf):
            if value is None:
                continue
            check_cost_model(model, f"{prefix}.{key}")
            if not value > 0:
                raise ConfigError(f"{prefix}.{key}: {value!r}; a limit must be positive (null: no limit)")
            if model in bounds:
                raise ConfigError(f"{prefix}.{key}: {model} is limited twice (also by {keys[model]}); give one limit")
            bounds[model], keys[model] = float(value), f"{prefix}.{key}"
        return cls(bounds, keys, prefix)

    def __bool__(self) -> bool:
        return bool(self.bounds)

    def setting(self, model: str) -> str:
        """The key of a limit under the cost section: `max_macs`, `limits.convs`."""
        return self.keys[model][len(self.prefix) + 1:]

    def reported(self, pareto: str) -> list[str]:
        """The cost models a search reports (latency_stats.json, pareto.csv): every exact count,
        then the measured models a limit or the Pareto front names (only those are timed)."""
        names = list(exact_cost_models())
        for name in [*self.bounds, pareto]:
            if name not in names:
                names.append(name)
        return names

    def check_reachable(self, costs: SpaceCosts) -> None:
        """ConfigError when a limit is below the cheapest architecture of the space."""
        for model, bound in self.bounds.items():
            stats = costs.statistics(model)
            if stats["min"] > bound:
                exact = "" if costs.model(model).uses_table else f" ({stats['over']})"
                raise ConfigError(
                    f"{self.keys[model]}: {bound:g} is below the cheapest architecture of the space, "
                    f"{stats['min']:,} {cost_model(model).unit}{exact}; raise it to at least that")

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
        return {self.setting(m): b for m, b in self.bounds.items()}

    def best_within(self, costs: SpaceCosts, scores: Mapping[str, Sequence[float]],
                    max_tries: int = 100_000) -> dict[str, Any]:
        """The architecture with the highest summed score (per label, one score per option in the
        cost table's order: log-probabilities give the most probable architecture) among those
        within every limit, found exactly (`archnas.latency.constrained`). ConfigError when none
        is, naming the limit; a counted cost over coupled choices tries the `max_tries` best."""
        labels = list(costs.specs)
        missing = [label for label in labels if label not in scores]
        if missing:
            raise ValueError(f"best_within: no scores for {', '.join(missing)}")
        rows = [list(map(float, scores[label])) for label in labels]
        models = {name: costs.model(name) for name in self.bounds}
        if all(m.uses_table for m in models.values()):
            row = best_row_within(rows, [m.table for m in models.values()], list(self.bounds.values()))
            if row is None:
                self.check_reachable(costs)  # names the limit below the space's minimum
                raise ConfigError(f"{', '.join(self.keys.values())}: no architecture of the space meets these "
                                  "limits together; raise one of them")
            return row_to_arch(costs.specs, row)
        row, tried = first_row_allowed(rows, lambda r: self.allows(costs, row_to_arch(costs.specs, r)), max_tries)
        if row is None:
            self.check_reachable(costs)
            raise ConfigError(f"{', '.join(self.keys.values())}: none of the {tried:,} most probable architectures "
                              "meets the limits; raise them or let the search sharpen the architecture distribution")
        return row_to_arch(costs.specs, row)


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
    Counts are exact (a few networks); a measured limit (latency) is judged on the same measured
    table the search builds, so it costs the timing of that table once more."""
    limits = check_cost_conf(conf)
    if limits:
        limits.check_reachable(SpaceCosts.from_conf(conf, specs, network_of, input_shape, seed=seed))
