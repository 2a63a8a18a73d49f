"""ExperimentRunner: the phases an algorithm declares, in order, in one experiment folder.

    runner = ExperimentRunner(run_context, force=False)
    result = runner.run(search=True, eval=True)     # results/<experiment>/<phase>/..., result.json

The algorithm (`nas.algo`, a registered `Strategy`) declares its phases (search then eval for the
DARTS family; eval only for `manual`). Each phase is skipped when its marker says it finished,
resumed from its checkpoint when it was interrupted, and run otherwise (`archnas.nas.phase`).
`search=False` (`--no-search`) or `eval=False` (`--no-eval`) leave phases of that kind out; a
left-out phase that had finished still hands its result to the phases after it (an eval after
an earlier search). `restart` starts the phases that run over, keeping their old folders; a phase
whose input an earlier phase of this run changed (an eval after a search that trained on) starts
over by itself (`Evaluater`). Under torchrun every rank runs the same phases: rank 0 writes, the others
wait at a barrier after each phase.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from archnas.context import RunContext
from archnas.distributed import barrier
from archnas.nas.phase import Experiment
from archnas.nas.preflight import check_before_work
from archnas.nas.registry import algorithm_class
from archnas.utils import atomic


@dataclass
class ExperimentResult:
    algorithm: str
    exp_dir: Path
    search: dict[str, Any] = field(default_factory=dict)
    eval: dict[str, Any] = field(default_factory=dict)


class ExperimentRunner:
    def __init__(self, run: RunContext, force: bool = False, restart: bool = False):
        """`restart` (`--restart`): every phase that runs starts over, its old folder kept as
        `<phase>.old-<k>`; phases left out (`--no-search`, `--no-eval`) are not touched."""
        self.run_context = run
        self.strategy = algorithm_class(run.conf.nas.algo)(run.conf)
        self.experiment = Experiment(run, self.strategy, force, restart=restart)

    def run(self, search: bool = True, eval: bool = True) -> ExperimentResult:
        wanted = {"search": search, "eval": eval}
        check_before_work(self.experiment, search, eval)  # what would be refused late, refused now
        result = ExperimentResult(self.strategy.name, self.run_context.exp_dir)
        for phase_class in self.strategy.phases:
            phase = phase_class(self.experiment)
            if wanted[phase.kind]:
                phase.restart = self.experiment.restart
                outcome = phase.execute()
            else:
                outcome = phase.load_finished()
                if outcome is None:
                    continue
            self.experiment.results[phase.name] = outcome
            if wanted[phase.kind]:
                getattr(result, phase.kind).update(phase.summary(outcome))
        if self.run_context.is_main:
            atomic.write_json(self.run_context.exp_dir / "result.json", {
                "algorithm": result.algorithm, "search": result.search, "eval": result.eval,
            }, only_if_changed=True)  # a rerun of a finished experiment writes nothing
        barrier()  # result.json is written
        return result
