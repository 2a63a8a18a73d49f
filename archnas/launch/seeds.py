"""`--seeds 0,1,2`: the whole experiment once per seed, as independent trials, and the mean and
standard deviation of the test accuracy over the seeds."""

from __future__ import annotations

import copy
import math
from typing import Any, Optional, Sequence

from archnas.config import ExperimentConf
from archnas.context import RunContext
from archnas.distributed import DistSession
from archnas.config.validate import MAX_SEED
from archnas.errors import ConfigError
from archnas.launch.experiment import experiment_dir, experiment_lock, log_lock, open_experiment_dir, report
from archnas.launch.plot import comparison_picture
from archnas.nas.registry import algorithm_class, stage_class
from archnas.nas.runner import ExperimentResult, ExperimentRunner, StageSelection
from archnas.plots import write_pictures
from archnas.trials import Trial, check_ray_conf, run_trials
from archnas.utils import atomic

SEEDS_FILE = "seeds.json"


def parse_seeds(text: str) -> list[int]:
    """`--seeds 0,1,2` -> [0, 1, 2]: distinct integers separated by commas."""
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        seeds = []
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0 or max(seeds) >= MAX_SEED:
        raise ConfigError(f"--seeds {text!r}: give distinct integers from 0 to {MAX_SEED - 1} separated by commas, "
                          "e.g. --seeds 0,1,2")
    return seeds


def seed_conf(conf: ExperimentConf, seed: int) -> ExperimentConf:
    """The experiment repeated with `common.seed: seed`, in the subfolder `seed_<seed>/`."""
    out = copy.deepcopy(conf)
    out.common.seed = seed
    out.common.experiment_name = f"{conf.common.experiment_name}/seed_{seed}"
    return out


def run_seed(run: RunContext, selection: StageSelection, force: bool, restart: bool = False, number: int = 1,
             total: int = 1) -> ExperimentResult:
    """One seed's experiment as a trial (`archnas.trials`); its finished stages are skipped. Its
    header is logged here, where the work starts (in this process or a Ray worker)."""
    run.log.info(f"seed {run.conf.common.seed} ({number}/{total}): starting; results in {run.exp_dir}")
    with experiment_lock(run.exp_dir, run.argv, run.rank, run.control_group) as lock:  # its own, as on Ray
        log_lock(run, lock)
        open_experiment_dir(run.exp_dir, run.conf, run.is_main)
        return ExperimentRunner(run, force=force, restart=restart).run(selection)


def run_seeds(conf: ExperimentConf, argv: Sequence[str], seeds: Sequence[int],
              selection: StageSelection = StageSelection(), force: bool = False, session: Optional[DistSession] = None,
              restart: bool = False) -> list[ExperimentResult]:
    """The experiment once per seed, in `<experiment>/seed_<s>/`, then `<experiment>/seeds.json`
    with each seed's results and the mean and standard deviation of the test accuracy (and
    `comparison.png` unless the plot stage is left out). The
    experiment's lock is held throughout, and each seed's folder has its own while it runs."""
    algorithm_class(conf.nas.algo)  # a bad name fails before anything runs
    root = experiment_dir(conf)
    rank, world_size = (session.rank, session.world_size) if session else (0, 1)
    check_ray_conf(conf.common.ray, world_size)
    device = session.device if session else None
    control_group = session.control_group if session else None
    with experiment_lock(root, argv, rank, control_group) as lock:
        top = RunContext.create(conf, root, list(argv), rank=rank, world_size=world_size, device=device)
        log_lock(top, lock)
        return _run_seeds(conf, top, seeds, selection, force, restart, control_group)


def _run_seeds(conf: ExperimentConf, top: RunContext, seeds: Sequence[int], selection: StageSelection, force: bool,
               restart: bool, control_group: Any) -> list[ExperimentResult]:
    log, root = top.log, top.exp_dir
    trials = []
    for number, seed in enumerate(seeds, 1):
        sconf = seed_conf(conf, seed)
        run = RunContext.create(sconf, experiment_dir(sconf), top.argv, rank=top.rank, world_size=top.world_size,
                                device=top.device, control_group=control_group)
        trials.append(Trial(f"seed_{seed}", run, run_seed, (selection, force, restart, number, len(seeds))))

    def reported(i: int, result: ExperimentResult) -> None:
        log.info(f"seed {seeds[i]} ({i + 1}/{len(seeds)}) done:")
        report(trials[i].run, result)

    results = run_trials(trials, conf.common.ray, on_result=reported)
    accuracies = [r.final()["test_top1"] for r in results if r.final().get("test_top1") is not None]
    summary: dict[str, Any] = {
        "seeds": {str(s): r.stages for s, r in zip(seeds, results)},
        "test_top1": accuracies,
    }
    if accuracies:
        mean = sum(accuracies) / len(accuracies)
        std = math.sqrt(sum((a - mean) ** 2 for a in accuracies) / max(len(accuracies) - 1, 1))
        summary.update(test_top1_mean=mean, test_top1_std=std)
        log.info(f"{len(accuracies)} seeds: test accuracy {mean:.2%} +- {std:.2%}")
    if top.is_main:
        atomic.write_json(root / SEEDS_FILE, summary)
        if selection.picks(stage_class("plot")):  # --skip plot draws nothing
            write_pictures([comparison_picture(root)], root)
    log.info(f"--seeds: {len(seeds)} seeds finished; summary in {root / SEEDS_FILE}")
    return results


# -- several algorithms in sequence ----------------------------------------------------------------
