"""The random baseline under the same protocol (`nas.eval.random_baseline: {n_archs: k}`): is the
found architecture better than architectures drawn at random from the same space?

NAS papers are asked to report this (Lindauer and Hutter's NAS best-practices checklist; Li and
Talwalkar, "Random search and reproducibility for NAS", 2019; Yu et al., ICLR 2020, found random
architectures of the DARTS space close to the searched ones). The stage `random_baseline` runs
after the eval (the last stage of the recipe that trains the final network: `eval`, enot's
`tune`) when `n_archs` > 0: k architectures drawn uniformly from those the search could pick
(the space's valid genomes within the search's cost limits; distinct, seeded by
`derive_seed(common.seed, "random_baseline", "archs")`, so a larger k keeps the first ones;
a measured limit such as cpu_ms is judged on a table fitted here, from the same seed each run)
each go through the eval itself (`BaselineArch` is the `Evaluater` with the architecture
given): the eval macro, `nas.eval.trainer` (epochs, schedule), the eval's train/val split and
test set, its RNGs seeded from (common.seed, its folder) as the eval's are from (common.seed,
"eval"). Each is an independent trial (`archnas.trials`: in this process, or as Ray tasks with
`common.ray.enabled`) with its own folder `random_baseline/arch_<nnn>/` and marker, so a rerun
trains none that finished and resumes an interrupted one.

`random_baseline.json` (the marker) reports the found architecture's test top-1 against theirs:
the mean, the sample standard deviation, the rank of the found one among all k + 1 (1: best; a
tie counts in its favour) and how many random ones it beats. The found architecture's numbers
are read from the eval's result at every run: a new eval (another architecture) recomputes the
report from the same finished trials.
"""

from __future__ import annotations

import math
import statistics
from typing import Any, Callable, Optional, Sequence

from archnas.config.schema import EvalMode
from archnas.context import PhaseContext, RunContext
from archnas.descs.dataset_info import DatasetInfo
from archnas.errors import ConfigError
from archnas.latency.limits import Limits
from archnas.nas.cost_search import allowed_genomes, space_costs
from archnas.nas.evaluater import Evaluater, Network
from archnas.nas.phase import Experiment, Phase, final_network_stage
from archnas.nas.registry import algorithm_class
from archnas.nas.samplers import RandomSampling, Row
from archnas.nas.selection import Standalone, select
from archnas.nas.spaces import Genome, Space, eval_space, space_of
from archnas.stats import dataset_info
from archnas.trials import Trial
from archnas.utils.seeding import derive_seed

STAGE = "random_baseline"
MARKER = "random_baseline.json"


def check_random_baseline(conf: Any) -> None:
    """`nas.eval.random_baseline.n_archs` at least 0, and a protocol that can be repeated: the
    random architectures are trained from scratch, so the found one must be too."""
    n = conf.nas.eval.random_baseline.n_archs
    if n < 0:
        raise ConfigError(f"nas.eval.random_baseline.n_archs: {n}; expected 0 (off) or more random architectures")
    if n and conf.nas.eval.mode == EvalMode.tune:
        raise ConfigError("nas.eval.random_baseline.n_archs: the random architectures are trained from scratch, but "
                          "nas.eval.mode is tune (the found one fine-tuned from the supernet): not the same protocol; "
                          "use nas.eval.mode=retrain or leave n_archs 0")


def with_random_baseline(stages: tuple[type[Phase], ...], conf: Any) -> tuple[type[Phase], ...]:
    """`stages` with the random baseline right after the stage that trains the final network,
    when `nas.eval.random_baseline.n_archs` asks for it."""
    check_random_baseline(conf)
    final = final_network_stage(stages)
    if not conf.nas.eval.random_baseline.n_archs or final is None:
        return stages
    at = stages.index(final) + 1
    return (*stages[:at], RandomBaseline, *stages[at:])


class BaselineArch(Evaluater):
    """Random architecture `number` (1-based, genome `row` of the searched space) through the eval."""

    name = STAGE

    def __init__(self, experiment: Experiment, number: int, row: Row):
        super().__init__(experiment, f"{STAGE}/arch_{number:03d}")
        self.number, self.row = number, tuple(row)

    def network(self, info: DatasetInfo) -> Network:
        space = eval_space(self.run.conf)
        arch = space.check(space_of(self.run.conf.nas.search).genome(info).decode(self.row), info)
        return Network(space.network_fingerprint(arch, info, False),
                       f"random architecture {self.number}: {space.describe(arch)} (retrain)",
                       lambda: space.network(arch, info), lambda folder: space.save_network(folder, arch, info),
                       space.model_file_space(arch, info))

    def inputs(self) -> tuple[str, ...]:
        return ()


def _baseline(run: RunContext, number: int, row: Row, force: bool) -> BaselineArch:
    return BaselineArch(Experiment(run, algorithm_class(run.conf.nas.algo)(run.conf), force), number, row)


def run_baseline_arch(run: RunContext, number: int, row: Row, force: bool) -> dict[str, Any]:
    """A trial (`archnas.trials`): built from the run alone, so it runs here or on a Ray worker."""
    return _baseline(run, number, row, force).execute()


def finished_baseline_arch(run: RunContext, number: int, row: Row, force: bool) -> Optional[dict[str, Any]]:
    return _baseline(run, number, row, force).load_finished()


def compare(found: float, random_accuracies: Sequence[float]) -> dict[str, Any]:
    """The found test top-1 against the random ones: mean, sample std (None for one), median (a
    random network that cannot learn, e.g. NB201's with no path to the output, pulls the mean
    down), the found one's rank among all (1: best; ties in its favour) and how many it beats."""
    n = len(random_accuracies)
    mean = sum(random_accuracies) / n
    std = math.sqrt(sum((a - mean) ** 2 for a in random_accuracies) / (n - 1)) if n > 1 else None
    return {"found_test_top1": found, "random_test_top1": list(random_accuracies), "random_mean": mean,
            "random_std": std, "random_median": statistics.median(random_accuracies), "rank": 1 + sum(a > found for a in random_accuracies), "of": n + 1,
            "beats": sum(a < found for a in random_accuracies), "n_archs": n}


class RandomBaseline(Phase):
    """The stage: k random architectures through the eval, and the found one ranked among them."""

    name = STAGE
    section_key = "nas.eval"
    marker = MARKER
    unread_keys = ("random_baseline",)  # k is checked against the marker: a larger k reuses the first ones

    def final_stage(self) -> str:
        stage = final_network_stage(self.strategy.phases)
        assert stage is not None  # the recipe has the baseline only after one
        return stage.name

    def inputs(self) -> tuple[str, ...]:
        return (self.final_stage(),)

    def stale(self) -> bool:
        """Its trials depend on the config alone, not on the found architecture: never started over
        for a new eval (`finished` recomputes the report instead)."""
        return False

    def found(self) -> dict[str, Any]:
        result = self.experiment.results.get(self.final_stage())
        if not isinstance(result, dict) or result.get("test_top1") is None:
            raise ConfigError(f"{STAGE}: the {self.final_stage()} stage has not finished in {self.run.exp_dir}; run it "
                              "first (the baseline compares its architecture with random ones)")
        return result

    def finished(self) -> Optional[dict[str, Any]]:
        """Finished for this eval's result and this k; otherwise it runs again, reading back its trials."""
        done = super().finished()
        if done is None:
            return None
        found = self.found()
        same = (done.get("found_fingerprint") == found.get("fingerprint")
                and done.get("found_test_top1") == found["test_top1"]
                and done.get("n_archs") == self.section.random_baseline.n_archs)
        return done if same else None

    def work(self, ctx: PhaseContext) -> dict[str, Any]:
        found = self.found()
        n = ctx.conf.random_baseline.n_archs
        ctx.commit()  # the trials' folders are inside this stage's
        conf = ctx.run.conf
        space = space_of(conf.nas.search)
        info = dataset_info(conf.dataset, conf.common.cache_dir)
        genome = space.genome(info)
        limits = Limits.from_conf(conf.nas.search.cost)
        allows = self.within_limits(ctx, limits, space, genome, info)
        sampler = RandomSampling(list(genome.counts), n, n, derive_seed(conf.common.seed, STAGE, "archs"), allows)
        results: dict[int, dict[str, Any]] = {}

        def report(i: int, row: Row, result: dict[str, Any]) -> None:
            results[i] = result
            ctx.log.info(f"random architecture {i + 1}/{n}: test top-1 {result['test_top1']:.2%} "
                         f"({result['params_without_aux']:,} parameters)")

        def trial(i: int, row: Row) -> Trial:
            return Trial(f"random_arch_{i + 1:03d}", ctx.run, run_baseline_arch, (i + 1, row, self.force),
                         finished_baseline_arch)

        select(sampler, Standalone(trial, lambda r: r["test_top1"], conf.common.ray, report), None, None, probe=ctx.probe)
        if len(sampler.scored) < n:
            raise ConfigError(f"nas.eval.random_baseline.n_archs: {n} is more than the {len(sampler.scored)} distinct "
                              "architectures drawn from the space")
        archs = [{"number": i + 1, "arch": space.record(genome.decode(s.row)), "row": list(s.row),
                  **{k: results[i][k] for k in ("test_top1", "test_top1_best_val", "best_val_top1", "params_without_aux",
                                                "macs", "train_time")}}
                 for i, s in enumerate(sampler.scored)]
        summary = {**compare(found["test_top1"], [a["test_top1"] for a in archs]),
                   "found_fingerprint": found.get("fingerprint"), "found_stage": self.final_stage(),
                   "limits": limits.describe(),
                   "epochs": ctx.conf.trainer.epochs, "archs": archs}
        ctx.log.info(self.line(summary))
        self.write_marker(ctx, summary)
        return summary

    def within_limits(self, ctx: PhaseContext, limits: Limits, space: Space, genome: Genome,
                      info: DatasetInfo) -> Callable[[Row], bool]:
        """What the search could have picked: the space's valid genomes within the search's cost
        limits (`nas.search.cost`). A found network under a 400k multiply-add limit compared with
        random ones of up to a million would measure the limit, not the search."""
        if not limits:
            return genome.allows
        costs = space_costs(ctx.run.conf.nas.search.cost, space, genome, info,
                            derive_seed(ctx.run.conf.common.seed, STAGE, "costs"))
        ctx.log.info(f"random architectures drawn within the search's limits: "
                     f"{', '.join(f'{k} {v:g}' for k, v in limits.describe().items())}")
        return allowed_genomes(genome, costs, limits)

    def summary(self, result: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in result.items() if k != "archs"}

    def report(self, summary: dict[str, Any]) -> list[str]:
        return [f"  {self.line(summary)}"]

    @staticmethod
    def line(s: dict[str, Any]) -> str:
        spread = "" if s["random_std"] is None else f" +- {s['random_std']:.2%}"
        return (f"random baseline: the found architecture's test top-1 {s['found_test_top1']:.2%} against "
                f"{s['n_archs']} random architectures' mean {s['random_mean']:.2%}{spread}, median "
                f"{s['random_median']:.2%} (same eval); rank "
                f"{s['rank']} of {s['of']}, better than {s['beats']}")
