"""Does the supernet rank architectures the way training them does?

Weight-sharing rankings are often no better than random (Yu et al., "Evaluating the search
phase of neural architecture search", ICLR 2020), so a subnet search's choice means something
only if the inherited accuracies it compares order architectures as stand-alone training does.
The ranking check trains `n_archs` sampled architectures from scratch and reports Kendall's tau
and Spearman's rho (scipy.stats) between their stand-alone accuracy and their inherited,
BatchNorm-recalibrated one: 1 is the same order, 0 no relation, -1 reversed.

It is a selection of one batch (`archnas.nas.selection`): the random sampler's `n_archs`
distinct architectures (seeded from (common.seed, "ranking_check")), each scored on its inherited
weights and then trained stand-alone as a trial.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Any, Optional, Sequence

from scipy import stats

from archnas.context import PhaseContext, RunContext
from archnas.errors import ConfigError
from archnas.latency.table import space_size
from archnas.nas.phase import Experiment, Phase
from archnas.nas.registry import algorithm_class
from archnas.nas.samplers import RandomSampling, Row
from archnas.nas.searcher import load_data
from archnas.nas.selection import InheritedWeights, Standalone, select
from archnas.nas.spaces import space_of
from archnas.nas.subnets import inherited_supernet, subnet_scorer
from archnas.training.trainer import Trainer
from archnas.trials import Trial
from archnas.utils.seeding import derive_seed


def _plain(value: float) -> float | None:
    return None if value is None or math.isnan(value) else float(value)


def rank_correlations(standalone: Sequence[float], inherited: Sequence[float]) -> dict[str, Any]:
    """Kendall's tau-b and Spearman's rho with their two-sided p-values (None where undefined:
    every accuracy of one side equal)."""
    if len(standalone) != len(inherited) or len(standalone) < 2:
        raise ValueError(f"need two equally long lists of at least 2 accuracies, got {len(standalone)} and "
                         f"{len(inherited)}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.ConstantInputWarning)  # undefined: reported as None
        tau = stats.kendalltau(standalone, inherited)
        rho = stats.spearmanr(standalone, inherited)
    return {
        "n_archs": len(standalone),
        "kendall_tau": _plain(tau.statistic),
        "kendall_p": _plain(tau.pvalue),
        "spearman_rho": _plain(rho.statistic),
        "spearman_p": _plain(rho.pvalue),
    }


# -- the phase ---------------------------------------------------------------------------------

RANKING_FILE = "ranking.json"
TRIAL_FILE = "trial.json"


def check_ranking_count(specs: Any, n: int) -> None:
    """The ranking check draws `n` distinct architectures: the space must hold that many."""
    total = space_size(specs)
    if n > total:
        raise ConfigError(f"nas.search.ranking_check.n_archs: {n} is more than the {total} architectures of the space")


class StandaloneArch(Phase):
    """One architecture of the ranking check, trained from scratch on the search's train split
    for `ranking_check.epochs` (or `epochs`, in `folder`: the anchors of `archnas.nas.anchors`)
    and scored on its val split; marked by `trial.json`."""

    section_key = "nas.search"
    marker = TRIAL_FILE

    def __init__(self, experiment: Experiment, index: int, arch: dict[str, Any], folder: Optional[str] = None,
                 epochs: Optional[int] = None):
        super().__init__(experiment, folder or f"ranking/arch_{index + 1:03d}")
        self.index, self.arch, self.epochs = index, arch, epochs

    def work(self, ctx: PhaseContext) -> dict[str, Any]:
        conf = ctx.conf
        space = space_of(conf)
        data = load_data(ctx, conf.loader)
        epochs = conf.ranking_check.epochs if self.epochs is None else self.epochs
        trainer_conf = dataclasses.replace(conf.trainer, epochs=epochs)
        net = space.network(self.arch, data.info)
        trainer = Trainer(trainer_conf, net, ctx, checkpointer=self.checkpointer(ctx, space.fingerprint(self.arch)))
        history = trainer.fit(data.loader("train", training=True), data.loader("val", training=False))
        result = {"number": self.index + 1, "arch": self.arch, "val_top1": (history.last or {}).get("val_top1"),
                  "train_time": sum(r.get("epoch_time", 0.0) for r in history.records)}
        self.write_marker(ctx, {"result": result})
        return result

    def load(self, done: dict[str, Any]) -> dict[str, Any]:
        return done["result"]


def _standalone(run: RunContext, index: int, arch: dict[str, Any], force: bool) -> StandaloneArch:
    return StandaloneArch(Experiment(run, algorithm_class(run.conf.nas.algo)(run.conf), force), index, arch)


def run_standalone(run: RunContext, index: int, arch: dict[str, Any], force: bool) -> dict[str, Any]:
    """A trial (`archnas.trials`): built from the run alone, so it runs here or on a Ray worker."""
    return _standalone(run, index, arch, force).execute()


def finished_standalone(run: RunContext, index: int, arch: dict[str, Any], force: bool) -> Optional[dict[str, Any]]:
    return _standalone(run, index, arch, force).load_finished()


class RankingCheck(Phase):
    """Stand-alone against inherited accuracy of `n_archs` sampled architectures (`ranking.json`)."""

    name = "ranking"
    section_key = "nas.search"
    marker = RANKING_FILE

    def inputs(self) -> tuple[str, ...]:
        return (self.strategy.supernet_phase(),)

    def work(self, ctx: PhaseContext) -> dict[str, Any]:
        conf = ctx.conf
        check = conf.ranking_check
        space = space_of(conf)
        data = load_data(ctx, conf.loader)
        supernet = inherited_supernet(space, ctx, data.info, self.strategy.supernet_phase(), self.strategy)
        genome = space.genome(data.info)
        check_ranking_count(genome.specs, check.n_archs)
        sampler = RandomSampling(list(genome.counts), check.n_archs, check.n_archs,
                                 derive_seed(ctx.run.conf.common.seed, "ranking", "archs"), lambda row: True)
        section = self.strategy.section
        on_weights = InheritedWeights(subnet_scorer(space, supernet, data, ctx, section.bn_recalibration.batches,
                                                    section.score_batches), genome.decode)
        inherited: dict[Row, float] = {}

        def report(i: int, row: Row, result: dict[str, Any]) -> None:
            ctx.log.info(f"ranking check {i + 1}/{check.n_archs}: stand-alone val top-1 {result['val_top1']:.2%}, "
                         f"inherited {inherited[row]:.2%}")

        def trial(i: int, row: Row) -> Trial:
            return Trial(f"ranking_arch_{i + 1:03d}", ctx.run, run_standalone, (i, genome.decode(row), self.force),
                         finished_standalone)

        standalone_trials = Standalone(trial, lambda result: result["val_top1"], ctx.run.conf.common.ray, report)

        def evaluate(rows: list[Row], start: int) -> list[float]:
            inherited.update(zip(rows, on_weights(rows)))  # before any training, as the search scores them
            return standalone_trials(rows, start)

        select(sampler, evaluate, None, None, probe=ctx.probe)
        archs = [genome.decode(s.row) for s in sampler.scored]
        standalone = [s.score for s in sampler.scored]
        inherited_scores = [inherited[s.row] for s in sampler.scored]
        result = {**rank_correlations(standalone, inherited_scores), "epochs": check.epochs,
                  "archs": [{"arch": a, "standalone_val_top1": s, "inherited_val_top1": h}
                            for a, s, h in zip(archs, standalone, inherited_scores)]}
        ctx.log.info(f"ranking check over {len(archs)} architectures: Kendall's tau {_fmt(result['kendall_tau'])}, "
                     f"Spearman's rho {_fmt(result['spearman_rho'])} (stand-alone {check.epochs} epochs against "
                     "inherited, BN-recalibrated accuracy)")
        self.write_marker(ctx, result)
        return result

    def summary(self, result: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in result.items() if k != "archs"}

    def report(self, summary: dict[str, Any]) -> list[str]:
        return [f"  ranking check over {summary['n_archs']} architectures: Kendall's tau "
                f"{_number(summary['kendall_tau'])}, Spearman's rho {_number(summary['spearman_rho'])}"]


def _fmt(value: Optional[float]) -> str:
    return "undefined" if value is None else f"{value:.3f}"


def _number(value: Optional[float]) -> str:
    return "undefined (tied accuracies)" if value is None else f"{value:.3f}"
