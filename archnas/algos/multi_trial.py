"""Multi-trial search: a sampler proposes architectures of the space, each is trained stand-alone
from scratch as a trial, and the sampler learns from their val top-1 (NNI's multi-trial
strategies: random, grid search, regularized evolution, TPE; and NSGA-II).

    space (cells or a module) -> cost tables, latency_stats.json
      -> batches of genomes (`nas.search.multi_trial.strategy`: regularized_evolution | random | grid
         | optuna_tpe | optuna_nsga2 | evolution), each allowed by the cost limits before anything
         trains, each trained as a trial (`search/trial_<nnn>/`, in this process or on Ray)
      -> trials.json / trials.csv, pareto.csv / pareto.png, arch.yaml (the best), search_result.json
      -> eval: the best retrained at the eval macro

It is spos's subnet search (`archnas.nas.subnet_search`: the sampler, the cost tables, the
limits, the Pareto front, the marker) with the `Standalone` evaluator of the one selection loop
(`archnas.nas.selection`) in place of inherited weights. A trial (`Trial` below) trains the
network of its genome at the search macro with `nas.search.trainer` on the search train split
and scores it by its last epoch's val top-1 on the search val split; its RNGs are seeded from
(common.seed, its folder) as every phase's are, so its result depends on nothing but the config,
its number and its genome: in any order, in any process, 2 Ray workers or 1 process give the
same results. Its marker (`trial.json`, written last) makes a rerun read it back instead of
training it again; an interrupted one resumes from its checkpoint.

The search checkpoints after every batch: the sampler's state, the cost tables and the record
of every finished trial (number, genome, accuracy, training seconds). The budget:
- `max_trials`: at most that many trials; the batch that reaches it is cut to fit.
- `max_minutes`: checked between batches against the summed training time the finished trials
  recorded (each trial's `train_time`, fixed once it finished), not the wall clock: the decision
  to ask another batch is a function of the checkpointed record, so a resumed search stops
  after the same batch as it would have uninterrupted (the batch in flight when the budget runs
  out is finished first). On Ray the trials of a batch train at once, so the wall time is less
  than the budget; it counts training minutes, which do not depend on the number of workers.
Both are recorded in search_result.json (`stopped_by`).
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from typing import Any, ClassVar, Optional, Sequence

from archnas.context import PhaseContext, RunContext
from archnas.errors import ConfigError
from archnas.latency import Limits, cost_model
from archnas.latency.table import row_to_arch
from archnas.nas.cost_search import space_costs
from archnas.nas.evaluater import Evaluater
from archnas.nas.phase import Experiment, Phase
from archnas.nas.registry import algorithm_class, register_algorithm
from archnas.nas.samplers import (
    EvolutionSettings,
    GridSettings,
    Nsga2Settings,
    RandomSettings,
    RegularizedEvolutionSettings,
    Row,
    TpeSettings,
    sampler_class,
)
from archnas.nas.searcher import SearchResult, load_data
from archnas.nas.selection import Standalone, select
from archnas.nas.spaces import space_of
from archnas.nas.strategy import Strategy
from archnas.nas.subnet_search import CostTables, SubnetSearchPhase
from archnas.config.schema import EvalMode
from archnas.stats import dataset_info
from archnas.training.trainer import Trainer
from archnas.trials import Trial as RunnableTrial
from archnas.utils import atomic, reads
from archnas.utils.seeding import derive_seed

SECTION = "nas.search.multi_trial"
TRIAL_FILE = "trial.json"
TRIALS_JSON, TRIALS_CSV = "trials.json", "trials.csv"


@dataclass
class MultiTrialConf:
    """`nas.search.multi_trial`: the sampler, its settings (the key of its name) and the budget."""

    # the sampler (archnas.nas.samplers): regularized_evolution | random | grid | optuna_tpe |
    # optuna_nsga2 (accuracy against nas.search.cost.pareto: a Pareto front) | evolution (SPOS's)
    strategy: str = "regularized_evolution"
    max_trials: Optional[int] = 100  # trials trained at most (null: the sampler's own length); at least 1
    # minutes of training summed over the finished trials, checked between batches (null: none)
    max_minutes: Optional[float] = None
    regularized_evolution: RegularizedEvolutionSettings = field(default_factory=RegularizedEvolutionSettings)
    random: RandomSettings = field(default_factory=RandomSettings)  # distinct uniform draws
    grid: GridSettings = field(default_factory=GridSettings)  # every architecture of a small space, in order
    optuna_tpe: TpeSettings = field(default_factory=TpeSettings)  # Optuna's TPE on the val top-1
    optuna_nsga2: Nsga2Settings = field(default_factory=Nsga2Settings)  # Optuna's NSGA-II: val top-1 vs pareto cost
    evolution: EvolutionSettings = field(default_factory=EvolutionSettings)  # SPOS's evolution


def trial_folder(number: int) -> str:
    return f"search/trial_{number:03d}"


class Trial(Phase):
    """Trial `number` (1-based): the network of `row` trained from scratch at the search macro on
    the search split, scored by its last epoch's val top-1; marked by `trial.json`. It reads no
    key of `nas.search.multi_trial` nor the cost limits, so changing the budget or a limit reuses it."""

    section_key = "nas.search"
    marker = TRIAL_FILE
    unread_keys = ("cost", "ranking_check")
    algorithm_keys = ()

    def __init__(self, experiment: Experiment, number: int, row: Row):
        super().__init__(experiment, trial_folder(number))
        self.number, self.row = number, tuple(row)

    def recorded_row(self) -> Optional[tuple[int, ...]]:
        try:
            return tuple(json.loads(reads.read_text(self.dir / self.marker))["result"]["row"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def stale(self) -> bool:
        """A folder of this number that trained another genome (the config changed what the sampler
        proposes): start over, keeping it."""
        recorded = self.recorded_row()
        return super().stale() or (recorded is not None and recorded != self.row)

    def finished(self) -> Optional[dict[str, Any]]:
        done = super().finished()
        return done if done is not None and tuple(done.get("result", {}).get("row", ())) == self.row else None

    def work(self, ctx: PhaseContext) -> dict[str, Any]:
        conf = ctx.conf
        data = load_data(ctx, conf.loader)
        space = space_of(conf)
        arch = space.genome(data.info).decode(self.row)
        ctx.write(lambda: space.save(ctx.dir, arch, data.info))
        net = space.network(arch, data.info)
        trainer = Trainer(conf.trainer, net, ctx, checkpointer=self.checkpointer(ctx, space.fingerprint(arch, data.info)))
        history = trainer.fit(data.loader("train", training=True), data.loader("val", training=False))
        result = {"number": self.number, "row": list(self.row), "arch": space.record(arch),
                  "val_top1": (history.last or {}).get("val_top1"), "best_val_top1": history.best_value,
                  "params": sum(p.numel() for p in net.parameters()),
                  "train_time": sum(r.get("epoch_time", 0.0) for r in history.records)}
        self.write_marker(ctx, {"result": result})
        return result

    def load(self, done: dict[str, Any]) -> dict[str, Any]:
        return done["result"]


def _trial(run: RunContext, number: int, row: Row, force: bool) -> Trial:
    return Trial(Experiment(run, algorithm_class(run.conf.nas.algo)(run.conf), force), number, row)


def run_trial(run: RunContext, number: int, row: Row, force: bool) -> dict[str, Any]:
    """Trial `number` as an independent trial (`archnas.trials`): built from the run alone, so the
    same call runs here or in a Ray worker; finished, it is read back; interrupted, resumed."""
    return _trial(run, number, row, force).execute()


def finished_trial(run: RunContext, number: int, row: Row, force: bool) -> Optional[dict[str, Any]]:
    return _trial(run, number, row, force).load_finished()


class TrialRecord:
    """Every finished trial of the search in the order asked, as checkpoint state: what
    trials.json lists and what the minutes budget is judged on."""

    def __init__(self) -> None:
        self.trials: list[dict[str, Any]] = []

    @property
    def seconds(self) -> float:
        return sum(float(t["train_time"]) for t in self.trials)

    def state_dict(self) -> dict[str, Any]:
        return {"trials": json.loads(json.dumps(self.trials))}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.trials = list(state["trials"])


class MultiTrialSearch(SubnetSearchPhase):
    """`search` of multi_trial: a sampler over the space's genomes, each trained stand-alone."""

    scored_as: ClassVar[str] = "stand-alone"

    def inputs(self) -> tuple[str, ...]:
        return ()

    def work(self, ctx: PhaseContext) -> SearchResult:
        conf = ctx.conf
        section = self.strategy.section
        space = space_of(conf)
        info = dataset_info(ctx.run.conf.dataset, ctx.run.conf.common.cache_dir)
        genome = space.genome(info)
        costs = space_costs(conf.cost, space, genome, info, ctx.seed)
        limits = Limits.from_conf(conf.cost)
        names = limits.reported(conf.cost.pareto)
        search = self.sampler(section, genome, costs, limits, conf.cost.pareto,
                              derive_seed(ctx.seed, self.name, "sampler"))
        record = TrialRecord()
        checkpointer = self.checkpointer(ctx, space.fingerprint(info=info))
        checkpointer.register("search", search)
        checkpointer.register("cost_tables", CostTables(costs))
        checkpointer.register("trials", record)
        resumed = checkpointer.resume() if ctx.resume else None
        ctx.commit()  # the trials' folders are inside this phase's
        if resumed is None:
            self.start_tables(ctx, space, costs, limits, names, checkpointer)
        else:
            ctx.log.info(f"resumed the search from {resumed.path} after batch {search.generation}, "
                         f"{len(record.trials)} trials finished")
        budget = self.budget_text(section)

        def report_trial(i: int, row: Row, result: dict[str, Any]) -> None:
            ctx.log.info(f"trial {i + 1}{budget}: val top-1 {result['val_top1']:.2%}, {result['params']:,} parameters, "
                         f"{result['train_time']:.1f}s ({trial_folder(i + 1)})")

        def trial(i: int, row: Row) -> RunnableTrial:
            return RunnableTrial(f"trial_{i + 1:03d}", ctx.run, run_trial, (i + 1, row, self.force), finished_trial)

        results: dict[int, dict[str, Any]] = {}  # the open batch's, by candidate index

        def finished(i: int, row: Row, result: dict[str, Any]) -> None:
            results[i] = result
            report_trial(i, row, result)

        standalone = Standalone(trial, lambda result: float(result["val_top1"]), ctx.run.conf.common.ray, finished)

        def evaluate(rows: Sequence[Row], start: int) -> list[float]:
            scores = standalone(rows, start)
            record.trials += [{**results.pop(start + k), "generation": search.generation} for k in range(len(rows))]
            self.write_trials(ctx, record, genome.specs, costs, names)
            return scores

        stopped = select(search, evaluate, checkpointer, ctx.log, section.max_trials, self.deadline(section, record),
                         probe=ctx.probe)
        if stopped is not None:
            ctx.log.info(f"the search stops: {stopped}")
        self.write_trials(ctx, record, genome.specs, costs, names)
        extra = {"trials": len(record.trials), "trial_minutes": record.seconds / 60, "stopped_by": stopped,
                 "max_trials": section.max_trials, "max_minutes": section.max_minutes}
        return self.finish(ctx, space, genome, info, space.fingerprint(info=info), search, costs, limits, names, extra)

    @staticmethod
    def budget_text(section: MultiTrialConf) -> str:
        return "" if section.max_trials is None else f"/{section.max_trials}"

    @staticmethod
    def deadline(section: MultiTrialConf, record: TrialRecord) -> Any:
        """`stop` of the selection loop: the minutes budget, judged on the recorded training time."""
        if section.max_minutes is None:
            return None

        def stop() -> Optional[str]:
            spent = record.seconds / 60
            if spent < section.max_minutes:
                return None
            return f"{spent:.2f} minutes of training recorded by {len(record.trials)} trials, the budget is " \
                   f"{section.max_minutes:g}"
        return stop

    def write_trials(self, ctx: PhaseContext, record: TrialRecord, specs: Any, costs: Any, names: list[str]) -> None:
        """trials.json and trials.csv: every finished trial in the order asked, with its costs."""
        if not ctx.is_main:
            return
        rows = [{**t, **{n: costs.model(n).cost(row_to_arch(specs, tuple(t["row"]))) for n in names},
                 "folder": trial_folder(t["number"])} for t in record.trials]
        atomic.write_json(ctx.dir / TRIALS_JSON, {"trials": rows})
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["number", "generation", "val_top1", "best_val_top1", "train_time",
                         *[f"{n} ({cost_model(n).unit})" for n in names], "folder", "arch"])
        for r in rows:
            writer.writerow([r["number"], r["generation"], r["val_top1"], r["best_val_top1"], f"{r['train_time']:.3f}", *[r[n] for n in names], r["folder"],
                             json.dumps(r["arch"], default=str)])
        atomic.write_text(ctx.dir / TRIALS_CSV, buffer.getvalue())

    def report(self, summary: dict[str, Any]) -> list[str]:
        return super().report(summary) + [
            f"  {summary['trials']} trials ({summary['trial_minutes']:.1f} minutes of training)"
            + (f", stopped: {summary['stopped_by']}" if summary.get("stopped_by") else "")]


@register_algorithm
class MultiTrial(Strategy):
    name = "multi_trial"
    config_class = MultiTrialConf
    phases = (MultiTrialSearch, Evaluater)

    def check(self) -> None:
        super().check()
        s, search = self.section, self.conf.nas.search
        sampler_class(s.strategy, f"{SECTION}.strategy").check_settings(getattr(s, s.strategy, None),
                                                                          f"{SECTION}.{s.strategy}")
        if s.max_trials is not None and s.max_trials < 1:
            raise ConfigError(f"{SECTION}.max_trials: {s.max_trials}; a search trains at least 1 trial (null: as many "
                              "as the sampler proposes)")
        if s.max_minutes is not None and not s.max_minutes > 0:
            raise ConfigError(f"{SECTION}.max_minutes: {s.max_minutes}; expected a positive number of minutes (null: "
                              "no time budget)")
        if search.trainer.epochs < 1:
            raise ConfigError(f"nas.search.trainer.epochs: {search.trainer.epochs}; each trial trains at least 1 epoch")
        if search.ranking_check.n_archs:
            raise ConfigError("nas.search.ranking_check.n_archs: multi_trial trains every candidate stand-alone, there "
                              "is no supernet ranking to check; leave it 0")
        if self.conf.nas.eval.mode == EvalMode.tune:
            raise ConfigError("nas.eval.mode: tune fine-tunes a trained supernet, but multi_trial trains none; use "
                              "nas.eval.mode=retrain")
