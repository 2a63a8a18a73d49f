"""One experiment from the command line: its folder, its run context, its phases, its report.

`run_experiment` opens `results/<experiment>/` (refusing one that holds results when
`common.resume` is false), makes the run context (rank, device, logger) and runs the
algorithm's phases through `archnas.nas.runner.ExperimentRunner`; `--seeds` and `--algos` repeat
that per seed (`archnas.launch.seeds`) or per algorithm (`archnas.launch.compare`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

from archnas.config import ExperimentConf, find_config_file
from archnas.context import RunContext
from archnas.distributed import DistSession, barrier
from archnas.errors import ConfigError
from archnas.nas.registry import algorithm_class
from archnas.nas.runner import ExperimentResult, ExperimentRunner
from archnas.trials import check_ray_conf
from archnas.utils.paths import checked_folder


def default_experiment_name(config_files: Sequence[str]) -> str:
    return "-".join(Path(find_config_file(c)).stem for c in config_files)


def experiment_dir(conf: ExperimentConf) -> Path:
    path = checked_folder(conf.common.results_dir, "common.results_dir") / conf.common.experiment_name
    try:
        is_file = path.exists() and not path.is_dir()
    except (OSError, ValueError) as exc:  # a name longer than the file system allows
        raise ConfigError(f"common.experiment_name (--exp-name) {conf.common.experiment_name[:60]!r}...: not a usable "
                          f"folder name ({getattr(exc, 'strerror', None) or exc})") from None
    if is_file:
        raise ConfigError(f"{path}: the experiment folder is a file; choose another --exp-name or move the file")
    return path


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
        try:
            exp_dir.mkdir(parents=True, exist_ok=True)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot create the experiment folder {exp_dir} (common.results_dir / --exp-name): "
                              f"{getattr(exc, 'strerror', None) or exc}") from None
    barrier()


def run_experiment(conf: ExperimentConf, argv: Sequence[str], search: bool = True, eval: bool = True,
                   force: bool = False, session: Optional[DistSession] = None, restart: bool = False) -> ExperimentResult:
    """One experiment in `experiment_dir(conf)`; `session` is this process's rank under torchrun
    (None: a single process on `common.device`); `restart`: the phases that run start over,
    keeping their old folders."""
    algorithm_class(conf.nas.algo)  # a bad name fails before anything is written
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
    result = ExperimentRunner(ctx, force=force, restart=restart).run(search=search, eval=eval)
    report(ctx, result)
    return result


def report(ctx: RunContext, result: ExperimentResult) -> None:
    """What the run did, said once it is done: the phases it ran (a `--no-eval` run says its
    search finished, not the algorithm), where the results are, the genotype and test accuracy."""
    done = " and ".join(kind for kind, part in (("search", result.search), ("eval", result.eval)) if part)
    lines = [f"{result.algorithm} {done or 'run'} finished; results in {result.exp_dir}"]
    if result.search.get("genotype"):
        lines.append(f"  genotype: {result.search['genotype']}")
    if result.search:
        lines.append(f"  search: {result.search.get('search_time', 0):.0f}s, final desc {result.search.get('final_desc')}")
    for row in result.search.get("best_within_limits") or ():
        lines.append(f"  best within {row['limit']} {row['bound']:,g}: {result.search['arch']} ({row['cost_model']} "
                     f"{row['cost']:,.6g}, inherited val top-1 {result.search['best_val_top1']:.2%})")
    ranking = result.search.get("ranking")
    if ranking:
        lines.append(f"  ranking check over {ranking['n_archs']} architectures: Kendall's tau "
                     f"{_number(ranking['kendall_tau'])}, Spearman's rho {_number(ranking['spearman_rho'])}")
    if result.eval:
        e = result.eval
        lines.append(f"  test accuracy: {e['test_top1']:.2%} ({e['params_without_aux']:,} params, "
                     f"{e['macs']:,} multiply-adds, {e['train_time']:.0f}s of training)")
        if e.get("test_top1_best_val") is not None:
            lines.append(f"  best-on-val model (model_best.pt): val top-1 {e['best_val_top1']:.2%}, "
                         f"test top-1 {e['test_top1_best_val']:.2%}")
    for line in lines:
        ctx.log.info(line)


def _number(value: float | None) -> str:
    return "undefined (tied accuracies)" if value is None else f"{value:.3f}"
