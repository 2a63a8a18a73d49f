"""The run context: everything a phase needs besides its config, made once and passed explicitly.

`RunContext` is one experiment (its folder, device, logger, rank); `PhaseContext` is one phase of
it (`search`, `eval`, ...) with its own folder, config section, log file, metrics and TensorBoard.
Nothing here is global: two experiments in one process do not share any of it.
"""

from __future__ import annotations

import datetime as _dt
import logging
import platform
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

import archnas
from archnas.config import ExperimentConf, config_to_dict, config_to_yaml
from archnas.errors import ConfigError
from archnas.training.env import TrainingEnv
from archnas.utils import atomic
from archnas.utils.device import resolve_device, set_deterministic
from archnas.utils.seeding import phase_seed, seed_everything

REPO_ROOT = Path(archnas.__file__).resolve().parents[1]


def git_commit() -> str | None:
    """The commit of the archnas checkout that is running, with `-dirty` if it has local changes."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT, capture_output=True,
            text=True, timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return sha + ("-dirty" if dirty else "") if sha else None


def _make_logger(name: str, level: str, console: bool) -> logging.Logger:
    log = logging.getLogger(name)
    log.setLevel(level.upper())
    log.propagate = False
    for h in list(log.handlers):
        log.removeHandler(h)
        h.close()
    if console:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
        log.addHandler(handler)
    return log


@dataclass
class RunContext:
    conf: ExperimentConf
    exp_dir: Path
    device: torch.device
    log: logging.Logger
    argv: list[str] = field(default_factory=list)
    rank: int = 0
    world_size: int = 1
    control_group: Any = None  # `DistSession.control_group`: host-side agreement between ranks

    @classmethod
    def create(cls, conf: ExperimentConf, exp_dir: Path, argv: list[str], rank: int = 0, world_size: int = 1,
               device: torch.device | None = None, control_group: Any = None) -> "RunContext":
        set_deterministic(conf.common.deterministic)
        if conf.common.num_threads < 0:
            raise ConfigError(f"common.num_threads: {conf.common.num_threads} is negative (0 means torch's default)")
        if conf.common.log_every_steps < 0 or conf.common.log_every_seconds < 0:
            raise ConfigError(f"common.log_every_steps ({conf.common.log_every_steps}) and common.log_every_seconds "
                              f"({conf.common.log_every_seconds}) must be >= 0 (0 turns that kind of progress line off)")
        if conf.common.num_threads:
            torch.set_num_threads(conf.common.num_threads)
        log = _make_logger(f"archnas.{exp_dir.resolve()}.r{rank}", conf.common.log_level, console=rank == 0)
        return cls(conf, exp_dir, device or resolve_device(conf.common.device), log, argv, rank, world_size,
                   control_group)

    @property
    def is_main(self) -> bool:
        """Only the main process (rank 0) writes files."""
        return self.rank == 0

    def phase(self, name: str, section: Any) -> "PhaseContext":
        """A context for one phase; its folder, config.yaml and run.json are written now, and the
        global RNGs are seeded for it."""
        seed_everything(phase_seed(self.conf.common.seed, name))
        phase_dir = self.exp_dir / name
        log = logging.getLogger(f"{self.log.name}.{name}")
        log.setLevel(self.log.level)
        for h in list(log.handlers):
            log.removeHandler(h)
            h.close()
        if self.is_main:
            phase_dir.mkdir(parents=True, exist_ok=True)
            atomic.write_text(phase_dir / "config.yaml", config_to_yaml(self.conf))
            atomic.write_json(phase_dir / "run.json", self.run_info())
            file_handler = logging.FileHandler(phase_dir / "log.txt", encoding="utf-8")
            file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
            log.addHandler(file_handler)
        return self.phase_context(name, section, phase_dir, log)

    def phase_context(self, name: str, section: Any, folder: Path, log: logging.Logger) -> "PhaseContext":
        """The context of a phase in `folder`, without creating or writing anything (to read what a
        finished phase left there)."""
        common = self.conf.common
        return PhaseContext(run=self, name=name, conf=section, dir=folder, log=log, device=self.device,
                            checkpoint=common.checkpoint, resume=common.resume, log_every_steps=common.log_every_steps,
                            log_every_seconds=common.log_every_seconds,
                            tensorboard=common.tensorboard, hparams=self.hparams(name, section),
                            rank=self.rank, world_size=self.world_size,
                            control_group=self.control_group)

    def hparams(self, name: str, section: Any) -> dict[str, Any]:
        """The settings of a phase as TensorBoard's hparams record them: seed, dataset, the phase's section."""
        return {"seed": self.conf.common.seed, "dataset": self.conf.dataset.name, "algo": self.conf.nas.algo,
                name.replace("/", "."): config_to_dict(section)}

    def run_info(self) -> dict[str, Any]:
        return {
            "start_time": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
            "command": self.argv,
            "git_commit": git_commit(),
            "versions": {
                "python": platform.python_version(),
                "torch": torch.__version__,
                "archnas": archnas.__version__,
            },
            "host": socket.gethostname(),
            "device": str(self.device),
            "world_size": self.world_size,
        }


@dataclass(kw_only=True)
class PhaseContext(TrainingEnv):
    """One phase of an experiment: a `TrainingEnv` (folder, logger, device, rank, checkpoint
    policy) plus the run it belongs to and its config section."""

    run: RunContext
    conf: Any  # this phase's config section, e.g. conf.nas.search

    @property
    def seed(self) -> int:
        return self.run.conf.common.seed

    @property
    def common(self):
        return self.run.conf.common
