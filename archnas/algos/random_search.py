"""Random search: sample architectures from the cell space DARTS searches, train each, keep the best.

The space is that of a finalized supernet: every node keeps `max_final_edges` of its inputs, each
with one candidate op other than `none`, the same in every cell of a type. Candidate i is what
`RandomFinalizers` picks with seed `candidate_seed(common.seed, i)`; candidate 0 uses common.seed
itself, so it is exactly the architecture the random-finalizer baseline
(`nas.search.finalizer.type: random`) gives, and `nas.search.random.n_archs: 1` is that baseline
without training a supernet (nothing is trained: there is nothing to choose between).

Each candidate is an independent trial, `RandomSearcher.trial(make_phase, conf, i)`: its own
phase folder `search/candidate_<i>/` (desc, split, checkpoints, metrics, `trial.json`), its RNGs
seeded from (common.seed, its folder name), trained from scratch at the search macro with a plain
Trainer on `nas.search.trainer` settings, on the search train split, scored by its last epoch's
top-1 on the search val split. It depends on nothing but the config and i, so trials can run in
any order or on other machines: they go through `archnas.trials.run_trials`, one after another
in this process, or as Ray tasks when `common.ray.enabled`. `trial.json`, written last, marks it
finished, and a rerun reuses finished trials and resumes an interrupted one from its checkpoint.
The best candidate (ties: the lower index) is the search result, retrained from scratch by the
eval phase.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Optional

from archnas.config.schema import SearchConf
from archnas.context import PhaseContext, RunContext
from archnas.distributed import barrier
from archnas.descs.builder import ModelDescBuilder
from archnas.descs.desc_io import load_desc, save_desc
from archnas.descs.model_desc import ModelDesc
from archnas.errors import ConfigError, DescError
from archnas.model import Model
from archnas.nas.finalizers import RandomFinalizers
from archnas.nas.runner import ExperimentRunner, register_algorithm, runner_class
from archnas.nas.searcher import (
    FINAL_DESC_FILE, RESULT_FILE, Searcher, SearchResult, _genotype_or_none, check_completed, load_data,
)
from archnas.training.checkpoint import phase_config
from archnas.training.trainer import Trainer
from archnas.trials import Trial, run_trials
from archnas.utils import atomic
from archnas.utils.seeding import phase_seed

TRIAL_FILE = "trial.json"
MakePhase = Callable[[str, Any], PhaseContext]


def candidate_seed(seed: int, index: int) -> int:
    """The sampling seed of candidate `index`: common.seed for candidate 0, derived for the others."""
    return seed if index == 0 else phase_seed(seed, f"random_search/candidate_{index}")


def trial_name(index: int) -> str:
    return f"search/candidate_{index:03d}"


@dataclass
class TrialResult:
    index: int
    seed: int  # the sampling seed (candidate_seed)
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


class RandomSearcher(Searcher):
    """The search phase of random search: no supernet, no alphas; trials, then the best of them."""

    def __init__(self, builder: ModelDescBuilder, force: bool = False):
        # Deliberately not Searcher.__init__: there is no supernet trainer and no finalizer to hold.
        self.builder = builder
        self.force = force

    def search(self, ctx: PhaseContext, make_phase: MakePhase) -> SearchResult:
        conf: SearchConf = ctx.conf
        n_archs = conf.random.n_archs
        if n_archs < 1:
            raise ConfigError(f"nas.search.random.n_archs: {n_archs}; sample at least 1 architecture")
        marker = ctx.dir / RESULT_FILE
        done = check_completed(ctx, marker, self.force)
        if done is not None:
            ctx.log.info(f"search already finished ({marker}); skipping it")
            return self.load_result(ctx.dir, done)

        def report(i: int, result: TrialResult) -> None:
            score = "not trained" if result.val_top1 is None else f"val top-1 {result.val_top1:.2%}"
            ctx.log.info(f"candidate {i + 1}/{n_archs}: {score}, {result.params:,} parameters")

        trials = [Trial(f"candidate_{i:03d}", ctx.run, run_candidate, (i, n_archs > 1, self.force), finished_candidate)
                  for i in range(n_archs)]
        results = run_trials(trials, ctx.common.ray, on_result=report)
        best = max(results, key=lambda r: (-1.0 if r.val_top1 is None else r.val_top1, -r.index))
        final = self.candidate_desc(ctx, best)
        ctx.log.info(f"best: candidate {best.index}" + ("" if best.val_top1 is None else f", val top-1 {best.val_top1:.2%}"))
        metrics = {
            "search_time": sum(r.train_time for r in results),
            "best_candidate": best.index,
            "best_val_top1": best.val_top1,
            "candidates": [r.to_dict() for r in results],
        }
        if conf.post_train.trainer.epochs > 0:
            metrics["post_train"] = self.post_train(make_phase("search/post_train", conf.post_train), final)
        return self.save_result(ctx, final, metrics)

    def trial(self, make_phase: MakePhase, conf: SearchConf, index: int, train: bool = True) -> TrialResult:
        """Sample candidate `index`, train it (unless `train` is false) and record the result in
        its folder; a finished candidate is read back instead, an interrupted one resumes."""
        ctx = make_phase(trial_name(index), conf)
        try:
            marker = ctx.dir / TRIAL_FILE
            done = check_completed(ctx, marker, self.force)
            if done is not None:
                ctx.log.info(f"candidate {index} already finished ({marker}); skipping it")
                return TrialResult.from_dict(done["result"])
            data = load_data(ctx, conf.loader)
            seed = candidate_seed(ctx.seed, index)
            desc = self.sample(conf, data.info, seed)
            if ctx.run.is_main:
                save_desc(desc, ctx.dir / FINAL_DESC_FILE)
            model = Model(desc, droppath=True, affine=True).to(ctx.device)
            result = TrialResult(index=index, seed=seed, genotype=_genotype_or_none(desc), fingerprint=desc.fingerprint(),
                                 params=sum(p.numel() for p in model.weights()), val_top1=None, best_val_top1=None,
                                 train_time=0.0)
            if train:
                trainer = Trainer(conf.trainer, model, ctx, fingerprint=desc.fingerprint(),
                                  force=self.force)
                history = trainer.fit(data.loader("train", training=True), data.loader("val", training=False))
                result.val_top1 = history.last.get("val_top1") if history.last else None
                result.best_val_top1 = history.best_value
                result.train_time = sum(r.get("epoch_time", 0.0) for r in history.records)
            if ctx.run.is_main:
                atomic.write_json(marker, {"result": result.to_dict(), "config": phase_config(ctx.run.conf, ctx.conf)})
            barrier()  # DDP: the candidate's files are complete before any rank reads them
            return result
        finally:
            ctx.close()

    def sample(self, conf: SearchConf, dataset_info, seed: int) -> ModelDesc:
        """A random finalization of the supernet at the search macro."""
        supernet = self.builder.build(conf.model_desc, dataset_info)
        return RandomFinalizers(conf.finalizer, conf.model_desc.max_final_edges, seed).finalize_desc(supernet)

    def candidate_desc(self, ctx: PhaseContext, result: TrialResult) -> ModelDesc:
        path = ctx.run.exp_dir / trial_name(result.index) / FINAL_DESC_FILE
        desc = load_desc(path)
        if desc.fingerprint() != result.fingerprint:
            raise DescError(f"{path} does not match the candidate recorded beside it in {TRIAL_FILE}; "
                            "it was changed after the candidate finished")
        return desc


def run_candidate(run: RunContext, index: int, train: bool, force: bool) -> TrialResult:
    """Candidate `index` as a trial (`archnas.trials`): the searcher of the run's algorithm, built
    here from the config alone, so the same call runs in this process or in a Ray worker."""
    searcher = runner_class(run.conf.nas.algo)(run, force=force).searcher()
    return searcher.trial(run.phase, run.conf.nas.search, index, train)


def finished_candidate(run: RunContext, index: int, train: bool, force: bool) -> Optional[TrialResult]:
    """Candidate `index`'s recorded result if it finished under this config, else None."""
    name = trial_name(index)
    ctx = PhaseContext(run=run, name=name, conf=run.conf.nas.search, dir=run.exp_dir / name, log=run.log)
    done = check_completed(ctx, ctx.dir / TRIAL_FILE, force)
    if done is None:
        return None
    run.log.info(f"candidate {index} already finished ({ctx.dir / TRIAL_FILE}); skipping it")
    return TrialResult.from_dict(done["result"])


@register_algorithm("random")
class RandomSearchRunner(ExperimentRunner):
    def searcher(self) -> Searcher:
        return RandomSearcher(self.model_desc_builder(), force=self.force)
