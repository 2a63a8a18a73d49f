"""The cost-model registry: what each cost of an architecture measures on its network, in which
unit, and whether it is an exact count or a measured prediction.

    @register_cost_model("convs", unit="convolutions", exact=True)
    def convs(net: nn.Module, input_shape: list[int], protocol: TimingProtocol) -> float: ...

Filled at import time, timm-style: `archnas.latency.measure` registers the built-in four (params,
macs, cpu_ms, ort_ms), a plugin module its own. Everything that names cost models reads this
table: the config checks (`nas.search.cost.pareto`, `.latency`, `.limits`), `Limits`, `SpaceCosts`,
`archnas stats --space`, `latency_stats.json` and the Pareto files.

- An *exact* model is a count: deterministic, cheap (every exact model is counted on each
  network a cost table builds, from one build of that network), and its per-choice table is
  held to equal the count exactly; where it does not (coupled choices) every architecture is
  counted on its own network. Every search and `archnas stats --space` report all exact models.
- Any other model is a measured prediction (a time, an energy): its table is fitted by least
  squares to measured networks and reported with its error; it is measured only when a limit,
  the Pareto front or `--latency` names it. Those in milliseconds are the latency models
  (`nas.search.cost.latency`, `max_latency_ms`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from torch import nn

from archnas.errors import ConfigError

if TYPE_CHECKING:
    from archnas.latency.measure import TimingProtocol

Measure = Callable[[nn.Module, list[int], "TimingProtocol"], float]


@dataclass(frozen=True)
class CostModelEntry:
    """One registered cost model: `measure(net, input_shape, protocol)` is its value on the network
    of one architecture at `input_shape` ([C, H, W]); `protocol` says how to time (counts ignore it)."""

    name: str
    measure: Measure
    unit: str  # what the numbers count: "multiply-adds", "ms", ... (logs, latency_stats.json, plots)
    exact: bool  # an exact count (the table is checked exactly) or a measured prediction


# name -> entry, in registration order (the order error messages and reports list them in)
_COST_MODELS: dict[str, CostModelEntry] = {}


def register_cost_model(name: str, *, unit: str, exact: bool) -> Callable[[Measure], Measure]:
    """Decorator: register `measure(net, input_shape, protocol) -> float` as the cost model `name`."""

    def register(measure: Measure) -> Measure:
        if name in _COST_MODELS:
            raise ValueError(f"cost model {name!r} is registered twice")
        _COST_MODELS[name] = CostModelEntry(name, measure, unit, exact)
        return measure

    return register


def cost_model_names() -> tuple[str, ...]:
    return tuple(_COST_MODELS)


def exact_cost_models() -> tuple[str, ...]:
    """The counts: reported by every search and `archnas stats --space`, counted together."""
    return tuple(n for n, e in _COST_MODELS.items() if e.exact)


def latency_models() -> tuple[str, ...]:
    """The measured predictions in milliseconds: what `nas.search.cost.latency` may name."""
    return tuple(n for n, e in _COST_MODELS.items() if not e.exact and e.unit == "ms")


def check_cost_model(name: str, key: str) -> str:
    """`name` when it is registered, else a ConfigError naming `key` and the registered models."""
    if name not in _COST_MODELS:
        raise ConfigError(f"{key}: unknown cost model {name!r}; expected one of {', '.join(_COST_MODELS)} (or a "
                          "plugin's, registered with archnas.latency.register_cost_model and loaded with --import)")
    return name


def cost_model(name: str) -> CostModelEntry:
    return _COST_MODELS[check_cost_model(name, "cost model")]
