"""Selection: a sampler (`archnas.nas.samplers`) run with an evaluator, one batch at a time.

    sampler = build_sampler(name, settings, Genomes(counts, allows, cost), seed)
    checkpointer.register("search", sampler)            # with whatever else the phase resumes
    select(sampler, InheritedWeights(scorer, genome.decode), checkpointer, ctx.log)

Each batch the sampler asks is scored by the evaluator, told back in the order asked, and
checkpointed (`checkpointer.save`) before the next is asked. A selection of one batch (the
ranking check's sample, a grid of combinations) has nothing to keep between batches: it runs
without a checkpointer, and a rerun asks the same batch again. The sampler's state after a closed
batch decides the next one, and an evaluator's score depends on nothing but the genome (fixed
weights and batches, or a trial seeded from its own folder), so a selection killed anywhere and
resumed from its checkpoint asks and scores what an uninterrupted one does.

Evaluators score a batch of genomes: on the weights a trained supernet lends them after
BatchNorm recalibration (`InheritedWeights`), or each trained stand-alone as a trial of
`archnas.trials` (`Standalone`: in this process or as Ray tasks; a trial that finished is read
back from its folder, so a rerun does not train it again). Candidates are numbered from 1 in the
order asked, over all batches: an evaluator is given the number of candidates scored before
the batch, which names the trials' folders.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, Optional, Protocol, Sequence

from archnas.config.schema.common import RayConf
from archnas.nas.samplers import Row, Sampler
from archnas.nas.subnets import SubnetScorer
from archnas.training.checkpoint import Checkpointer
from archnas.training.probe import Probe, ProbeDone
from archnas.trials import Trial, run_trials


class Evaluator(Protocol):
    def __call__(self, rows: Sequence[Row], start: int) -> list[float]:
        """The score of every genome (higher is better), in order; `start` candidates came before."""


class InheritedWeights:
    """Each genome's val top-1 on the supernet's weights, after BatchNorm recalibration."""

    def __init__(self, scorer: SubnetScorer, decode: Callable[[Sequence[int]], Any]):
        """`decode`: the architecture of a genome (`Genome.decode` of the space)."""
        self.scorer, self.decode = scorer, decode

    def __call__(self, rows: Sequence[Row], start: int = 0) -> list[float]:
        return [self.scorer.score(self.decode(row)) for row in rows]


class Standalone:
    """Each genome trained from scratch as a trial (`archnas.trials.run_trials`, all of a batch at
    once on Ray): `trial(index, row)` makes candidate `index`'s (0-based) `Trial`, `score(result)`
    reads the score from its result, `on_result(index, row, result)` as each one finishes."""

    def __init__(self, trial: Callable[[int, Row], Trial], score: Callable[[Any], float], ray: RayConf,
                 on_result: Optional[Callable[[int, Row, Any], None]] = None):
        self.trial, self.score, self.ray, self.on_result = trial, score, ray, on_result

    def __call__(self, rows: Sequence[Row], start: int) -> list[float]:
        def record(i: int, result: Any) -> None:
            if self.on_result is not None:
                self.on_result(start + i, rows[i], result)

        results = run_trials([self.trial(start + i, row) for i, row in enumerate(rows)], self.ray, on_result=record)
        return [self.score(r) for r in results]


def select(sampler: Sampler, evaluate: Evaluator, checkpointer: Optional[Checkpointer],
           log: Optional[logging.Logger], max_candidates: Optional[int] = None,
           stop: Optional[Callable[[], Optional[str]]] = None, probe: Optional[Probe] = None) -> Optional[str]:
    """Run `sampler` to its end (or until it finds nothing new within the limits), checkpointing
    after every batch; the sampler resumed from a checkpoint goes on from its next batch. `log`
    gets a line per batch (None: the caller reports each candidate itself).

    A budget ends it early: `max_candidates` scored in all (the batch that reaches it is cut to
    fit), or `stop()`, asked before each batch, saying why (None: go on). Both are judged from
    the checkpointed state only (what was scored, what the caller recorded with it), so a resumed
    selection stops where an uninterrupted one does. Returns why it stopped early, else None.
    `probe` (a dry run's, `PhaseContext.probe`): time the first candidates instead
    (`probe_selection`)."""
    if probe is not None:
        probe_selection(sampler, evaluate, probe)
    while not sampler.done:
        if max_candidates is not None and len(sampler.scored) >= max_candidates:
            return f"the budget of {max_candidates} candidates is spent"
        why = stop() if stop is not None else None
        if why is not None:
            return why
        start = time.perf_counter()
        rows = sampler.ask()
        if max_candidates is not None and len(rows) > max_candidates - len(sampler.scored):
            rows = sampler.cut(max_candidates - len(sampler.scored))
        for row, score in zip(rows, evaluate(rows, len(sampler.scored))):
            sampler.tell(row, score)
        sampler.seconds += time.perf_counter() - start
        best = sampler.best(1)
        if log is not None:
            log.info(f"generation {sampler.generation}/{sampler.batches}: {len(rows)} candidates scored"
                     + (f", best so far {best[0].score:.2%}" if best else ""))
        if checkpointer is not None:
            checkpointer.save(last=True)
        if not rows:
            if log is not None:
                log.info("no new candidate within the limits: the search ends early")
            break
    return None


def probe_selection(sampler: Sampler, evaluate: Evaluator, probe: Probe) -> None:
    """A dry run's selection: the first batch asked, its first `probe.steps` candidates scored one
    at a time and timed, then `ProbeDone`. The selection's size is estimated as the first batch's
    times the sampler's batches (an evolution's later batches are as large or smaller). A
    stand-alone evaluator's trial is a training, whose own probe stops it at its first candidate."""
    started = time.perf_counter()
    rows = sampler.ask()
    probe.extra = {"started": started, "candidates": len(rows) * sampler.batches, "first_batch": len(rows), "batches": sampler.batches}
    seconds = []
    for i, row in enumerate(rows[:max(probe.steps, 1)]):
        start = time.perf_counter()
        evaluate([row], i)
        seconds.append(time.perf_counter() - start)
    probe.extra["candidate_s"] = seconds
    raise ProbeDone("probed")
