"""The soft cost term of a gradient search: `weight * E[cost] / max cost`, added to the loss the
architecture parameters are trained on (ProxylessNAS's and ENOT's latency loss, additive form).

The expectation is over the architecture distribution, each label independently
(`CostModel.expected`), so the term is differentiable in the choice probabilities and its
gradient for a label is that label's row of the cost table. Dividing by the space's largest cost
makes `weight` unit-free: 0.1 costs at most 0.1 nats of loss whether the model counts MACs or
milliseconds, so one weight carries over between cost models and spaces.

    penalty = CostPenalty.from_conf(conf.nas.search.cost, costs)   # None when the weight is 0
    loss = loss + penalty(probs)                                    # probs: {label: tensor over options}
"""

from __future__ import annotations

from typing import Mapping, Optional

import torch

from archnas.config.schema import CostConf
from archnas.errors import ConfigError
from archnas.latency.models import CostModel, SpaceCosts
from archnas.latency.registry import check_cost_model


def check_penalty(conf: CostConf, prefix: str = "nas.search.cost") -> None:
    check_cost_model(conf.penalty.model, f"{prefix}.penalty.model")
    if not conf.penalty.weight >= 0:
        raise ConfigError(f"{prefix}.penalty.weight: {conf.penalty.weight!r}; expected a number at least 0 (0: off)")


class CostPenalty:
    def __init__(self, model: CostModel, weight: float, scale: float):
        self.model, self.weight, self.scale = model, float(weight), float(scale)

    @classmethod
    def from_conf(cls, conf: CostConf, costs: SpaceCosts, prefix: str = "nas.search.cost") -> Optional["CostPenalty"]:
        check_penalty(conf, prefix)
        if conf.penalty.weight == 0:
            return None
        model = costs.model(conf.penalty.model)
        if not model.uses_table:
            raise ConfigError(f"{prefix}.penalty.model: {conf.penalty.model} is counted on each network of this space "
                              "(its choices' costs are coupled), so it has no expectation under the architecture "
                              "distribution; name a measured model (cpu_ms, ort_ms) or search a space whose choices "
                              "cost independently")
        largest = float(costs.statistics(conf.penalty.model)["max"])
        if not largest > 0:
            raise ConfigError(f"{prefix}.penalty.model: {conf.penalty.model} is {largest} for every architecture of "
                              "the space; a penalty on it would change nothing")
        return cls(model, conf.penalty.weight, largest)

    def expected(self, probs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The expected cost, in the model's unit (what the logs report)."""
        return self.model.expected(probs)

    def __call__(self, probs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return self.weight * self.model.expected(probs) / self.scale
