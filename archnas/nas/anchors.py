"""Anchors: a few random architectures trained briefly stand-alone, whose accuracies say how far a
cheaper ranking (a zero-cost proxy, a supernet's inherited weights) can be trusted.

    anchors = train_anchors(ctx, "search", genome, n=10, epochs=3, seed=..., force=...)
    anchors.val_top1                 # stand-alone val top-1 of each, in the order drawn

The anchors are a selection of one batch (`archnas.nas.selection`): the random sampler's `n`
distinct genomes (seeded by the caller), each trained from scratch as a trial (`Standalone`, in
this process or on Ray) by the ranking check's stand-alone phase (`archnas.nas.ranking`), here
for `epochs` epochs of `nas.search.trainer` on the search split, into `<folder>/anchor_<nnn>/`.
A finished anchor is read back from its `trial.json`, so a rerun trains none twice. An anchor
records only what it reads (the space, the macro, the loader and the trainer, at its own epochs),
so changing the algorithm's settings or the supernet's epochs keeps the anchors; more anchor
epochs train them on. Cost: `n` stand-alone trainings of `epochs` epochs each, once per experiment.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

from archnas.context import PhaseContext, RunContext
from archnas.errors import ConfigError
from archnas.latency.table import space_size
from archnas.nas.phase import Experiment
from archnas.nas.ranking import StandaloneArch
from archnas.nas.registry import algorithm_class
from archnas.nas.samplers import RandomSampling, Row
from archnas.nas.selection import Standalone, select
from archnas.nas.spaces import Genome
from archnas.trials import Trial

MIN_ANCHORS = 5  # fewer give rank correlations too noisy to read

class Anchor(StandaloneArch):
    """One anchor (`<folder>/anchor_<nnn>`): the ranking check's stand-alone training at `epochs`."""

    # what an anchor does not read: changing it keeps the trained anchors
    unread_keys = ("arch_optimizer", "finalizer", "post_train", "combinations", "cost", "ranking_check", "distill",
                   "ranking_monitor")
    algorithm_keys = ()

    def config_record(self) -> dict[str, Any]:
        record = super().config_record()
        record["nas"]["search"]["trainer"]["epochs"] = self.epochs  # its own length, not the supernet's
        return record


def _anchor(run: RunContext, folder: str, index: int, arch: dict[str, Any], epochs: int, force: bool) -> Anchor:
    experiment = Experiment(run, algorithm_class(run.conf.nas.algo)(run.conf), force)
    return Anchor(experiment, index, arch, f"{folder}/anchor_{index + 1:03d}", epochs)


def run_anchor(run: RunContext, folder: str, index: int, arch: dict[str, Any], epochs: int,
               force: bool) -> dict[str, Any]:
    """A trial (`archnas.trials`): built from the run alone, so it runs here or on a Ray worker."""
    return _anchor(run, folder, index, arch, epochs, force).execute()


def finished_anchor(run: RunContext, folder: str, index: int, arch: dict[str, Any], epochs: int,
                    force: bool) -> Optional[dict[str, Any]]:
    return _anchor(run, folder, index, arch, epochs, force).load_finished()


@dataclass
class Anchors:
    rows: list[Row]  # genomes, in the order drawn
    archs: list[Any]
    val_top1: list[float]  # stand-alone, last epoch
    epochs: int
    train_time: float = 0.0  # s, all anchors' training together (as each recorded it)

    def to_dict(self) -> dict[str, Any]:
        return {"epochs": self.epochs, "archs": [{"arch": a, "standalone_val_top1": v}
                                                 for a, v in zip(self.archs, self.val_top1)]}


def check_anchor_count(n: int, key: str, specs: Optional[Any] = None) -> None:
    """At least MIN_ANCHORS, and (given the space's genes) no more than the space holds."""
    if n < MIN_ANCHORS:
        raise ConfigError(f"{key}: {n} anchors; a trust check needs at least {MIN_ANCHORS} (fewer give rank "
                          "correlations too noisy to read)")
    if specs is not None and n > space_size(specs):
        raise ConfigError(f"{key}: {n} is more than the {space_size(specs)} architectures of the space")


def train_anchors(ctx: PhaseContext, folder: str, genome: Genome, n: int, epochs: int, seed: int, force: bool,
                  report: Optional[Callable[[int, dict[str, Any]], None]] = None) -> Anchors:
    """`n` distinct random genomes (seeded by `seed`) trained stand-alone in `<folder>/anchor_<nnn>`;
    `report(i, result)` as each one finishes (or is read back)."""
    sampler = RandomSampling(list(genome.counts), n, n, seed, lambda row: True)

    def trial(i: int, row: Row) -> Trial:
        return Trial(f"anchor_{i + 1:03d}", ctx.run, run_anchor, (folder, i, genome.decode(row), epochs, force),
                     finished_anchor)

    seconds: dict[int, float] = {}

    def on_result(i: int, row: Row, result: dict[str, Any]) -> None:
        seconds[i] = result.get("train_time", 0.0)
        if report is not None:
            report(i, result)

    select(sampler, Standalone(trial, lambda result: result["val_top1"], ctx.run.conf.common.ray, on_result), None,
           None)
    rows = [s.row for s in sampler.scored]
    return Anchors(rows, [genome.decode(r) for r in rows], [s.score for s in sampler.scored], epochs,
                   sum(seconds.values()))
