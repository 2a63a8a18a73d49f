"""Independent trials (random-search candidates, macro combinations, seed repeats), run one after
another in this process or as Ray tasks, through one function: `run_trials`.

A trial is a module-level function `fn(run, *args)` with the `RunContext` it runs under (its own
config and experiment folder) and picklable arguments. It must depend on nothing but those, and
write everything into its own results subfolder with a completion marker, so trials can run in
any order, in other processes or on other machines, and a rerun skips the finished ones.

Sequential (`common.ray.enabled: false`): `fn(run, *args)` in order, in this process.
Ray (`common.ray.enabled: true`): one task per trial, each with `common.ray.cpus_per_trial` CPUs
and `gpus_per_trial` GPUs. The task rebuilds a `RunContext` from the trial's config and folder in
its worker (a single process there, on the device Ray gives it) and calls the same `fn`. A local
Ray is started on demand and shut down afterwards; `common.ray.address` joins a running cluster,
whose nodes must have archnas installed and see the results folder (a shared file system).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Generic, Optional, Sequence, TypeVar

from archnas.config import ExperimentConf
from archnas.config.schema.common import RayConf
from archnas.context import RunContext
from archnas.errors import ConfigError
from archnas.utils.plugins import import_flags, load_plugins

T = TypeVar("T")
OnResult = Callable[[int, Any], None]


@dataclass(frozen=True)
class Trial(Generic[T]):
    name: str  # shown in logs, e.g. "seed_1" or "candidate_002"
    run: RunContext  # the trial's own config and experiment folder
    fn: Callable[..., T]  # fn(run, *args); module level, so Ray can ship it by reference
    args: tuple = ()
    # finished(run, *args): the result of a trial that already finished, read from its folder, or
    # None; asked here before anything is scheduled, so a rerun whose trials all finished starts
    # no Ray at all.
    finished: Optional[Callable[..., Optional[T]]] = None


def run_trials(trials: Sequence[Trial[T]], conf: RayConf, on_result: Optional[OnResult] = None) -> list[T]:
    """Every trial's result, in the order given; `on_result(i, result)` as each one finishes
    (in order when sequential, as they complete on Ray) so progress can be recorded early."""
    check_ray_conf(conf, max((t.run.world_size for t in trials), default=1))
    results: list[Any] = [None] * len(trials)
    todo = []
    for i, trial in enumerate(trials):
        done = trial.finished(trial.run, *trial.args) if trial.finished is not None else None
        if done is None:
            todo.append(i)
        else:
            results[i] = done
            if on_result is not None:
                on_result(i, done)
    if not conf.enabled:
        for i in todo:
            results[i] = trials[i].fn(trials[i].run, *trials[i].args)
            if on_result is not None:
                on_result(i, results[i])
    elif todo:
        _run_on_ray([trials[i] for i in todo], conf, lambda k, result: _store(results, todo[k], result, on_result))
    return results


def _store(results: list[Any], i: int, result: Any, on_result: Optional[OnResult]) -> None:
    results[i] = result
    if on_result is not None:
        on_result(i, result)


def check_ray_conf(conf: RayConf, world_size: int) -> None:
    """Refuse settings Ray cannot honour before anything starts."""
    if not conf.enabled:
        return
    if world_size > 1:
        raise ConfigError("common.ray.enabled: true under torchrun; run independent trials on Ray or one training "
                          "on several ranks with torchrun, not both (set common.ray.enabled=false)")
    if conf.cpus_per_trial <= 0:
        raise ConfigError(f"common.ray.cpus_per_trial: {conf.cpus_per_trial}; expected a positive number of CPUs")
    if conf.gpus_per_trial < 0:
        raise ConfigError(f"common.ray.gpus_per_trial: {conf.gpus_per_trial}; expected 0 or more GPUs")


def _ray_module() -> Any:
    try:
        import ray
    except ImportError:
        raise ConfigError("common.ray.enabled: true but Ray is not installed; install it with "
                          "pip install -e \".[ray]\" or set common.ray.enabled=false") from None
    return ray


def _run_on_ray(trials: Sequence[Trial[T]], conf: RayConf, on_result: OnResult) -> None:
    ray = _ray_module()
    started = not ray.is_initialized()
    if started:
        # Trials report through their own log files; Ray forwards their console lines too.
        try:
            ray.init(address=conf.address, log_to_driver=True, include_dashboard=False)
        except ConnectionError as exc:  # Ray's own when no cluster answers at the address
            where = "no running Ray cluster was found" if conf.address == "auto" else \
                f"no Ray cluster answers at {conf.address}"
            raise ConfigError(
                f"common.ray.address={conf.address}: {where} ({str(exc).splitlines()[0][:120]}); start one with "
                "`ray start --head` (and `ray start --address HEAD:6379` on the other machines), or leave "
                "common.ray.address null to start a local Ray for this run"
            ) from None
    try:
        task = ray.remote(_trial_task).options(num_cpus=conf.cpus_per_trial, num_gpus=conf.gpus_per_trial)
        pending = {
            task.remote(t.fn, t.run.conf, t.run.exp_dir.resolve(), t.run.argv, t.args): i for i, t in enumerate(trials)
        }
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            i = pending.pop(done[0])
            on_result(i, ray.get(done[0]))  # a trial's exception is re-raised here, as its own type
    finally:
        if started:
            ray.shutdown()


def _trial_task(fn: Callable[..., T], conf: ExperimentConf, exp_dir: Path, argv: list[str], args: tuple) -> T:
    """In a Ray worker: the command's plugins, a fresh single-process context for the trial, then
    the trial itself."""
    load_plugins(import_flags(argv))
    return fn(RunContext.create(conf, exp_dir, argv), *args)
