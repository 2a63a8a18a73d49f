"""The dry run (`--dry-run`, `archnas plan`): what each stage of an experiment will cost, learned
from a few steps of each, with nothing written under the results folder.

    plan = dry_run(conf, StageSelection(), steps=5, warmup=1)   # a Plan: per stage and the space

Every stage the selection picks (and every stage one of them reads) runs as the run would run
it, `Phase.execute` in the recipe's order, with the same config, but in a temporary experiment
folder (deleted at the end) and with a `Probe` on the run (`archnas.training.probe`): each
Trainer a stage builds takes `warmup` + `steps` steps and stops, after timing a validation pass
and a checkpoint save; a selection (spos's subnet search, the ranking check, random search's
candidates, macro combinations) scores its first `steps` candidates and stops, a stand-alone
trial's training stopped by its own probe. A stage with neither runs whole. So the model, the
data, the trainer and the search are built by the stage's own code, never a copy.

A stage's estimate is what it did before training (data, model, cost tables: once), then every
step at the median measured step time, the validation passes and checkpoint saves the whole
training runs; times the candidates of a selection; its range puts every step at the fastest and
the slowest step measured. Its peak memory is the resident set while it ran (CPU) or
`torch.cuda.max_memory_allocated` (GPU): the steps of one batch hold what every step holds.

What a probed stage hands on is a stand-in: the weights it trained for a few steps (its
checkpoint: a search phase reading the pretrain's supernet gets them), and, for a search, the
space's most expensive architecture by parameters (the eval's real architecture is known only
after the search; the most expensive one bounds its time and memory). A stage that reads a
trained network (an export of the eval's) is not run: the dry run trains none.

For a search space, the exact cost models (parameters, multiply-adds) over its architectures
(min, median, max: `SpaceCosts.statistics`, as `latency_stats.json` has them; over a sample of
counted networks for DARTS cells, whose costs do not add up per choice), and whether its
cheapest and its most expensive architecture build in the eval's space, take a training step
under the eval's trainer settings at the eval's batch size, and export to ONNX.
"""

from __future__ import annotations

import copy
import logging
import random
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Optional, Sequence

from archnas.config import ExperimentConf
from archnas.context import RunContext
from archnas.errors import ConfigError, UsageError
from archnas.export.onnx import onnx_bytes
from archnas.latency import TimingProtocol, cost_model, exact_cost_models
from archnas.latency.table import random_rows, row_to_arch, space_size
from archnas.nas.cost_search import space_costs
from archnas.nas.phase import Experiment, Phase
from archnas.nas.preflight import check_before_work
from archnas.nas.registry import algorithm_class
from archnas.nas.runner import SEARCH_SECTION, StageSelection, inputs_of, recipe
from archnas.nas.searcher import SearchPhase, SearchResult, load_data
from archnas.nas.spaces import eval_space, space_of
from archnas.stats import dataset_info
from archnas.training.probe import Probe, ProbeDone
from archnas.training.trainer import Trainer
from archnas.utils.memory import PeakMemory
from archnas.utils.seeding import derive_seed


@dataclass
class StagePlan:
    """One stage's estimate (see the module docstring); `how`: `training`, `selection`
    (candidates scored on inherited weights), `trials` (candidates trained one after another),
    `whole` (no training to probe: it ran through), or `not run` (`note` says why)."""

    name: str
    how: str
    estimate_s: Optional[float] = None
    range_s: Optional[tuple[float, float]] = None
    setup_s: Optional[float] = None  # before the first step or candidate: data, model, tables
    training: Optional[dict[str, Any]] = None  # TrainerMeasure.to_dict()
    candidates: Optional[int] = None
    candidate_s: Optional[dict[str, float]] = None
    peak_memory: Optional[int] = None
    probe_s: float = 0.0  # what the dry run of the stage took
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


@dataclass
class Plan:
    algorithm: str
    dataset: str
    device: str
    steps: int
    warmup: int
    stages: list[StagePlan] = field(default_factory=list)
    space: Optional[dict[str, Any]] = None

    def total_s(self) -> float:
        return sum(s.estimate_s or 0.0 for s in self.stages)

    def to_dict(self) -> dict[str, Any]:
        return {"algorithm": self.algorithm, "dataset": self.dataset, "device": self.device, "steps": self.steps,
                "warmup": self.warmup, "stages": [s.to_dict() for s in self.stages],
                "estimate_s": self.total_s(), "space": self.space}


def dry_run(conf: ExperimentConf, selection: StageSelection = StageSelection(), steps: int = 5, warmup: int = 1,
            argv: Sequence[str] = ()) -> Plan:
    """The plan of the experiment `conf` describes (the stages `selection` picks), measured in a
    temporary folder that is deleted before this returns. A stage that cannot be built or
    stepped is a ConfigError naming it."""
    if steps < 1 or warmup < 0:
        raise ConfigError(f"--dry-run-steps {steps} / --dry-run-warmup {warmup}: expected at least 1 timed step "
                          "and 0 or more warm-up steps")
    conf = copy.deepcopy(conf)
    conf.common.ray.enabled = False  # trials run here, one after another, each probed
    with tempfile.TemporaryDirectory(prefix="archnas-dry-run-") as tmp:
        conf.common.results_dir = tmp
        run = RunContext.create(conf, Path(tmp) / conf.common.experiment_name, list(argv))
        run.probe = Probe(steps=steps, warmup=warmup)
        quiet(run)
        try:
            strategy = algorithm_class(conf.nas.algo)(conf)
            experiment = Experiment(run, strategy)
            stages = [cls(experiment) for cls in recipe(strategy)]
            picked = set(selection.pick([type(s) for s in stages], strategy.name))
            chosen = [s for s in stages if s.name in picked]
            try:
                check_before_work(experiment, chosen)
            except UsageError as exc:
                raise ConfigError(f"dry run, before the first stage: {exc}") from None
            plan = Plan(strategy.name, conf.dataset.name, str(run.device), steps, warmup)
            needed = inputs_of(chosen, stages)
            searches = any(s.section_path() == SEARCH_SECTION for s in stages)
            space = SpaceSummary(conf) if searches else None
            probed: set[str] = set()
            for stage in stages:
                if stage.name in picked or stage.name in needed:
                    entry = probe_stage(stage, probed, space)
                    if stage.name in picked:
                        plan.stages.append(entry)
            if space is not None:
                plan.space = space.report(run)
        finally:
            run.log.handlers.clear()
    return plan


def quiet(run: RunContext) -> None:
    """The stages' own log lines are not the plan: warnings only, on stderr (stdout is the plan,
    a JSON object with --json)."""
    run.log.setLevel(logging.WARNING)
    for handler in run.log.handlers:
        if isinstance(handler, logging.StreamHandler):
            handler.setStream(sys.stderr)


def probe_stage(stage: Phase, probed: set[str], space: Optional["SpaceSummary"]) -> StagePlan:
    """Run `stage` under the run's probe and turn what it measured into its `StagePlan`."""
    experiment, probe = stage.experiment, stage.run.probe
    unread = [name for name in stage.inputs() if name in probed and _stage_of(experiment, name).network_file]
    if unread:
        return StagePlan(stage.name, "not run", note=f"it reads the network {unread[0]} trains, which a dry run "
                                                     "does not train")
    stand_in = [n for n in stage.inputs() if n in probed and issubclass(_stage_of(experiment, n), SearchPhase)]
    probe.reset()
    start = time.perf_counter()
    stopped = False
    try:
        with PeakMemory(stage.run.device) as mem:
            try:
                outcome = stage.execute()
            except ProbeDone:
                stopped = True
    except UsageError as exc:
        raise ConfigError(f"dry run, stage {stage.name}: {exc}") from None
    except (RuntimeError, ValueError, TypeError, IndexError) as exc:  # a model or step torch refuses (or OOM)
        raise ConfigError(f"dry run, stage {stage.name}: cannot be built or stepped: {type(exc).__name__}: "
                          f"{str(exc).splitlines()[0] if str(exc) else ''}") from None
    wall = time.perf_counter() - start
    entry = StagePlan(stage.name, "whole", peak_memory=mem.peak_bytes, probe_s=wall)
    if stand_in:
        entry.note = (f"on the space's largest architecture by parameters ({stand_in[0]} picks the real one: "
                      "an upper bound)")
    if not stopped:
        experiment.results[stage.name] = outcome
        entry.estimate_s = wall
        entry.range_s = (wall, wall)
        entry.note = " ".join(filter(None, ["no training to probe: it ran whole;", entry.note]))
        return entry
    probed.add(stage.name)
    measure, extra = probe.trainer, probe.extra
    if isinstance(stage, SearchPhase) and space is not None:
        experiment.results[stage.name] = space.stand_in(stage.run)
    started = measure.started if measure is not None else extra.get("started", start)
    entry.setup_s = max(started - start, 0.0)
    if measure is not None:
        entry.training = measure.to_dict()
        one = (measure.estimate(), measure.estimate(min(measure.steps())), measure.estimate(max(measure.steps())))
    if "candidates" in extra:
        n = extra["candidates"]
        entry.candidates = n
        if measure is not None:  # each candidate a training, one after another
            entry.how = "trials"
            entry.estimate_s = n * (entry.setup_s + one[0])
            entry.range_s = (n * (entry.setup_s + one[1]), n * (entry.setup_s + one[2]))
        else:
            seconds = extra["candidate_s"]
            entry.how = "selection"
            entry.candidate_s = {"median": statistics.median(seconds), "min": min(seconds), "max": max(seconds),
                                 "measured": len(seconds)}
            entry.estimate_s = entry.setup_s + n * statistics.median(seconds)
            entry.range_s = (entry.setup_s + n * min(seconds), entry.setup_s + n * max(seconds))
        return entry
    entry.how = "training"
    entry.estimate_s = entry.setup_s + one[0]
    entry.range_s = (entry.setup_s + one[1], entry.setup_s + one[2])
    return entry


def _stage_of(experiment: Experiment, name: str) -> type[Phase]:
    return next(cls for cls in recipe(experiment.strategy) if cls.name == name)


class SpaceSummary:
    """The search space's exact costs over its architectures, the stand-in architecture a probed
    search hands on, and the check of its cheapest and most expensive architectures. The space
    is the eval's (`eval_space`: the networks that get trained; the search's own unless
    `nas.eval.space` names another macro)."""

    def __init__(self, conf: ExperimentConf, samples: int = 8):
        """`samples`: architectures counted one by one where the costs do not add up over the
        choices (DARTS cells: a node's kept inputs change what its ops cost); a space over a module
        uses its cost tables, as a spos search does."""
        self.conf, self.samples = conf, samples

    @cached_property
    def info(self) -> Any:
        return dataset_info(self.conf.dataset, self.conf.common.cache_dir)

    @cached_property
    def space(self) -> Any:
        return eval_space(self.conf)

    @cached_property
    def genome(self) -> Any:
        return self.space.genome(self.info)

    @cached_property
    def stats(self) -> dict[str, dict[str, Any]]:
        """Counted when first asked (after the first stage: a stage that cannot build says so first)."""
        if self.space.kind == "modules":
            costs = space_costs(self.conf.nas.search.cost, self.space, self.genome, self.info, self.conf.common.seed)
            return {name: costs.statistics(name) for name in exact_cost_models()}
        return self.sampled(self.samples)

    def sampled(self, n: int) -> dict[str, dict[str, Any]]:
        """Each exact cost model (`archnas.latency`) on the networks of `n` random architectures
        (a seeded draw): min, median and max of the sample, and the architectures at its ends."""
        specs, shape = self.genome.specs, [self.info.channels, *self.info.image_size]
        rng = random.Random(derive_seed(self.conf.common.seed, "dry_run", "space"))
        archs = [row_to_arch(specs, row) for row in random_rows(specs, n, rng)]
        counts = []
        for choices in archs:
            net = self.space.network(self.genome.arch_of(choices), self.info)
            counts.append({name: cost_model(name).measure(net, shape, TimingProtocol()) for name in exact_cost_models()})
        over = f"sampled ({n} random architectures of {space_size(specs):,}, each counted)"
        stats = {}
        for name in exact_cost_models():
            values = [c[name] for c in counts]
            low, high = values.index(min(values)), values.index(max(values))
            stats[name] = {"min": values[low], "median": statistics.median(values), "max": values[high],
                           "over": over, "archs": space_size(specs), "arch_min": archs[low], "arch_max": archs[high]}
        return stats

    def arch(self, end: str) -> Any:
        """`end`: `arch_min` or `arch_max` by parameters."""
        return self.genome.arch_of(self.stats["params"][end])

    def stand_in(self, run: RunContext) -> SearchResult:
        return SearchResult(self.arch("arch_max"), run.exp_dir / "search", None, {})

    def report(self, run: RunContext) -> dict[str, Any]:
        costs = {name: {k: s[k] for k in ("min", "median", "max", "over")} for name, s in self.stats.items()}
        checks = {}
        ctx = run.phase("dry_run_archs", self.conf.nas.eval)  # never committed: nothing is written
        try:
            data = load_data(ctx, self.conf.nas.eval.loader)
            batch = next(iter(data.loader("train", training=True).epoch(0)))
            for end, name in (("arch_min", "cheapest"), ("arch_max", "largest")):
                checks[name] = self.check(ctx, self.arch(end), batch)
                checks[name]["arch"] = self.space.record(self.arch(end))
        finally:
            ctx.close()
        return {"space": self.space.title, "archs": self.stats["params"]["archs"], "costs": costs, **checks}

    def check(self, ctx: Any, arch: Any, batch: Any) -> dict[str, Any]:
        """Build the architecture's network as the eval does, one training step of it at the
        eval's batch size and trainer settings, and its ONNX export (one image)."""
        space = eval_space(self.conf)
        try:
            net = space.network(space.check(arch, self.info), self.info)
            result: dict[str, Any] = {"params": sum(p.numel() for p in net.parameters()), "build": True}
            trainer = Trainer(self.conf.nas.eval.trainer, net, ctx)
            with PeakMemory(ctx.device) as mem:
                start = time.perf_counter()
                trainer.weight_step(batch)
                result["step_s"] = time.perf_counter() - start
            result.update(fit=True, step_peak_memory=mem.peak_bytes)
        except UsageError as exc:
            raise ConfigError(f"dry run, space {self.space.title}: an architecture cannot be built: {exc}") from None
        except (RuntimeError, ValueError, TypeError, IndexError) as exc:
            raise ConfigError(f"dry run, space {self.space.title}: {self.space.describe(arch)} cannot be built or "
                              f"trained: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None
        try:
            result["onnx_bytes"] = len(onnx_bytes(trainer.base_model, batch[0][:1].float()))
            result["onnx"] = True
        except Exception as exc:  # noqa: BLE001  (any exporter failure is the answer: it does not export)
            result.update(onnx=False, onnx_error=f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
        return result
