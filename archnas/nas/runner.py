"""ExperimentRunner: search, then evaluate, in one experiment folder; algorithms plug in by name.

An algorithm is one small module that subclasses `ExperimentRunner`, overrides the factory hooks
it needs (model desc builder, trainer class, finalizers, searcher, evaluater) and registers
itself:

    @register_algorithm("darts")
    class DartsRunner(ExperimentRunner):
        ...

`run()` writes `results/<experiment>/search/`, `eval/` and `result.json`. Each phase resumes
from its checkpoint when interrupted and is skipped when its completion marker says it finished.

Under torchrun every rank runs the same experiment (`archnas.distributed`): rank 0 writes, the
others wait at a barrier after each phase. `--seeds 0,1,2` repeats the whole experiment once per
seed in `seed_<s>/` subfolders, as independent trials (`archnas.trials`, on Ray when
`common.ray.enabled`).
"""

from __future__ import annotations

import copy
import csv
import io
import json
import math
import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, TypeVar

from archnas.config import ExperimentConf, load_config
from archnas.context import PhaseContext, RunContext
from archnas.descs.builder import ModelDescBuilder
from archnas.descs.model_desc import ModelDesc
from archnas.distributed import DistSession, barrier, distributed_session, ranks_from_env
from archnas.errors import ConfigError
from archnas.nas.arch_trainer import ArchTrainer
from archnas.nas.evaluater import METRICS_FILE, Evaluater
from archnas.nas.finalizers import Finalizers, RandomFinalizers, build_finalizers
from archnas.nas.search_combinations import SearchCombinations
from archnas.nas.searcher import RESULT_FILE, Searcher, SearchResult, check_completed
from archnas.training.signals import RunInterrupted
from archnas.trials import Trial, check_ray_conf, run_trials
from archnas.utils import atomic
from archnas.utils.memory import PeakMemory

_ALGORITHMS: dict[str, type["ExperimentRunner"]] = {}
PEAK_MEMORY_FILE = "peak_memory.json"
T = TypeVar("T")


def register_algorithm(name: str) -> Callable[[type["ExperimentRunner"]], type["ExperimentRunner"]]:
    def add(cls: type["ExperimentRunner"]) -> type["ExperimentRunner"]:
        if name in _ALGORITHMS:
            raise ValueError(f"algorithm {name!r} is registered twice")
        _ALGORITHMS[name] = cls
        cls.algorithm = name
        return cls

    return add


def algorithm_names() -> list[str]:
    import archnas.algos  # noqa: F401  (registers the built-in algorithms)

    return sorted(_ALGORITHMS)


def runner_class(name: str) -> type["ExperimentRunner"]:
    names = algorithm_names()
    if name not in _ALGORITHMS:
        raise ConfigError(f"nas.algo: unknown algorithm {name!r}; registered: {', '.join(names)}")
    return _ALGORITHMS[name]


@dataclass
class ExperimentResult:
    algorithm: str
    exp_dir: Path
    search: dict[str, Any] = field(default_factory=dict)
    eval: dict[str, Any] = field(default_factory=dict)


class ExperimentRunner:
    algorithm = "base"
    searches = True  # False: the algorithm has no search phase (manual)
    # what `nas.search.finalizer.type: default | random` build; an algorithm sets its own
    default_finalizers: type[Finalizers] = Finalizers
    random_finalizers: type[RandomFinalizers] = RandomFinalizers

    def __init__(self, ctx: RunContext, force: bool = False):
        self.ctx = ctx
        self.conf: ExperimentConf = ctx.conf
        self.force = force

    # -- factory hooks: an algorithm overrides what it changes ---------------------------------

    def model_desc_builder(self) -> ModelDescBuilder:
        return ModelDescBuilder()

    def trainer_class(self) -> type[ArchTrainer]:
        return ArchTrainer

    def finalizers(self) -> Finalizers:
        search = self.conf.nas.search
        return build_finalizers(search.finalizer, search.model_desc.max_final_edges, self.conf.common.seed,
                                self.default_finalizers, self.random_finalizers)

    def searcher(self) -> Searcher:
        return Searcher(self.model_desc_builder(), self.trainer_class(), self.finalizers(), force=self.force)

    def evaluater(self) -> Evaluater:
        return Evaluater(self.model_desc_builder(), force=self.force)

    # -- the experiment --------------------------------------------------------------------------

    def phase(self, name: str, section: Any) -> PhaseContext:
        return self.ctx.phase(name, section)

    def run(self, search: bool = True, eval: bool = True) -> ExperimentResult:
        result = ExperimentResult(self.algorithm, self.ctx.exp_dir)
        searched: Optional[ModelDesc] = None
        if search:
            found, result.search = self.run_search()
            searched = found.final_desc
        elif eval and not self.conf.nas.eval.final_desc:
            searched = self.finished_search()
        if eval:
            result.eval = self.run_eval(searched)
        if self.ctx.is_main:
            atomic.write_json(self.ctx.exp_dir / "result.json", {
                "algorithm": result.algorithm, "search": result.search, "eval": result.eval,
            })
        return result

    def run_search(self) -> tuple[SearchResult, dict[str, Any]]:
        ctx = self.phase("search", self.conf.nas.search)
        try:
            found, peak = measure_phase(ctx, ctx.dir / RESULT_FILE, lambda: self.search(ctx))
        finally:
            ctx.close()
        return found, {**found.metrics, "genotype": found.genotype, "final_desc": str(found.final_desc_path),
                       "peak_memory": peak}

    def search(self, ctx: PhaseContext) -> SearchResult:
        """One search, or one per macro combination when `nas.search.combinations.enabled`."""
        if self.conf.nas.search.combinations.enabled:
            return SearchCombinations(self).search(ctx)
        return self.searcher().search(ctx, self.phase)

    def run_eval(self, searched: Optional[ModelDesc]) -> dict[str, Any]:
        ctx = self.phase("eval", self.conf.nas.eval)
        try:
            result, peak = measure_phase(ctx, ctx.dir / METRICS_FILE, lambda: self.evaluater().evaluate(ctx, searched))
        finally:
            ctx.close()
        return {**{k: v for k, v in result.metrics.items() if k != "config"}, "peak_memory": peak}

    def finished_search(self) -> ModelDesc:
        """With --no-search and no nas.eval.final_desc: the result of an earlier search here."""
        folder = self.ctx.exp_dir / "search"
        marker = folder / RESULT_FILE
        if not marker.is_file():
            raise ConfigError(
                f"--no-search: there is no finished search in {folder} and nas.eval.final_desc is null; "
                "give nas.eval.final_desc (a desc file, a genotype string or a name such as DARTS_V2)"
            )
        ctx = PhaseContext(run=self.ctx, name="search", conf=self.conf.nas.search, dir=folder, log=self.ctx.log)
        done = check_completed(ctx, marker, self.force)
        return Searcher.load_result(folder, done).final_desc


def measure_phase(ctx: PhaseContext, marker: Path, work: Callable[[], T]) -> tuple[T, Optional[int]]:
    """`work()` and the peak memory of the phase that did it.

    A rerun skips a finished phase; its peak is then that of the run that did the work, kept in
    the phase folder's peak_memory.json. The phase did work exactly when its completion marker
    changed (every finished phase writes its marker last, with its own timings).
    """
    before = _read_bytes(marker)
    with PeakMemory(ctx.device) as mem:
        out = work()
    barrier()  # DDP: rank 0 has written the phase's files (its marker last) before anyone reads them
    record = ctx.dir / PEAK_MEMORY_FILE
    if _read_bytes(marker) != before:
        if ctx.run.is_main:
            atomic.write_json(record, {"peak_memory": mem.peak_bytes, "device": str(ctx.device)})
        return out, mem.peak_bytes
    try:
        return out, json.loads(record.read_text())["peak_memory"]
    except (OSError, ValueError, KeyError):
        return out, None  # finished by a version that did not record it


def _read_bytes(path: Path) -> Optional[bytes]:
    try:
        return path.read_bytes()
    except OSError:
        return None


# -- the command line -----------------------------------------------------------------------------


def experiment_dir(conf: ExperimentConf) -> Path:
    return Path(conf.common.results_dir).expanduser() / conf.common.experiment_name


def open_experiment_dir(exp_dir: Path, conf: ExperimentConf, is_main: bool) -> None:
    """Create the experiment folder (rank 0), refusing one that holds results when
    `common.resume` is false; every rank leaves with the folder there."""
    if exp_dir.exists() and any(exp_dir.iterdir()) and not conf.common.resume:
        raise ConfigError(
            f"{exp_dir} already holds results and common.resume is false; choose another --exp-name "
            "or remove the folder (nothing is overwritten)"
        )
    barrier()  # every rank has looked at the folder before rank 0 writes into it
    if is_main:
        exp_dir.mkdir(parents=True, exist_ok=True)
    barrier()


def run_experiment(conf: ExperimentConf, argv: Sequence[str], search: bool = True, eval: bool = True,
                   force: bool = False, session: Optional[DistSession] = None) -> ExperimentResult:
    """One experiment in `experiment_dir(conf)`; `session` is this process's rank under torchrun
    (None: a single process on `common.device`)."""
    runner_cls = runner_class(conf.nas.algo)
    exp_dir = experiment_dir(conf)
    rank, world_size = (session.rank, session.world_size) if session else (0, 1)
    check_ray_conf(conf.common.ray, world_size)
    open_experiment_dir(exp_dir, conf, rank == 0)
    ctx = RunContext.create(conf, exp_dir, list(argv), rank=rank, world_size=world_size,
                            device=session.device if session else None,
                            control_group=session.control_group if session else None)
    ranks = f", {world_size} ranks" if world_size > 1 else ""
    ctx.log.info(f"experiment {conf.common.experiment_name}: {conf.nas.algo} on {conf.dataset.name}, "
                 f"device {ctx.device}{ranks}, results in {exp_dir}")
    result = runner_cls(ctx, force=force).run(search=search, eval=eval)
    barrier()  # result.json is written
    report(ctx, result)
    return result


def report(ctx: RunContext, result: ExperimentResult) -> None:
    lines = [f"{result.algorithm} finished; results in {result.exp_dir}"]
    if result.search.get("genotype"):
        lines.append(f"  genotype: {result.search['genotype']}")
    if result.search:
        lines.append(f"  search: {result.search.get('search_time', 0):.0f}s, final desc {result.search.get('final_desc')}")
    if result.eval:
        e = result.eval
        lines.append(f"  test accuracy: {e['test_top1']:.2%} ({e['params_without_aux']:,} params, "
                     f"{e['macs']:,} multiply-adds, {e['train_time']:.0f}s of training)")
    for line in lines:
        ctx.log.info(line)


def run_from_cli(conf: ExperimentConf, args, argv: Sequence[str]) -> int:
    seeds = parse_seeds(args.seeds) if args.seeds is not None else None
    if args.algos:
        if seeds is not None:
            raise ConfigError("--seeds with --algos: repeat one algorithm per command (--seeds runs a whole "
                              "experiment once per seed)")
        if ranks_from_env(os.environ)[1] > 1:
            raise ConfigError("--algos under torchrun: --algos starts one process per phase itself; run each "
                              "algorithm with its own torchrun command (--config confs/<algo>.yaml) instead")
        return run_algorithms(args)
    with distributed_session(conf.common.device) as session:
        if seeds is None:
            run_experiment(conf, argv, search=not args.no_search, eval=not args.no_eval, force=args.force,
                           session=session)
        else:
            run_seeds(conf, argv, seeds, search=not args.no_search, eval=not args.no_eval, force=args.force,
                      session=session)
    return 0


# -- one experiment per seed ------------------------------------------------------------------------

SEEDS_FILE = "seeds.json"


def parse_seeds(text: str) -> list[int]:
    """`--seeds 0,1,2` -> [0, 1, 2]: distinct integers separated by commas."""
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        seeds = []
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds {text!r}: give distinct integers separated by commas, e.g. --seeds 0,1,2")
    return seeds


def seed_conf(conf: ExperimentConf, seed: int) -> ExperimentConf:
    """The experiment repeated with `common.seed: seed`, in the subfolder `seed_<seed>/`."""
    out = copy.deepcopy(conf)
    out.common.seed = seed
    out.common.experiment_name = f"{conf.common.experiment_name}/seed_{seed}"
    return out


def run_seed(run: RunContext, search: bool, eval: bool, force: bool) -> ExperimentResult:
    """One seed's experiment as a trial (`archnas.trials`); its finished phases are skipped."""
    open_experiment_dir(run.exp_dir, run.conf, run.is_main)
    result = runner_class(run.conf.nas.algo)(run, force=force).run(search=search, eval=eval)
    barrier()
    return result


def run_seeds(conf: ExperimentConf, argv: Sequence[str], seeds: Sequence[int], search: bool = True, eval: bool = True,
              force: bool = False, session: Optional[DistSession] = None) -> list[ExperimentResult]:
    """The experiment once per seed, in `<experiment>/seed_<s>/`, then `<experiment>/seeds.json`
    with each seed's results and the mean and standard deviation of the test accuracy."""
    runner_class(conf.nas.algo)  # a bad name fails before anything runs
    root = experiment_dir(conf)
    rank, world_size = (session.rank, session.world_size) if session else (0, 1)
    check_ray_conf(conf.common.ray, world_size)
    device = session.device if session else None
    log = RunContext.create(conf, root, list(argv), rank=rank, world_size=world_size, device=device).log
    trials = []
    for seed in seeds:
        sconf = seed_conf(conf, seed)
        run = RunContext.create(sconf, experiment_dir(sconf), list(argv), rank=rank, world_size=world_size, device=device,
                                control_group=session.control_group if session else None)
        trials.append(Trial(f"seed_{seed}", run, run_seed, (search, eval, force)))

    def reported(i: int, result: ExperimentResult) -> None:
        log.info(f"seed {seeds[i]} ({i + 1}/{len(seeds)}):")
        report(trials[i].run, result)

    results = run_trials(trials, conf.common.ray, on_result=reported)
    accuracies = [r.eval["test_top1"] for r in results if r.eval.get("test_top1") is not None]
    summary: dict[str, Any] = {
        "seeds": {str(s): {"search": r.search, "eval": r.eval} for s, r in zip(seeds, results)},
        "test_top1": accuracies,
    }
    if accuracies:
        mean = sum(accuracies) / len(accuracies)
        std = math.sqrt(sum((a - mean) ** 2 for a in accuracies) / max(len(accuracies) - 1, 1))
        summary.update(test_top1_mean=mean, test_top1_std=std)
        log.info(f"{len(accuracies)} seeds: test accuracy {mean:.2%} +- {std:.2%}; summary in {root / SEEDS_FILE}")
    if rank == 0:
        atomic.write_json(root / SEEDS_FILE, summary)
    return results


# -- several algorithms in sequence ----------------------------------------------------------------

SUMMARY_COLUMNS = [
    ("algorithm", "algorithm"), ("test_top1", "test top-1"), ("params", "params"), ("macs", "MACs"),
    ("search_time", "search s"), ("eval_time", "eval s"), ("search_peak_mb", "search peak MB"),
    ("eval_peak_mb", "eval peak MB"), ("genotype", "genotype"),
]


def run_algorithms(args) -> int:
    """`--algos a,b`: each algorithm with confs/<algo>.yaml under the given configs and overrides,
    into results/<exp>/<algo>/, then results/<exp>/summary.md and summary.csv.

    Every phase runs in a process of its own (`archnas --config confs/<algo>.yaml ... --exp-name
    <exp>/<algo> --no-eval`, then `--no-search`): memory a process has freed stays in its resident
    set, so only a fresh process measures one phase's peak memory on CPU. Signals are passed on
    to the running phase, which checkpoints; the sequence stops at the first phase that fails or
    is interrupted, and rerunning the command skips what finished and resumes the rest. Returns
    the exit code.
    """
    from archnas.cli import default_experiment_name
    from archnas.config import find_config_file

    names = [a.strip() for a in args.algos.split(",") if a.strip()]
    if not names or len(set(names)) != len(names):
        raise ConfigError(f"--algos {args.algos!r}: give distinct algorithm names separated by commas")
    confs = {}
    for name in names:  # refuse a bad name, file or override before anything runs
        runner_class(name)
        confs[name] = load_config([find_config_file(name), *args.config], args.overrides)
    first = confs[names[0]]
    root = args.exp_name or first.common.experiment_name or (default_experiment_name(args.config) if args.config else "compare")
    results = []
    for name in names:
        exp_dir = Path(confs[name].common.results_dir).expanduser() / root / name
        result = ExperimentResult(name, exp_dir)
        phases = [("search", "--no-eval")] if runner_class(name).searches and not args.no_search else []
        phases += [] if args.no_eval else [("eval", "--no-search")]
        for phase, flag in phases:
            command = [sys.executable, "-m", "archnas", *(t for f in (find_config_file(name), *args.config) for t in ("--config", str(f))),
                       "--exp-name", f"{root}/{name}", flag, *(["--force"] if args.force else []),
                       *(f"{o.key}={o.text}" for o in args.overrides), f"nas.algo={name}"]
            code = _run_child(command)
            if code > 128:
                raise RunInterrupted(code - 128, f"--algos: {name} {phase} was stopped by a signal after saving its "
                                                 f"checkpoint; the algorithms before it are finished")
            if code:
                sys.stderr.write(f"archnas: --algos: {name} {phase} failed (exit code {code}); stopping\n")
                return code
            setattr(result, phase, json.loads((exp_dir / "result.json").read_text())[phase])
        atomic.write_json(exp_dir / "result.json", {"algorithm": name, "search": result.search, "eval": result.eval})
        results.append(result)
    summary_dir = Path(first.common.results_dir).expanduser() / root
    write_summary(summary_dir, results)
    sys.stdout.write((summary_dir / "summary.md").read_text())
    return 0


def _run_child(command: list[str]) -> int:
    """Run `command` in its own process group, passing SIGINT/SIGTERM to it exactly once each
    (a Ctrl-C from the terminal reaches this process only), and return its exit code."""
    child = subprocess.Popen(command, process_group=0)
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, lambda signum, frame: child.send_signal(signum))
    try:
        return child.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def summary_rows(results: Sequence[ExperimentResult]) -> list[dict[str, Any]]:
    rows = []
    for r in results:
        mb = lambda b: None if b is None else round(b / 2**20)  # noqa: E731
        rows.append({
            "algorithm": r.algorithm, "test_top1": r.eval.get("test_top1"), "params": r.eval.get("params_without_aux"),
            "macs": r.eval.get("macs"), "search_time": r.search.get("search_time"), "eval_time": r.eval.get("train_time"),
            "search_peak_mb": mb(r.search.get("peak_memory")), "eval_peak_mb": mb(r.eval.get("peak_memory")),
            "genotype": r.search.get("genotype") or "",
        })
    return rows


def write_summary(folder: Path, results: Sequence[ExperimentResult]) -> None:
    rows = summary_rows(results)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=[k for k, _ in SUMMARY_COLUMNS])
    writer.writeheader()
    writer.writerows(rows)
    atomic.write_text(folder / "summary.csv", buf.getvalue())

    def cell(key: str, value: Any) -> str:
        if value is None:
            return "-"
        if key == "test_top1":
            return f"{value:.2%}"
        if key in ("search_time", "eval_time"):
            return f"{value:.0f}"
        if isinstance(value, int):
            return f"{value:,}"
        return str(value)

    header = "| " + " | ".join(title for _, title in SUMMARY_COLUMNS if _ != "genotype") + " |"
    rule = "|" + "|".join("---" for k, _ in SUMMARY_COLUMNS if k != "genotype") + "|"
    body = ["| " + " | ".join(cell(k, row[k]) for k, _ in SUMMARY_COLUMNS if k != "genotype") + " |" for row in rows]
    genotypes = [f"- {row['algorithm']}: `{row['genotype']}`" for row in rows if row["genotype"]]
    text = "\n".join([header, rule, *body]) + "\n"
    if genotypes:
        text += "\nGenotypes:\n" + "\n".join(genotypes) + "\n"
    atomic.write_text(folder / "summary.md", text)

