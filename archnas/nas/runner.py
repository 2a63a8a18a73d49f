"""ExperimentRunner: search, then evaluate, in one experiment folder; algorithms plug in by name.

An algorithm is one small module that subclasses `ExperimentRunner`, overrides the factory hooks
it needs (model desc builder, trainer class, finalizers, searcher, evaluater) and registers
itself:

    @register_algorithm("darts")
    class DartsRunner(ExperimentRunner):
        ...

`run()` writes `results/<experiment>/search/`, `eval/` and `result.json`. Each phase resumes
from its checkpoint when interrupted and is skipped when its completion marker says it finished.
"""

from __future__ import annotations

import csv
import io
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from archnas.config import ExperimentConf, load_config
from archnas.context import PhaseContext, RunContext
from archnas.descs.builder import ModelDescBuilder
from archnas.descs.model_desc import ModelDesc
from archnas.errors import ConfigError
from archnas.nas.arch_trainer import ArchTrainer
from archnas.nas.evaluater import Evaluater
from archnas.nas.finalizers import Finalizers, build_finalizers
from archnas.nas.searcher import RESULT_FILE, Searcher, SearchResult, check_completed
from archnas.utils import atomic
from archnas.utils.memory import PeakMemory

_ALGORITHMS: dict[str, type["ExperimentRunner"]] = {}


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
        return build_finalizers(search.finalizer, search.model_desc.max_final_edges, self.conf.common.seed)

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
            with PeakMemory(ctx.device) as mem:
                found = self.searcher().search(ctx, self.phase)
        finally:
            ctx.close()
        return found, {**found.metrics, "genotype": found.genotype, "final_desc": str(found.final_desc_path),
                       "peak_memory": mem.peak_bytes}

    def run_eval(self, searched: Optional[ModelDesc]) -> dict[str, Any]:
        ctx = self.phase("eval", self.conf.nas.eval)
        try:
            with PeakMemory(ctx.device) as mem:
                metrics = self.evaluater().evaluate(ctx, searched).metrics
        finally:
            ctx.close()
        return {**{k: v for k, v in metrics.items() if k != "config"}, "peak_memory": mem.peak_bytes}

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


# -- the command line -----------------------------------------------------------------------------


def experiment_dir(conf: ExperimentConf) -> Path:
    return Path(conf.common.results_dir).expanduser() / conf.common.experiment_name


def run_experiment(conf: ExperimentConf, argv: Sequence[str], search: bool = True, eval: bool = True,
                   force: bool = False) -> ExperimentResult:
    runner_cls = runner_class(conf.nas.algo)
    exp_dir = experiment_dir(conf)
    if exp_dir.exists() and any(exp_dir.iterdir()) and not conf.common.resume:
        raise ConfigError(
            f"{exp_dir} already holds results and common.resume is false; choose another --exp-name "
            "or remove the folder (nothing is overwritten)"
        )
    exp_dir.mkdir(parents=True, exist_ok=True)
    ctx = RunContext.create(conf, exp_dir, list(argv))
    ctx.log.info(f"experiment {conf.common.experiment_name}: {conf.nas.algo} on {conf.dataset.name}, "
                 f"device {ctx.device}, results in {exp_dir}")
    result = runner_cls(ctx, force=force).run(search=search, eval=eval)
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
    if args.algos:
        run_algorithms(args, argv)
    else:
        run_experiment(conf, argv, search=not args.no_search, eval=not args.no_eval, force=args.force)
    return 0


# -- several algorithms in sequence ----------------------------------------------------------------

SUMMARY_COLUMNS = [
    ("algorithm", "algorithm"), ("test_top1", "test top-1"), ("params", "params"), ("macs", "MACs"),
    ("search_time", "search s"), ("eval_time", "eval s"), ("search_peak_mb", "search peak MB"),
    ("eval_peak_mb", "eval peak MB"), ("genotype", "genotype"),
]


def run_algorithms(args, argv: Sequence[str]) -> list[ExperimentResult]:
    """`--algos a,b`: each algorithm with confs/<algo>.yaml under the given configs, into
    results/<exp>/<algo>/, then results/<exp>/summary.md and summary.csv."""
    from archnas.cli import default_experiment_name
    from archnas.config import find_config_file

    names = [a.strip() for a in args.algos.split(",") if a.strip()]
    for name in names:
        runner_class(name)
    base = args.exp_name or (default_experiment_name(args.config) if args.config else "compare")
    results = []
    for name in names:
        files = [str(find_config_file(name)), *args.config]
        conf = load_config(files, args.overrides)
        conf.nas.algo = name
        root = conf.common.experiment_name or base
        conf.common.experiment_name = f"{root}/{name}"
        results.append(run_experiment(conf, argv, search=not args.no_search, eval=not args.no_eval, force=args.force))
    summary_dir = Path(conf.common.results_dir).expanduser() / root
    write_summary(summary_dir, results)
    sys.stdout.write((summary_dir / "summary.md").read_text())
    return results


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

