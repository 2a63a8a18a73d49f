"""Random search: sample architectures of the search space, train each, keep the best.

Over DARTS cells the space is that of a finalized supernet: every node keeps `max_final_edges` of
its inputs, each with one candidate op other than `none`, the same in every cell of a type; over a
space over a module (`nas.search.space`, e.g. nb201) every label takes a uniformly drawn choice
(`Space.sample`). Candidates are numbered from 1, in logs, folders and records alike; candidate n
is what the space samples with seed `random_arch_seed(common.seed, n)` (for cells: what
`RandomFinalizers` picks); the random-finalizer baseline draws with candidate 1's seed, so over
cells candidate 1 is exactly the architecture that baseline
(`nas.search.finalizer.type: random`) gives, and `nas.search.random.n_archs: 1` is that baseline
without training a supernet (nothing is trained: there is nothing to choose between).

Each candidate is an independent trial, a phase of its own (`Candidate`): its folder
`search/candidate_<nnn>/` (`candidate_001` for candidate 1: the architecture's files as a search
folder has them, split, checkpoints, metrics, `trial.json`), its RNGs seeded from (common.seed, its
folder name) as every stage's are, trained from scratch at the
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
from archnas.descs.dataset_info import DatasetInfo
from archnas.errors import ConfigError, DescError
from archnas.nas.evaluater import Evaluater
from archnas.nas.finalizers import random_arch_seed
from archnas.nas.phase import Experiment, Phase
from archnas.nas.registry import algorithm_class, register_algorithm
from archnas.nas.samplers import Grid, Row
from archnas.nas.searcher import SearchPhase, SearchResult, load_data
from archnas.nas.selection import Standalone, select
from archnas.nas.spaces import space_of
from archnas.nas.strategy import Strategy
from archnas.stats import dataset_info
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
        space = space_of(conf)
        arch = space.sample(data.info, seed)
        ctx.write(lambda: space.save(ctx.dir, arch, data.info))
        model = space.network(arch, data.info)
        fingerprint = space.fingerprint(arch, data.info)
        fields, _ = space.save(ctx.dir, arch, data.info, write=False)  # what the held-back write records
        result = TrialResult(number=self.number, seed=seed, genotype=fields.get("genotype"), fingerprint=fingerprint,
                             params=sum(p.numel() for p in model.parameters()), val_top1=None, best_val_top1=None,
                             train_time=0.0)
        if self.train:
            trainer = Trainer(conf.trainer, model, ctx, checkpointer=self.checkpointer(ctx, fingerprint))
            history = trainer.fit(data.loader("train", training=True), data.loader("val", training=False))
            result.val_top1 = history.last.get("val_top1") if history.last else None
            result.best_val_top1 = history.best_value
            result.train_time = sum(r.get("epoch_time", 0.0) for r in history.records)
        self.write_marker(ctx, {"result": result.to_dict()})
        return result

    def load(self, done: dict[str, Any]) -> TrialResult:
        return TrialResult.from_dict(done["result"])


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

        select(Grid([n_archs], n_archs, lambda row: True), Standalone(trial, score, ctx.common.ray, report), None, None,
               probe=ctx.probe)
        results = [finished[i] for i in range(n_archs)]
        best = max(results, key=lambda r: (-1.0 if r.val_top1 is None else r.val_top1, -r.number))
        info = dataset_info(ctx.run.conf.dataset, ctx.run.conf.common.cache_dir)
        final = self.candidate_arch(best, info)
        ctx.log.info(f"best: candidate {best.number}/{n_archs} ({trial_name(best.number)})"
                     + ("" if best.val_top1 is None else f", val top-1 {best.val_top1:.2%}"))
        metrics = {
            "search_time": sum(r.train_time for r in results),
            "best_candidate": best.number,
            "best_val_top1": best.val_top1,
            "candidates": [r.to_dict() for r in results],
        }
        return self.save_result(ctx, final, metrics, info)

    def candidate_arch(self, result: TrialResult, info: DatasetInfo) -> Any:
        """The candidate's architecture, drawn again from its seed, checked against what it trained."""
        space = space_of(self.run.conf.nas.search)
        arch = space.sample(info, result.seed)
        if space.fingerprint(arch, info) != result.fingerprint:
            raise DescError(f"{self.run.exp_dir / trial_name(result.number) / TRIAL_FILE} records another network "
                            f"than its seed {result.seed} draws; it was changed after the candidate finished")
        return arch


@register_algorithm
class Random(Strategy):
    name = "random"
    config_class = RandomSearchConf
    phases = (RandomSearch, Evaluater)

    def check(self) -> None:
        super().check()
        if self.section.n_archs < 1:
            raise ConfigError(f"nas.search.random.n_archs: {self.section.n_archs}; sample at least 1 architecture")
