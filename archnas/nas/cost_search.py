"""Hard limits and the soft cost term of a gradient search (darts, gdas) over a space over a module.

A gradient search learns one categorical distribution per label (the softmax of its
architecture parameters). Two things make it respect a cost:

- the soft term `nas.search.cost.penalty: {model, weight}` (`archnas.latency.penalty`): each
  architecture step adds the gradient of `weight * E[cost] / max cost` under that distribution
  to the architecture parameters' gradient, which pushes probability towards cheaper options;
- the hard limits (`max_params`, `max_macs`, `max_latency_ms`, `limits`): the exported
  architecture is not the argmax hoped to fit but the most probable architecture within every
  limit, found exactly (`Limits.best_within` over the per-label log-softmax of the parameters).

The cost tables are built once per search (as spos's subnet search builds them, `space_costs`)
and are checkpoint state (`cost_tables`), so a resumed search keeps measured latency tables
instead of timing them again. Each epoch records the expected cost under the current
distribution (`expected_<model>`), and the log says it.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from archnas.config.schema import CostConf
from archnas.descs.dataset_info import DatasetInfo
from archnas.errors import ConfigError
from archnas.latency import Limits, SpaceCosts, cost_model, given_limits
from archnas.latency.penalty import CostPenalty
from archnas.latency.table import row_to_arch
from archnas.nas.spaces import Genome, Space
from archnas.space.choice import several
from archnas.space.store import ArchStore
from archnas.training.hooks import HookBase


def space_costs(conf: CostConf, space: Space, genome: Genome, info: DatasetInfo, seed: int) -> SpaceCosts:
    """The cost models of the space's genomes, each counted on the network of the architecture
    (`space.network`) of a genome's `{label: choice}` (spos's subnet search and gradient searches)."""
    return SpaceCosts.from_conf(conf, genome.specs, lambda choices: space.network(genome.arch_of(choices), info),
                                [info.channels, *info.image_size], seed=seed)


def allowed_genomes(genome: Genome, costs: SpaceCosts, limits: Limits) -> Callable[[tuple[int, ...]], bool]:
    """What a search may pick: a valid genome of the space within every cost limit (the subnet
    search's samplers and the random baseline draw from the same set)."""
    return lambda row: genome.allows(row) and limits.allows(costs, row_to_arch(genome.specs, row))


def cost_settings(conf: CostConf) -> list[str]:
    """The keys under `nas.search.cost` that make a gradient search cost-aware (limits, a penalty weight)."""
    return [*given_limits(conf), *(["penalty.weight"] if conf.penalty.weight else [])]


def label_probabilities(store: ArchStore, labels: Any) -> dict[str, Tensor]:
    """Per label, the probability of each option in the cost table's order: the softmax of its
    architecture parameters (one categorical choice per label; differentiable)."""
    return {label: F.softmax(store.alpha(label), dim=-1) for label in labels}


def label_scores(store: ArchStore, labels: Any) -> dict[str, list[float]]:
    """Per label, the log-probability of each option: what `Limits.best_within` maximizes the sum of."""
    with torch.no_grad():
        return {label: F.log_softmax(store.alpha(label).double(), dim=-1).tolist() for label in labels}


def check_categorical(store: ArchStore, keys: list[str]) -> None:
    """Limits and the penalty need one categorical distribution per label, over the label's options."""
    for label, spec in store.specs.items():
        if spec.rows or several(spec):
            raise ConfigError(f"nas.search.cost.{keys[0]}: label {label!r} picks several candidates at once (an input "
                              "choice of several, or a cell of edges), which has no one categorical distribution over "
                              "its options; a gradient search honours limits only over spaces of single choices (use "
                              "spos for this space)")


class CostGuide:
    """The cost tables, limits and penalty of one gradient search, over the supernet's store."""

    def __init__(self, conf: CostConf, costs: SpaceCosts, store: ArchStore, models: Sequence[str] = ()):
        """`models`: cost models the architecture optimizer reads the expectation of (proxyless's
        latency loss), tabled and reported like the penalized and limited ones."""
        self.conf, self.costs, self.store = conf, costs, store
        self.limits = Limits.from_conf(conf)
        self.labels = list(costs.specs)
        self.penalty: Optional[CostPenalty] = None
        penalized = [conf.penalty.model] if conf.penalty.weight else []
        self.reported = list(dict.fromkeys([*penalized, *models, *self.limits.bounds]))

    @classmethod
    def build(cls, conf: CostConf, space: Space, store: ArchStore, info: DatasetInfo,
              seed: int, models: Sequence[str] = ()) -> Optional["CostGuide"]:
        """None when the section sets no limit and no penalty and the strategy reads no cost
        (`Strategy.cost_models()`): a plain search, unchanged."""
        keys = cost_settings(conf)
        if not keys and not models:
            return None
        if keys:
            check_categorical(store, keys)
        genome = space.genome(info)
        return cls(conf, space_costs(conf, space, genome, info, seed), store, models)

    def prepare(self) -> None:
        """Build the tables it uses (or take the restored ones), judge the limits against the
        space's minimum and make the penalty: once, before the first step."""
        for name in self.reported:
            self.costs.model(name)
        self.limits.check_reachable(self.costs)
        self.penalty = CostPenalty.from_conf(self.conf, self.costs)

    def term(self) -> Optional[Tensor]:
        """The penalty under the current distribution (differentiable in the architecture parameters)."""
        if self.penalty is None:
            return None
        return self.penalty(label_probabilities(self.store, self.labels))

    def expected(self) -> dict[str, float]:
        """`expected_<model>`: each reported cost's expectation under the current distribution."""
        out = {}
        with torch.no_grad():
            probs = label_probabilities(self.store, self.labels)
            for name in self.reported:
                model = self.costs.model(name)
                if model.uses_table:
                    out[f"expected_{name}"] = float(model.expected(probs))
        return out

    def describe_expected(self, record: Mapping[str, Any]) -> str:
        return ", ".join(f"{name} {record[f'expected_{name}']:,.6g} {cost_model(name).unit}" for name in self.reported
                         if f"expected_{name}" in record)

    def pick(self, exported: dict[str, Any]) -> dict[str, Any]:
        """The final architecture: the most probable one within the limits, else the export as is."""
        if not self.limits:
            return exported
        return self.limits.best_within(self.costs, label_scores(self.store, self.labels))

    def hooks(self) -> list[HookBase]:
        return [CostProgress(self)]

    def costs_of(self, arch: Mapping[str, Any]) -> dict[str, float]:
        return {name: self.costs.model(name).cost(arch) for name in self.reported}

    def state_dict(self) -> dict[str, Any]:
        return self.costs.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.costs.load_state_dict(state)


class CostProgress(HookBase):
    """Prepares the guide once the trainer has resumed (restored tables are not measured again),
    and logs the expected cost after every epoch."""

    def __init__(self, guide: CostGuide):
        self.guide = guide

    def before_fit(self) -> None:
        self.guide.prepare()

    def after_epoch(self) -> None:
        record = self.trainer.history.last or {}
        line = self.guide.describe_expected(record)
        if line:
            self.trainer.log.info(f"expected cost under the architecture distribution: {line}")
