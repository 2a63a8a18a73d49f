"""SPOS, single-path one-shot (Guo et al., "Single Path One-Shot Neural Architecture Search with
Uniform Sampling", ECCV 2020), over any search space over a module (`nas.search.space`).

Phases, each with the one Trainer, checkpoints and resume:
- `pretrain` (`archnas.nas.pretrain`): the supernet trained one uniformly sampled path per step
  (`nas.search.trainer`: epochs, optimizer, schedule; no architecture parameters are trained);
- `search` (`archnas.nas.subnet_search`): evolution (or random sampling) over the subnets on
  their inherited weights, each scored after BatchNorm recalibration, under the limits of
  `nas.search.cost`; latency_stats.json, pareto.csv/png, arch.yaml;
- `ranking` (`archnas.nas.ranking`, when `nas.search.ranking_check.n_archs` > 0): how well the
  inherited accuracies rank architectures trained stand-alone;
- `eval`: the best architecture retrained from scratch (`nas.eval.mode: retrain`) or fine-tuned
  from the pretrained supernet's weights (`tune`).

`nas.search.spos` keys (a config may shrink the NNI SPOS example's defaults to fit its time):

    strategy: evolution          # evolution | random
    evolution: {population: 50, parents: 10, mutations: 25, crossovers: 25, mutation_prob: 0.1, generations: 20}
    random: {n_archs: 1000, per_generation: 50}   # strategy random: candidates, and how many per checkpoint
    bn_recalibration: {batches: 10}              # train batches per candidate's BN statistics (0: off)
    score_batches: 0             # val batches each candidate is scored on (0: the whole search val split)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Optional

from archnas.errors import ConfigError
from archnas.nas.evaluater import Evaluater
from archnas.nas.pretrain import Pretrain
from archnas.nas.ranking import RankingCheck
from archnas.nas.registry import register_algorithm
from archnas.nas.strategy import Strategy
from archnas.nas.spaces import Space
from archnas.nas.subnet_search import SubnetSearchPhase


@dataclass
class EvolutionConf:
    population: int = 50  # generation 0: random candidates
    parents: int = 10  # the best so far, which the later generations are bred from
    mutations: int = 25  # per generation
    crossovers: int = 25  # per generation
    mutation_prob: float = 0.1  # per label of a mutant
    generations: int = 20


@dataclass
class RandomSamplingConf:
    n_archs: int = 1000
    per_generation: int = 50  # candidates between two checkpoints


@dataclass
class BnRecalibrationConf:
    batches: int = 10  # 0: score with the supernet's running statistics as they are


@dataclass
class SposConf:
    strategy: str = "evolution"
    evolution: EvolutionConf = field(default_factory=EvolutionConf)
    random: RandomSamplingConf = field(default_factory=RandomSamplingConf)
    bn_recalibration: BnRecalibrationConf = field(default_factory=BnRecalibrationConf)
    score_batches: int = 0


@register_algorithm
class Spos(Strategy):
    name = "spos"
    config_class = SposConf
    find_unused_parameters = True
    trains_alphas = False
    scores_subnets = True
    pretrain_keys: ClassVar[tuple[str, ...]] = ()  # none of nas.search.spos shapes the pretraining

    def __init__(self, conf: Any):
        super().__init__(conf)
        ranking = (RankingCheck,) if conf.nas.search.ranking_check.n_archs else ()
        self.phases = (Pretrain, SubnetSearchPhase, *ranking, Evaluater)

    def supports(self, space: Space) -> Optional[str]:
        if space.kind == "cells":
            return ("its pretraining runs one sampled path of a space over a module per step; name one in "
                    "nas.search.space (e.g. {name: nb201}) or a factory ({factory: 'package.module:function'})")
        return None

    def check(self) -> None:
        super().check()
        s = self.section
        if s.strategy not in ("evolution", "random"):
            raise ConfigError(f"nas.search.spos.strategy: {s.strategy!r} is not one of evolution, random")
        e = s.evolution
        if min(e.population, e.parents, e.generations) < 1 or min(e.mutations, e.crossovers) < 0 or \
                e.mutations + e.crossovers < 1 or not 0 <= e.mutation_prob <= 1:
            raise ConfigError(f"nas.search.spos.evolution: need population, parents and generations >= 1, mutations "
                              f"and crossovers >= 0 (not both 0) and 0 <= mutation_prob <= 1; got {e}")
        if e.parents > e.population:
            raise ConfigError(f"nas.search.spos.evolution.parents: {e.parents} is more than the population "
                              f"({e.population}); the parents are the best of one population, so at most that many")
        if s.random.n_archs < 1 or s.random.per_generation < 1:
            raise ConfigError(f"nas.search.spos.random: n_archs ({s.random.n_archs}) and per_generation "
                              f"({s.random.per_generation}) must be at least 1")
        if s.bn_recalibration.batches < 0 or s.score_batches < 0:
            raise ConfigError(f"nas.search.spos: bn_recalibration.batches ({s.bn_recalibration.batches}) and "
                              f"score_batches ({s.score_batches}) must be at least 0")
