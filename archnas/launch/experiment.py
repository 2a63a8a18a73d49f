"""One experiment from the command line: its folder, its run context, its phases, its report.

`run_experiment` takes the experiment's lock (one writer per folder: `archnas.utils.lock`),
which creates `results/<experiment>/`, refuses a folder that holds results when `common.resume`
is false, makes the run context (rank, device, logger) and runs the algorithm's stages through
`archnas.nas.runner.ExperimentRunner`; `--seeds` and `--algos` repeat that per seed (`archnas.launch.seeds`) or per algorithm (`archnas.launch.compare`).
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

from archnas.config import ExperimentConf, find_config_file
from archnas.context import RunContext
from archnas.distributed import DistSession, agree_max, barrier
from archnas.errors import ConfigError, UsageError
from archnas.nas.registry import algorithm_class
from archnas.nas.runner import ExperimentResult, ExperimentRunner, StageSelection
from archnas.trials import check_ray_conf
from archnas.utils.lock import LOCK_FILE, ExperimentLock
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
    """Check the experiment folder, refusing one that holds results when `common.resume` is false;
    every rank leaves with the folder there (rank 0 made it when it took the experiment's lock)."""
    if exp_dir.exists() and any(p.name != LOCK_FILE for p in exp_dir.iterdir()) and not conf.common.resume:
        raise ConfigError(
            f"{exp_dir} already holds results and common.resume is false; choose another --exp-name "
            "or remove the folder (nothing is overwritten)"
        )
    barrier()  # every rank has looked at the folder before rank 0 writes into it


@contextmanager
def experiment_lock(exp_dir: Path, argv: Sequence[str], rank: int = 0,
                    control_group: Any = None) -> Iterator[Optional[ExperimentLock]]:
    """The experiment's one-writer lock, taken by rank 0 (the other ranks of a torchrun are the
    same run and write nothing) before anything is written in `exp_dir`, which it creates;
    released at the end, when the folder goes again if this run created it and left it empty (a
    refused first run). Every rank learns whether rank 0 got it, so none waits for a refused one."""
    lock = ExperimentLock(exp_dir, ["archnas", *argv]) if rank == 0 else None
    refused: Optional[UsageError] = None
    if lock is not None:
        try:
            lock.acquire()
        except UsageError as exc:
            refused = exc
    if agree_max([int(refused is not None)], control_group)[0]:
        raise refused or ConfigError(f"{exp_dir}: rank 0 could not take the experiment's lock (its message says why)")
    try:
        yield lock
    finally:
        if lock is not None:
            lock.release()


def log_lock(ctx: RunContext, lock: Optional[ExperimentLock]) -> None:
    """Say in the run's log what taking the lock found: a dead run's lock, a planted link."""
    for line in lock.found() if lock is not None else ():
        ctx.log.warning(line)


def run_experiment(conf: ExperimentConf, argv: Sequence[str], selection: StageSelection = StageSelection(),
                   force: bool = False, session: Optional[DistSession] = None, restart: bool = False) -> ExperimentResult:
    """One experiment in `experiment_dir(conf)`, holding its lock; `selection`: the stages that run;
    `session` is this process's rank under torchrun (None: a single process on `common.device`);
    `restart`: the stages that run start over, keeping their old folders."""
    algorithm_class(conf.nas.algo)  # a bad name fails before anything is written
    exp_dir = experiment_dir(conf)
    rank, world_size = (session.rank, session.world_size) if session else (0, 1)
    check_ray_conf(conf.common.ray, world_size)
    control_group = session.control_group if session else None
    with experiment_lock(exp_dir, argv, rank, control_group) as lock:
        open_experiment_dir(exp_dir, conf, rank == 0)
        ctx = RunContext.create(conf, exp_dir, list(argv), rank=rank, world_size=world_size,
                                device=session.device if session else None, control_group=control_group)
        log_lock(ctx, lock)
        ranks = f", {world_size} ranks" if world_size > 1 else ""
        ctx.log.info(f"experiment {conf.common.experiment_name}: {conf.nas.algo} on {conf.dataset.name}, "
                     f"device {ctx.device}{ranks}, results in {exp_dir}")
        result = ExperimentRunner(ctx, force=force, restart=restart).run(selection)
        report(ctx, result)
    return result


def report(ctx: RunContext, result: ExperimentResult) -> None:
    """What the run did, said once it is done: the stages it ran (a `--no-eval` run says its
    search finished, not the algorithm), where the results are, and each stage's own lines
    (`Phase.report`: the genotype, the test accuracy, ...)."""
    names = list(result.stages)
    done = " and ".join(filter(None, [", ".join(names[:-1]), *names[-1:]]))
    for line in [f"{result.algorithm} {done} finished; results in {result.exp_dir}", *result.report]:
        ctx.log.info(line)
