"""`common`: how a run behaves, whatever it trains."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional


@dataclass
class CheckpointConf:
    """When `checkpoint_last.pt` is written (the previous one is kept as `checkpoint_prev.pt`).

    A checkpoint is also written after the last epoch and on SIGINT/SIGTERM, and
    `checkpoint_best.pt` whenever the validation metric improves. All of these keys are safe to
    change when resuming.
    """

    enabled: bool = True  # false: no checkpoints at all, so an interrupted phase starts over
    every_epochs: int = 1  # at the end of every N epochs (0: never at epoch ends)
    every_steps: int = 0  # also every N optimizer steps, mid-epoch (0: off)
    every_minutes: float = 0.0  # also when this much time has passed since the last one (0: off)


@dataclass
class RayConf:
    """Independent trials (random-search candidates, SearchCombinations combinations, `--seeds`
    repeats) as Ray tasks (`pip install -e ".[ray]"`); off, the same trials run one after another
    in this process. Each trial writes its own subfolder; finished trials are never rerun. All of
    these keys are safe to change when resuming. Not with torchrun: a run uses one or the other.
    """

    enabled: bool = False
    # null: start a local Ray for the run and stop it afterwards; 'auto' or 'host:port' joins a
    # running cluster (`ray start --head` / `ray start --address ...`), whose nodes need archnas
    # installed and the results folder on a shared file system.
    address: Optional[str] = None
    cpus_per_trial: float = 1.0  # CPUs Ray reserves per trial: how many trials share a machine
    gpus_per_trial: float = 0.0  # GPUs per trial (fractions share a GPU); a trial uses cuda when given one


@dataclass
class CommonConf:
    experiment_name: Optional[str] = None  # null: derived from the config file names (or --exp-name)
    results_dir: str = "results"  # experiments go to <results_dir>/<experiment_name>/
    seed: int = 2
    deterministic: bool = False  # torch deterministic algorithms; needed for bit-identical resume on GPU
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    # CPU threads for torch's intra-op parallelism (0: torch's default, one per core). Tiny inputs
    # (8x8 digits) run fastest on 1: splitting microsecond-sized ops costs more than it saves.
    num_threads: int = 0
    resume: bool = True  # rerunning the same command continues an interrupted run
    log_level: str = "INFO"
    # Plain progress lines when stdout is not a terminal (a pipe, a log file, a batch job): one every
    # N steps and, whichever comes first, one whenever this many seconds passed since the last line,
    # so a slow CPU epoch still shows it is alive. 0 turns either off (both 0: epoch lines only).
    log_every_steps: int = 50
    log_every_seconds: float = 30.0
    tensorboard: bool = True  # event files under <phase>/tb/
    cache_dir: str = "~/.cache/archnas"  # decoded datasets are cached here
    checkpoint: CheckpointConf = field(default_factory=CheckpointConf)
    ray: RayConf = field(default_factory=RayConf)
