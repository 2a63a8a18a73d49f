"""Cost models of a search space: what an architecture costs in parameters, multiply-adds,
milliseconds or any registered unit (`archnas.latency.registry`), fast enough to score every
candidate a search draws, and in expectation over choice probabilities for a soft cost term.

    costs = SpaceCosts(specs, network_of, input_shape, protocol, seed=0)
    macs = costs.model("macs")          # built once: 1 + sum(options - 1) networks counted, then checked
    macs.cost(arch)                     # a table lookup (microseconds) where the table is exact
    macs.expected(probs)                # differentiable: E[macs] under independent per-label probabilities
    costs.statistics("macs")            # min, max, mean, median over the space (latency_stats.json)

- Exact models (counts: `params`, `macs`, a plugin's): counted on the network of an
  architecture, every exact model from one build of it. A per-choice table is built and checked
  against the count on held-out random architectures; when every one agrees exactly (the
  choices' costs are additive: NAS-Bench-201, the MobileNet builder) scoring uses the table, else
  (coupled choices) every candidate is counted on its own network, cached, and the table's
  measured error is reported.
- Measured models (`cpu_ms`, `ort_ms`, a plugin's): predicted from a per-choice table of measured
  values (least squares over random networks: the constant, and each choice's change from the
  base), with the prediction error of whole networks (MAPE) measured on held-out architectures.
  Latency does not add up exactly (caches, operator fusion), so these are always predictions.
"""

from __future__ import annotations

import dataclasses
import json
import random
import statistics
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np
import torch
from torch import nn

from archnas.config.schema import CostConf
from archnas.errors import ConfigError
from archnas.latency.measure import TimingProtocol
from archnas.latency.registry import CostModelEntry, cost_model, exact_cost_models
from archnas.latency.table import CostTable, arch_to_row, option_count, enumerate_rows, random_rows, row_to_arch, space_size
from archnas.space.store import ChoiceSpec
from archnas.utils.seeding import derive_seed


def check_timing(conf: CostConf, prefix: str = "nas.search.cost") -> None:
    """The counts of a cost section: held-out architectures and the timing protocol."""
    t = conf.timing
    for key, value, low in (("held_out", conf.held_out, 1), ("timing.threads", t.threads, 1),
                            ("timing.warmup", t.warmup, 0), ("timing.repeats", t.repeats, 1),
                            ("timing.batch_size", t.batch_size, 1)):
        if value < low:
            raise ConfigError(f"{prefix}.{key}: {value} is below {low}; it must be an integer of at least {low}")


class CostModel:
    """One cost of the architectures of a space."""

    def __init__(self, entry: CostModelEntry, specs: Mapping[str, ChoiceSpec], table: CostTable,
                 exact_count: Optional[Callable[[dict[str, Any]], float]] = None):
        """`exact_count`: the count of one architecture, used instead of the table when the table
        is not exact (coupled choices); None: the table is used (exact, or a prediction)."""
        self.entry, self.specs, self.table, self._count = entry, specs, table, exact_count
        self._cache: dict[str, float] = {}
        self._rows: dict[tuple[torch.dtype, torch.device], list[torch.Tensor]] = {}  # the table for `expected`

    @property
    def name(self) -> str:
        return self.entry.name

    @property
    def uses_table(self) -> bool:
        return self._count is None

    @property
    def exact(self) -> bool:
        check = self.table.check_result
        return self.entry.exact and (not self.uses_table or (check is not None and check.exact))

    @property
    def method(self) -> str:
        check = self.table.check_result
        held_out = 0 if check is None else check.archs
        if self.entry.exact:
            if self.uses_table:
                return f"per-choice table, exact (equal to the count on {held_out} held-out architectures)"
            return ("counted on each architecture's network: the choices are coupled, so the per-choice table is "
                    f"approximate (off by {check.mape_percent:.3g}% on {held_out} held-out architectures)")
        values = "times" if self.entry.unit == "ms" else "values"
        return (f"predicted: a constant plus per-choice {values}, fitted (least squares) to measured networks; error of "
                f"whole networks "
                f"{check.mape_percent:.3g}% (MAPE) on {held_out} held-out architectures")

    def cost(self, arch: Mapping[str, Any]) -> float:
        if self.uses_table:
            value = self.table.predict(self.specs, arch)
            return int(round(value)) if self.entry.exact else value
        key = json.dumps(arch, sort_keys=True, default=str)
        if key not in self._cache:
            self._cache[key] = float(self._count(dict(arch)))
        return self._cache[key]

    def costs(self, rows: np.ndarray) -> np.ndarray:
        """The costs of many architectures given as option numbers ([n, labels])."""
        if self.uses_table:
            return self.table.predict_indices(rows)
        return np.array([self.cost(row_to_arch(self.specs, row)) for row in rows], dtype=np.float64)

    def expected(self, probs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The expected cost when each label picks its options independently with `probs[label]`
        (a tensor of one probability per option, in the table's option order: a LayerChoice's
        candidates in order), as a differentiable scalar: the table's constant plus, per label,
        `probs[label] @ table_row`. What a soft cost term (ProxylessNAS, ENOT) adds to the loss;
        its gradient with respect to `probs[label]` is that label's table row.

        Only a table that is the model's cost has an expectation this cheap: the exact table of a
        count, or the fitted table of a measured model (which is its prediction). A count over
        coupled choices is refused (ConfigError)."""
        if not self.uses_table:
            check = self.table.check_result
            raise ConfigError(
                f"cost model {self.name!r}: this space's cost is not additive over its choices (the per-choice "
                f"table is off by {check.mape_percent:.3g}% on {check.archs} held-out architectures), so it has no "
                "expected cost under independent choice probabilities; use a space whose choices cost independently "
                "or a measured (predicted) cost model")
        labels = self.table.labels
        unknown = [label for label in probs if label not in labels]
        missing = [label for label in labels if label not in probs]
        if unknown or missing:
            raise ValueError(f"expected {self.name}: probabilities for {', '.join(missing) or 'every label'} are "
                             f"missing{'; not labels of the space: ' + ', '.join(unknown) if unknown else ''}")
        total: Optional[torch.Tensor] = None
        for label, row in zip(labels, self._table_rows(probs[labels[0]]) if labels else []):
            p = probs[label]
            if tuple(p.shape) != tuple(row.shape):
                raise ValueError(f"expected {self.name}: probabilities of {label!r} have shape {tuple(p.shape)}; "
                                 f"expected ({len(row)},), one per option")
            term = p @ row.to(p.dtype)
            total = term if total is None else total + term
        if total is None:
            raise ValueError(f"expected {self.name}: the space has no choices")
        return total + self.table.base

    def _table_rows(self, like: torch.Tensor) -> list[torch.Tensor]:
        """The table's rows as tensors of `like`'s dtype and device, made once (a soft cost term
        asks for the expected cost every step)."""
        key = (like.dtype, like.device)
        if key not in self._rows:
            self._rows[key] = [torch.tensor(d, dtype=like.dtype, device=like.device) for d in self.table.deltas]
        return self._rows[key]

    def describe(self) -> dict[str, Any]:
        check = self.table.check_result
        return {"unit": self.entry.unit, "method": self.method, "exact": self.exact,
                "check": None if check is None else check.to_dict()}


class SpaceCosts:
    """The cost models of one space at one input shape, each built the first time it is asked for."""

    @classmethod
    def from_conf(cls, conf: CostConf, specs: Mapping[str, ChoiceSpec],
                  network_of: Callable[[dict[str, Any]], nn.Module], input_shape: list[int], seed: int) -> "SpaceCosts":
        check_timing(conf)
        t = conf.timing
        return cls(specs, network_of, input_shape, TimingProtocol(t.threads, t.warmup, t.repeats, t.batch_size),
                   seed=seed, held_out=conf.held_out)

    def __init__(self, specs: Mapping[str, ChoiceSpec], network_of: Callable[[dict[str, Any]], nn.Module],
                 input_shape: list[int], protocol: TimingProtocol = TimingProtocol(), *, seed: int = 0,
                 held_out: int = 20):
        self.specs, self.network_of, self.input_shape = specs, network_of, list(input_shape)
        self.protocol, self.seed, self.held_out = protocol, seed, held_out
        self._models: dict[str, CostModel] = {}
        self._counts: dict[str, dict[str, float]] = {}

    def _count(self, arch: dict[str, Any]) -> dict[str, float]:
        """Every exact model of one architecture, from one build of its network (cached)."""
        key = json.dumps(arch, sort_keys=True, default=str)
        if key not in self._counts:
            net = self.network_of(arch)
            self._counts[key] = {name: cost_model(name).measure(net, self.input_shape, self.protocol)
                                 for name in exact_cost_models()}
        return self._counts[key]

    def _measure(self, entry: CostModelEntry) -> Callable[[dict[str, Any]], float]:
        if entry.exact:
            return lambda arch: self._count(arch)[entry.name]
        return lambda arch: entry.measure(self.network_of(arch), self.input_shape, self.protocol)

    def model(self, name: str) -> CostModel:
        entry = cost_model(name)
        if name not in self._models:
            measure = self._measure(entry)
            if entry.exact:
                table = CostTable.build(name, self.specs, measure)
            else:
                free = 1 + sum(option_count(s) - 1 for s in self.specs.values())
                table = CostTable.fit(name, self.specs, measure, n=2 * free + 10, seed=derive_seed(self.seed, "cost_table"))
            check = table.check(self.specs, measure, self.held_out, seed=derive_seed(self.seed, "cost_check"))
            counted = entry.exact and not check.exact
            self._models[name] = CostModel(entry, self.specs, table, measure if counted else None)
        return self._models[name]

    def statistics(self, name: str, enumerate_up_to: int = 200_000, samples: int = 10_000) -> dict[str, Any]:
        """Min, max, mean and median of a cost over the space, with the architectures at min and max.

        A table model is evaluated on every architecture when there are at most `enumerate_up_to`
        of them, else on `samples` random ones; its min and max come from the table itself
        (each label at its cheapest / dearest option), exact under the table. A counted model
        enumerates at most 256 architectures, else samples as many; the result says which."""
        model = self.model(name)
        limit = enumerate_up_to if model.uses_table else 256
        rows = enumerate_rows(self.specs, limit)
        total = space_size(self.specs)
        if rows is None:
            n = samples if model.uses_table else 256
            rows = np.array(random_rows(self.specs, n, random.Random(derive_seed(self.seed, "cost_statistics"))), dtype=np.int64)
            over = f"sampled ({n} random architectures of {total:,}; mean and median estimated)"
        else:
            over = f"enumerated (all {total:,} architectures)"
        costs = model.costs(rows)
        if model.uses_table:
            low, high = model.table.extreme_rows()
            lo_cost, hi_cost = model.table.predict_row(low), model.table.predict_row(high)
            extremes = "exact" if model.exact else "the table's (each label at its cheapest / dearest option)"
        else:
            low, high = rows[int(np.argmin(costs))].tolist(), rows[int(np.argmax(costs))].tolist()
            lo_cost, hi_cost = float(costs.min()), float(costs.max())
            extremes = over
        exact = model.entry.exact
        return {
            **model.describe(),
            "archs": total,
            "over": over,
            "min": _number(exact, lo_cost),
            "max": _number(exact, hi_cost),
            "mean": _number(exact, float(costs.mean()), integer=False),
            "median": _number(exact, float(statistics.median(costs.tolist())), integer=False),
            "min_max": extremes,
            "arch_min": row_to_arch(self.specs, low),
            "arch_max": row_to_arch(self.specs, high),
        }

    def state_dict(self) -> dict[str, Any]:
        """The tables built so far (what a resumed search must reuse: times are not measured twice alike)."""
        return {name: {"table": m.table.to_dict(), "counted": not m.uses_table} for name, m in self._models.items()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        for name, entry in state.items():
            registered = cost_model(name)  # a plugin's table needs the plugin (--import) to go on
            table = CostTable.from_dict(entry["table"])
            self._models[name] = CostModel(registered, self.specs, table,
                                           self._measure(registered) if entry["counted"] else None)

    def report(self, names: Sequence[str]) -> dict[str, Any]:
        """`latency_stats.json` (and `archnas stats --space`): the statistics of each cost model."""
        timed = any(not cost_model(n).exact for n in names)
        return {"archs": space_size(self.specs), "input_shape": self.input_shape,
                "timing": dataclasses.asdict(self.protocol) if timed else None,
                **{name: self.statistics(name) for name in names}}

    def row(self, arch: Mapping[str, Any]) -> list[int]:
        return arch_to_row(self.specs, arch)


def _number(exact: bool, value: float, integer: bool = True) -> float | int:
    if exact and integer:
        return int(round(value))
    return round(value, 6)
