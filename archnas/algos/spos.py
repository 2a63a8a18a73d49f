"""SPOS, single-path one-shot (Guo et al., "Single Path One-Shot Neural Architecture Search with
Uniform Sampling", ECCV 2020), over any search space over a module (`nas.search.space`).

Phases, each with the one Trainer, checkpoints and resume:
- `pretrain` (`archnas.nas.pretrain`): the supernet trained one uniformly sampled path per step
  (`nas.search.trainer`: epochs, optimizer, schedule; no architecture parameters are trained);
- `search` (`archnas.nas.subnet_search`): a sampler (`archnas.nas.samplers`: evolution, random,
  grid, Optuna's TPE or NSGA-II) over the subnets on their inherited weights, each scored after
  BatchNorm recalibration, under the limits of `nas.search.cost`; latency_stats.json,
  pareto.csv/png, arch.yaml;
- `ranking` (`archnas.nas.ranking`, when `nas.search.ranking_check.n_archs` > 0): how well the
  inherited accuracies rank architectures trained stand-alone;
- `eval`: the best architecture retrained from scratch (`nas.eval.mode: retrain`) or fine-tuned
  from the pretrained supernet's weights (`tune`).

`nas.search.spos` keys (a config may shrink the NNI SPOS example's defaults to fit its time):

    strategy: evolution          # the sampler: evolution | random | grid | optuna_tpe | optuna_nsga2
    evolution: {population: 50, parents: 10, mutations: 25, crossovers: 25, mutation_prob: 0.1, generations: 20}
    random: {n_archs: 1000, per_generation: 50}   # distinct candidates, and how many per checkpoint
    grid: {per_generation: 50, max_archs: 10000}  # every architecture in order; a larger space is refused
    optuna_tpe: {n_archs: 100, per_generation: 10, n_startup_trials: 10}
    optuna_nsga2: {population: 20, generations: 10, crossover_prob: 0.9, mutation_prob: null}  # accuracy against nas.search.cost.pareto
    bn_recalibration: {batches: 10}              # train batches per candidate's BN statistics (0: off)
    score_batches: 0             # val batches each candidate is scored on (0: the whole search val split)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from archnas.errors import ConfigError
from archnas.nas.evaluater import Evaluater
from archnas.nas.pretrain import Pretrain
from archnas.nas.ranking import RankingCheck
from archnas.nas.registry import register_algorithm
from archnas.nas.samplers import (
    EvolutionSettings,
    GridSettings,
    Nsga2Settings,
    RandomSettings,
    TpeSettings,
    sampler_class,
)
from archnas.nas.strategy import Strategy
from archnas.nas.spaces import Space
from archnas.nas.subnet_search import SubnetSearchPhase


@dataclass
class BnRecalibrationConf:
    batches: int = 10  # 0: score with the supernet's running statistics as they are


@dataclass
class SposConf:
    strategy: str = "evolution"  # the sampler (archnas.nas.samplers); its settings are the key of its name
    # SPOS's evolution (NNI's SPOS example's defaults); parents at most population
    evolution: EvolutionSettings = field(default_factory=EvolutionSettings)
    random: RandomSettings = field(default_factory=RandomSettings)  # distinct uniform draws
    grid: GridSettings = field(default_factory=GridSettings)  # every architecture of a small space, in order
    optuna_tpe: TpeSettings = field(default_factory=TpeSettings)  # Optuna's TPE on the accuracy
    optuna_nsga2: Nsga2Settings = field(default_factory=Nsga2Settings)  # Optuna's NSGA-II: accuracy vs pareto cost
    bn_recalibration: BnRecalibrationConf = field(default_factory=BnRecalibrationConf)
    score_batches: int = 0


@register_algorithm
class Spos(Strategy):
    name = "spos"
    config_class = SposConf
    find_unused_parameters = True
    phases = (Pretrain, SubnetSearchPhase, Evaluater)  # and the ranking check when it is on (__init__)

    def __init__(self, conf: Any):
        super().__init__(conf)
        ranking = (RankingCheck,) if conf.nas.search.ranking_check.n_archs else ()
        self.phases = (Pretrain, SubnetSearchPhase, *ranking, Evaluater)

    def arch_optimizer(self) -> str:
        return "uniform_paths"

    def supports(self, space: Space) -> Optional[str]:
        if space.kind == "cells":
            return ("its pretraining runs one sampled path of a space over a module per step; name one in "
                    "nas.search.space (e.g. {name: nb201}) or a factory ({factory: 'package.module:function'})")
        return None

    def check(self) -> None:
        super().check()
        s = self.section
        sampler_class(s.strategy).check_settings(getattr(s, s.strategy, None), f"nas.search.spos.{s.strategy}")
        if s.bn_recalibration.batches < 0 or s.score_batches < 0:
            raise ConfigError(f"nas.search.spos: bn_recalibration.batches ({s.bn_recalibration.batches}) and "
                              f"score_batches ({s.score_batches}) must be at least 0")
