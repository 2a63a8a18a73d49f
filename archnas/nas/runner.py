"""ExperimentRunner: an algorithm's recipe, its named stages in order, in one experiment folder.

    runner = ExperimentRunner(run_context, force=False)
    result = runner.run(StageSelection())     # results/<experiment>/<stage>/..., result.json

The recipe (`recipe`) is the algorithm's stages (`Strategy.phases`: search then eval for the
DARTS family; pretrain, search, ranking, eval for spos; eval only for `manual`), with the
`random_baseline` stage after the eval when `nas.eval.random_baseline.n_archs` asks for it,
followed by the registered stages `nas.extra_stages` names. Each stage is skipped when its marker says it
finished, resumed from its checkpoint when it was interrupted, and run otherwise
(`archnas.nas.phase`). A `StageSelection` (`--stages`, `--skip`, `--no-search`, `--no-eval`) leaves
stages out; a left-out stage that a stage run now reads (`inputs()`, transitively) hands on its
finished result (an eval after an earlier search), read back, never run. `restart` starts the
stages that run over, keeping their old folders; a stage whose input did work in this run (an eval
after a search that trained on) starts over by itself (`Phase.stale`). Under torchrun every rank
runs the same stages: rank 0 writes, the others wait at a barrier after each stage.

`result.json` holds `{"algorithm": name, "<stage>": summary, ...}` for the stages selected, in
recipe order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from archnas.context import RunContext
from archnas.distributed import barrier
from archnas.errors import ConfigError
from archnas.nas.phase import Experiment, Phase
from archnas.nas.preflight import check_before_work
from archnas.nas.random_baseline import with_random_baseline
from archnas.nas.registry import algorithm_class, every_recipe_stages, stage_class
from archnas.nas.strategy import Strategy
from archnas.utils import atomic

SEARCH_SECTION, EVAL_SECTION = "nas.search", "nas.eval"  # what --no-search / --no-eval skip


def recipe(strategy: Strategy) -> tuple[type[Phase], ...]:
    """The stages an experiment of `strategy` runs, in order: its own (with the random baseline
    after the eval when `nas.eval.random_baseline.n_archs` asks for one), then `nas.extra_stages`,
    then the registered stages that end every recipe (`plot`)."""
    stages = with_random_baseline(tuple(strategy.phases), strategy.conf)
    always = every_recipe_stages()
    for name in strategy.conf.nas.extra_stages:
        cls = stage_class(name)
        cls.check_config(strategy.conf)
        if cls in always:
            raise ConfigError(f"nas.extra_stages: {name!r} ends every recipe already; leave it out (--skip {name} "
                              "skips it)")
        if any(s.name == name for s in stages):
            raise ConfigError(f"nas.extra_stages: {name!r} is named twice or is already a stage of {strategy.name} "
                              f"({', '.join(s.name for s in strategy.phases)})")
        stages += (cls,)
    for cls in always:
        cls.check_config(strategy.conf)
        stages += (cls,)
    return stages


@dataclass(frozen=True)
class StageSelection:
    """Which stages of a recipe run: the command line's `--stages` (only these), `--skip`,
    `--no-search` (every stage whose section is nas.search) and `--no-eval` (nas.eval)."""

    only: Optional[tuple[str, ...]] = None
    skip: tuple[str, ...] = ()
    no_search: bool = False
    no_eval: bool = False

    def flags(self) -> list[str]:
        """The selection as command-line flags."""
        return [*(["--stages", ",".join(self.only)] if self.only is not None else []),
                *(["--skip", ",".join(self.skip)] if self.skip else []),
                *(["--no-search"] if self.no_search else []), *(["--no-eval"] if self.no_eval else [])]

    def check(self, names: Sequence[str], whose: str) -> None:
        """Every stage named is one of `names` (the recipe of `whose`), else a ConfigError naming them."""
        for flag, given in (("--stages", self.only or ()), ("--skip", self.skip)):
            unknown = [n for n in given if n not in names]
            if unknown:
                raise ConfigError(f"{flag}: no stage named {unknown[0]!r}; the stages of {whose} are "
                                  f"{', '.join(names)}")

    def picks(self, stage: type[Phase]) -> bool:
        section = stage.section_path()
        return ((self.only is None or stage.name in self.only) and stage.name not in self.skip
                and not (self.no_search and section == SEARCH_SECTION)
                and not (self.no_eval and section == EVAL_SECTION))

    def works(self, stage: type[Phase]) -> bool:
        """Whether it picks `stage` as work of its own: a stage that ends every recipe (`plot`)
        counts only when `--stages` names it, so a selection that leaves nothing else is refused."""
        return self.picks(stage) and (not stage.in_every_recipe or (self.only is not None and stage.name in self.only))

    def pick(self, stages: Sequence[type[Phase]], whose: str) -> list[str]:
        """The names of the stages that run (checked; at least one that `works`, else a ConfigError)."""
        names = [s.name for s in stages]
        self.check(names, whose)
        picked = [s.name for s in stages if self.picks(s)]
        if not any(self.works(s) for s in stages):
            raise ConfigError(f"{' '.join(self.flags())}: that leaves none of the stages of {whose} "
                              f"({', '.join(names)}), so nothing would run; drop one of them")
        return picked


@dataclass
class ExperimentResult:
    algorithm: str
    exp_dir: Path
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)  # result.json's entries, by stage name
    report: list[str] = field(default_factory=list)  # what the stages that ran say at the end (`Phase.report`)

    def stage(self, name: str) -> dict[str, Any]:
        """A stage's summary; empty when it did not run."""
        return self.stages.get(name, {})

    def final(self) -> dict[str, Any]:
        """The summary of the stage that trained the final network (the eval; enot's tune): the
        last that records a test accuracy; empty when none ran."""
        return next((s for s in reversed(self.stages.values()) if isinstance(s, dict) and "test_top1" in s), {})

    def to_json(self) -> dict[str, Any]:
        return {"algorithm": self.algorithm, **self.stages}


class ExperimentRunner:
    def __init__(self, run: RunContext, force: bool = False, restart: bool = False):
        """`restart` (`--restart`): every stage that runs starts over, its old folder kept as
        `<stage>.old-<k>`; stages left out (`--stages`, `--skip`, ...) are not touched."""
        self.run_context = run
        self.strategy = algorithm_class(run.conf.nas.algo)(run.conf)
        self.experiment = Experiment(run, self.strategy, force, restart=restart)

    def run(self, selection: StageSelection = StageSelection()) -> ExperimentResult:
        stages = [cls(self.experiment) for cls in recipe(self.strategy)]
        picked = set(selection.pick([type(s) for s in stages], self.strategy.name))
        chosen = [s for s in stages if s.name in picked]
        check_before_work(self.experiment, chosen)  # what would be refused late, refused now
        needed = inputs_of(chosen, stages)
        result = ExperimentResult(self.strategy.name, self.run_context.exp_dir)
        for stage in stages:
            if stage.name in picked:
                stage.restart = self.experiment.restart
                outcome = stage.execute()
                if stage.worked:
                    self.experiment.ran.append(stage.name)
            elif stage.name in needed:
                outcome = stage.load_finished()
                if outcome is None:
                    continue
            else:
                continue
            self.experiment.results[stage.name] = outcome
            if stage.name in picked:
                summary = stage.summary(outcome)
                result.stages[stage.name] = summary
                result.report += stage.report(summary)
        if self.run_context.is_main:
            atomic.write_json(self.run_context.exp_dir / "result.json", result.to_json(),
                              only_if_changed=True)  # a rerun of a finished experiment writes nothing
        barrier()  # result.json is written
        return result


def inputs_of(chosen: Sequence[Phase], stages: Sequence[Phase]) -> set[str]:
    """The names of the stages the chosen ones read, directly or through a stage they read."""
    by_name = {s.name: s for s in stages}
    needed: set[str] = set()
    todo = [name for s in chosen for name in s.inputs()]
    while todo:
        name = todo.pop()
        if name in by_name and name not in needed:
            needed.add(name)
            todo += by_name[name].inputs()
    return needed
