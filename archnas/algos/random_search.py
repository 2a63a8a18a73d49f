"""Random search: sample architectures from the cell space DARTS searches, train each, keep the best.

The space is that of a finalized supernet: every node keeps `max_final_edges` of its inputs, each
with one candidate op other than `none`, the same in every cell of a type. Candidates are
numbered from 1, in logs, folders and records alike; candidate n is what `RandomFinalizers` picks
with seed `random_arch_seed(common.seed, n)`; the random-finalizer baseline draws with candidate
1's seed, so candidate 1 is exactly the architecture that baseline
(`nas.search.finalizer.type: random`) gives, and `nas.search.random.n_archs: 1` is that baseline
without training a supernet (nothing is trained: there is nothing to choose between).

Each candidate is an independent trial, a phase of its own (`Candidate`): its folder
`search/candidate_<nnn>/` (`candidate_001` for candidate 1: desc, split, checkpoints, metrics,
`trial.json`), its RNGs seeded from (common.seed, its folder name) as every stage's are, trained from scratch at the
search macro with a plain Trainer on `nas.search.trainer` settings, on the search train split, scored by its last epoch's
top-1 on the search val split. It depends on nothing but the config and n, so trials can run in
any order or on other machines. The search is a selection of one batch (`archnas.nas.selection`):
the grid over the candidate numbers 1..n_archs (a candidate's genome is its number, which seeds
its draw), scored stand-alone as trials through `archnas.trials.run_trials`, one after another
in this process, or as Ray tasks when `common.ray.enabled`. `trial.json`, written last, marks it
finished, and a rerun reuses finished trials and resumes an interrupted one from its checkpoint.
The best candidate (ties: the lower number) is the search result, retrained from scratch by the
eval phase.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Optional

from archnas.context import PhaseContext, RunContext
from archnas.descs.desc_io import load_desc, save_desc
from archnas.descs.model_desc import ModelDesc
from archnas.errors import ConfigError, DescError
from archnas.model import Model
from archnas.nas.evaluater import Evaluater
from archnas.nas.finalizers import RandomFinalizers, random_arch_seed
from archnas.nas.phase import Experiment, Phase
from archnas.nas.registry import algorithm_class, register_algorithm
from archnas.nas.samplers import Grid, Row
from archnas.nas.searcher import (
    FINAL_DESC_FILE,
    SearchPhase,
    SearchResult,
    genotype_or_none,
    load_data,
)
from archnas.nas.selection import Standalone, select
from archnas.nas.strategy import Strategy
from archnas.training.trainer import Trainer
from archnas.trials import Trial

TRIAL_FILE = "trial.json"


@dataclass
class RandomSearchConf:
    """`nas.search.random`: random search over the cells the supernet finalizes to."""

    # Architectures sampled (candidate 1 is the one `finalizer.type: random` picks for common.seed),
    # each trained from scratch at the search macro with nas.search.trainer and ranked by its final
    # val top-1. 1: the random-finalizer baseline, one random architecture and nothing trained.
    n_archs: int = 8


def trial_name(number: int) -> str:
    return f"search/candidate_{number:03d}"


@dataclass
class TrialResult:
    number: int  # 1-based, as the log and the folder name (candidate_001) say it
    seed: int  # the sampling seed (random_arch_seed)
    genotype: Optional[str]
    fingerprint: str  # of the candidate's desc, checked when the winner's desc file is read back
    params: int
    val_top1: Optional[float]  # last epoch's; None when the candidate was not trained (n_archs 1)
    best_val_top1: Optional[float]
    train_time: float

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrialResult":
        return cls(**{f.name: data[f.name] for f in dataclasses.fields(cls)})


class Candidate(Phase):
    """One sampled architecture, trained at the search macro on the search split (unless `train`
    is false) and scored by its last epoch's val top-1; marked by `trial.json`."""

    section_key = "nas.search"
    marker = TRIAL_FILE

    def __init__(self, experiment: Experiment, number: int, train: bool = True):
        super().__init__(experiment, trial_name(number))
        self.number, self.train = number, train

    def work(self, ctx: PhaseContext) -> TrialResult:
        conf = ctx.conf
        data = load_data(ctx, conf.loader)
        seed = random_arch_seed(ctx.seed, self.number)
        desc = sample(self.strategy, conf, data.info, seed)
        ctx.write(lambda: save_desc(desc, ctx.dir / FINAL_DESC_FILE))
        model = Model(desc, droppath=True, affine=True)
        result = TrialResult(number=self.number, seed=seed, genotype=genotype_or_none(desc),
                             fingerprint=desc.fingerprint(),
                             params=sum(p.numel() for p in model.weights()), val_top1=None, best_val_top1=None,
                             train_time=0.0)
        if self.train:
            trainer = Trainer(conf.trainer, model, ctx, checkpointer=self.checkpointer(ctx, desc.fingerprint()))
            history = trainer.fit(data.loader("train", training=True), data.loader("val", training=False))
            result.val_top1 = history.last.get("val_top1") if history.last else None
            result.best_val_top1 = history.best_value
            result.train_time = sum(r.get("epoch_time", 0.0) for r in history.records)
        self.write_marker(ctx, {"result": result.to_dict()})
        return result

    def load(self, done: dict[str, Any]) -> TrialResult:
        return TrialResult.from_dict(done["result"])


def sample(strategy: Strategy, conf, dataset_info, seed: int) -> ModelDesc:
    """A random finalization of the supernet at the search macro."""
    supernet = strategy.supernet_builder().build(conf.model_desc, dataset_info)
    return RandomFinalizers(conf.finalizer, conf.model_desc.max_final_edges, seed).finalize_desc(supernet)


def _candidate(run: RunContext, number: int, train: bool, force: bool) -> Candidate:
    return Candidate(Experiment(run, algorithm_class(run.conf.nas.algo)(run.conf), force), number, train)


def run_candidate(run: RunContext, number: int, train: bool, force: bool) -> TrialResult:
    """Candidate `number` (1-based) as a trial (`archnas.trials`), built from the run alone, so the same call
    runs in this process or in a Ray worker; finished, it is read back, interrupted, resumed."""
    return _candidate(run, number, train, force).execute()


def finished_candidate(run: RunContext, number: int, train: bool, force: bool) -> Optional[TrialResult]:
    """Candidate `number`'s recorded result if it finished under this config, else None."""
    return _candidate(run, number, train, force).load_finished()


class RandomSearch(SearchPhase):
    """The search phase of random search: no supernet, no alphas; trials, then the best of them."""

    def work(self, ctx: PhaseContext) -> SearchResult:
        n_archs = ctx.conf.random.n_archs
        ctx.commit()  # the candidates' folders are inside this phase's: it is written (or moved aside) first

        finished: dict[int, TrialResult] = {}

        def report(i: int, row: Row, result: TrialResult) -> None:
            finished[i] = result
            score = "not trained" if result.val_top1 is None else f"val top-1 {result.val_top1:.2%}"
            ctx.log.info(f"candidate {result.number}/{n_archs}: {score}, {result.params:,} parameters")

        def trial(i: int, row: Row) -> Trial:
            number = row[0] + 1
            return Trial(f"candidate_{number:03d}", ctx.run, run_candidate, (number, n_archs > 1, self.force),
                         finished_candidate)

        def score(result: TrialResult) -> float:
            return -1.0 if result.val_top1 is None else result.val_top1

        select(Grid([n_archs], n_archs, lambda row: True), Standalone(trial, score, ctx.common.ray, report), None, None)
        results = [finished[i] for i in range(n_archs)]
        best = max(results, key=lambda r: (-1.0 if r.val_top1 is None else r.val_top1, -r.number))
        final = self.candidate_desc(best)
        ctx.log.info(f"best: candidate {best.number}/{n_archs} ({trial_name(best.number)})"
                     + ("" if best.val_top1 is None else f", val top-1 {best.val_top1:.2%}"))
        metrics = {
            "search_time": sum(r.train_time for r in results),
            "best_candidate": best.number,
            "best_val_top1": best.val_top1,
            "candidates": [r.to_dict() for r in results],
        }
        return self.save_result(ctx, final, metrics)

    def candidate_desc(self, result: TrialResult) -> ModelDesc:
        path = self.run.exp_dir / trial_name(result.number) / FINAL_DESC_FILE
        desc = load_desc(path)
        if desc.fingerprint() != result.fingerprint:
            raise DescError(f"{path} does not match the candidate recorded beside it in {TRIAL_FILE}; "
                            "it was changed after the candidate finished")
        return desc


@register_algorithm
class Random(Strategy):
    name = "random"
    config_class = RandomSearchConf
    phases = (RandomSearch, Evaluater)
    searches_modules = False

    def check(self) -> None:
        super().check()
        if self.section.n_archs < 1:
            raise ConfigError(f"nas.search.random.n_archs: {self.section.n_archs}; sample at least 1 architecture")
