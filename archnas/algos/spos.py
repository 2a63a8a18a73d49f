"""SPOS, single-path one-shot (Guo et al., "Single Path One-Shot Neural Architecture Search with
Uniform Sampling", ECCV 2020), over a search space over a module (`nas.search.space`) or the
DARTS cells (`nas.search.model_desc`).

Over DARTS cells a path is a final cell genome (`archnas.nas.spaces.cells`): per cell type, per
node, the kept inputs and one op (not `none`) per kept input. The supernet's edges run only the
op of the path (`gdas_mixed_op` under fixed one-hot weights); an edge the path drops runs `none`,
so the supernet computes the network of the path's final cells (the primitives must hold `none`).
The eval retrains the chosen cells at `nas.eval`'s macro; tune cuts nothing out of cells.

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

    strategy: evolution          # the sampler: evolution | random | grid | optuna_tpe | optuna_nsga2 | regularized_evolution
    evolution: {population: 50, parents: 10, mutations: 25, crossovers: 25, mutation_prob: 0.1, generations: 20}
    random: {n_archs: 1000, per_generation: 50}   # distinct candidates, and how many per checkpoint
    grid: {per_generation: 50, max_archs: 10000}  # every architecture in order; a larger space is refused
    optuna_tpe: {n_archs: 100, per_generation: 10, n_startup_trials: 10}
    optuna_nsga2: {population: 20, generations: 10, crossover_prob: 0.9, mutation_prob: null}  # accuracy against nas.search.cost.pareto
    regularized_evolution: {population_size: 100, sample_size: 25, mutation_prob: 0.05, crossover: false, cycles: 100, per_generation: 1}
    bn_recalibration: {batches: 10}              # train batches per candidate's BN statistics (0: off)
    score_batches: 0             # val batches each candidate is scored on (0: the whole search val split)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from archnas.descs.model_desc import ConvMacroParams, OpDesc
from archnas.errors import ConfigError
from archnas.nas.evaluater import Evaluater
from archnas.nas.finalizers import NONE_OP
from archnas.nas.pretrain import Pretrain
from archnas.nas.ranking import RankingCheck
from archnas.nas.registry import register_algorithm
from archnas.nas.samplers import (
    EvolutionSettings,
    GridSettings,
    Nsga2Settings,
    RandomSettings,
    RegularizedEvolutionSettings,
    TpeSettings,
    sampler_class,
)
from archnas.nas.strategy import Strategy
from archnas.nas.spaces import CellSpace, Space
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
    # aging evolution (Real et al. 2019; NNI's names and defaults: archnas/nas/samplers/regularized_evolution.py)
    regularized_evolution: RegularizedEvolutionSettings = field(default_factory=RegularizedEvolutionSettings)
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
        if isinstance(space, CellSpace) and NONE_OP not in space.conf.primitives:
            return (f"a path of DARTS cells runs {NONE_OP!r} on the edges its nodes drop, and {space.key}.primitives "
                    f"{list(space.conf.primitives)} has no {NONE_OP!r}; add it")
        if isinstance(space, CellSpace) and self.conf.nas.search.ranking_check.n_archs:
            return ("its ranking check (nas.search.ranking_check.n_archs) trains architectures of a space over a "
                    "module; set it to 0 for DARTS cells")
        return None

    def mixed_op(self, primitives: list[str], conv: ConvMacroParams, stride: int) -> OpDesc:
        """A cell supernet's edge runs only its path's op (the one-hot weights' chosen candidate)."""
        op = super().mixed_op(primitives, conv, stride)
        op.name = "gdas_mixed_op"
        return op

    def check(self) -> None:
        super().check()
        s = self.section
        sampler_class(s.strategy).check_settings(getattr(s, s.strategy, None), f"nas.search.spos.{s.strategy}")
        if s.bn_recalibration.batches < 0 or s.score_batches < 0:
            raise ConfigError(f"nas.search.spos: bn_recalibration.batches ({s.bn_recalibration.batches}) and "
                              f"score_batches ({s.score_batches}) must be at least 0")
