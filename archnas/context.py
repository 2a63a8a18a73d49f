"""The run context: everything a phase needs besides its config, made once and passed explicitly.

`RunContext` is one experiment (its folder, device, logger, rank); `PhaseContext` is one phase of
it (`search`, `eval`, ...) with its own folder, config section, log file, metrics and TensorBoard.
Nothing here is global: two experiments in one process do not share any of it.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import platform
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch

from archnas.config import ExperimentConf, config_to_dict, config_to_yaml
from archnas.config.compat import section_path
from archnas.errors import ConfigError
from archnas.training.env import TrainingEnv
from archnas.utils import atomic, reads
from archnas.utils.device import resolve_device, set_deterministic
from archnas.utils.nofollow import AppendFileHandler, unplant
from archnas.utils.seeding import derive_seed, seed_everything
from archnas.utils.versions import ARCHNAS_VERSION

REPO_ROOT = Path(__file__).resolve().parents[1]


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
    probe: Any = None  # a dry run's `archnas.training.probe.Probe`, handed to every phase's TrainingEnv

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

    def phase(self, name: str, section: Any, restart: bool = False) -> "PhaseContext":
        """A context for one phase, with the global RNGs seeded for it. Nothing is written yet:
        its folder, config.yaml, run.json, log.txt and the files the phase stages with
        `PhaseContext.write` are written when it commits (`PhaseContext.commit`), once the phase
        has checked everything it can refuse. `restart`: the phase starts over; at commit its old
        folder is kept under a free `<name>.old-<k>`."""
        seed_everything(derive_seed(self.conf.common.seed, name, bits=32))
        log = logging.getLogger(f"{self.log.name}.{name}")
        log.setLevel(self.log.level)
        for h in list(log.handlers):
            log.removeHandler(h)
            h.close()
        ctx = self.phase_context(name, section, self.exp_dir / name, log)
        ctx.restart = restart
        if restart:
            ctx.resume = False
        ctx._held = _HeldRecords()
        log.addHandler(ctx._held)
        return ctx

    def phase_context(self, name: str, section: Any, folder: Path, log: logging.Logger) -> "PhaseContext":
        """The context of a phase in `folder`, without creating or writing anything (to read what a
        finished phase left there)."""
        common = self.conf.common
        path = section_path(self.conf, section) if section is not None else None
        return PhaseContext(run=self, name=name, conf=section, dir=folder, log=log, device=self.device,
                            checkpoint=common.checkpoint, resume=common.resume, log_every_steps=common.log_every_steps,
                            log_every_seconds=common.log_every_seconds,
                            tensorboard=common.tensorboard, hparams=self.hparams(name, section),
                            rank=self.rank, world_size=self.world_size,
                            control_group=self.control_group, section_key=".".join(path or ()),
                            probe=self.probe)

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
                "archnas": ARCHNAS_VERSION,
            },
            "host": socket.gethostname(),
            "device": str(self.device),
            "world_size": self.world_size,
        }


class _HeldRecords(logging.Handler):
    """Log records of a phase that has not committed yet; they go to its log.txt at commit."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def kept_folder(folder: Path) -> Path:
    """The first free `<folder>.old-<k>`, k = 1, 2, ...: a restarted phase never overwrites a kept one."""
    k = 1
    while folder.with_name(f"{folder.name}.old-{k}").exists():
        k += 1
    return folder.with_name(f"{folder.name}.old-{k}")


@dataclass(kw_only=True)
class PhaseContext(TrainingEnv):
    """One phase of an experiment: a `TrainingEnv` (folder, logger, device, rank, checkpoint
    policy) plus the run it belongs to and its config section.

    A context made by `RunContext.phase` holds back every write (its folder, config.yaml,
    run.json, log.txt, the files staged with `write`) until `commit`: the Trainer commits once
    it has resumed (or found nothing to resume) and is about to train; a phase that refuses
    before that leaves its folder byte-identical."""

    run: RunContext
    conf: Any  # this phase's config section, e.g. conf.nas.search
    restart: bool = False
    config_changes: list[dict[str, Any]] = field(default_factory=list)  # what resumes changed (Trainer)
    _held: Optional[_HeldRecords] = field(default=None, repr=False)
    _staged: list[Callable[[], None]] = field(default_factory=list, repr=False)
    committed: bool = False

    @property
    def seed(self) -> int:
        return self.run.conf.common.seed

    @property
    def common(self):
        return self.run.conf.common

    def write(self, writer: Callable[[], None]) -> None:
        """Write a file of the phase (rank 0): now when the phase has committed, else at commit."""
        if not self.is_main:
            return
        if self.committed or self._held is None:
            writer()
        else:
            self._staged.append(writer)

    def commit(self, resumed: dict[str, Any] | None = None, config_changes: Sequence[dict[str, Any]] = ()) -> None:
        """Write what the phase held back; from here on the phase writes as it goes. Rank 0 moves
        a restarted phase's old folder aside first, then writes config.yaml and run.json (the
        runs before this one are kept in its `previous_runs`), log.txt and the staged files."""
        if self.committed:
            return
        self.committed = True
        self.config_changes = list(config_changes)
        if self._held is None:
            return
        held, self._held = self._held, None
        self.log.removeHandler(held)
        if not self.is_main:
            return
        info = self.run.run_info()
        if resumed:
            info["resumed"] = resumed
        kept = None
        if self.restart and self.dir.exists() and any(self.dir.iterdir()):
            kept = kept_folder(self.dir)
            self.dir.rename(kept)
            info["restarted"] = {"kept": str(kept)}
        previous = []
        try:
            old = json.loads(reads.read_text(self.dir / "run.json"))
            previous = [*old.pop("previous_runs", []), old]
        except (OSError, ValueError, AttributeError, TypeError):
            pass  # a fresh folder, or a run.json no one can read: nothing to carry over
        if previous:
            info["previous_runs"] = previous
        self.dir.mkdir(parents=True, exist_ok=True)
        atomic.write_text(self.dir / "config.yaml", config_to_yaml(self.run.conf))
        atomic.write_json(self.dir / "run.json", info)
        unplant(self.dir / "log.txt", self.log)  # a link planted there is replaced, never written through
        file_handler = AppendFileHandler(self.dir / "log.txt")
        file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        for record in held.records:
            file_handler.handle(record)
        self.log.addHandler(file_handler)
        if kept is not None:
            self.log.info(f"{self.name}: starting over; the old folder is kept as {kept}")
        staged, self._staged = self._staged, []
        for writer in staged:
            writer()

    def close(self) -> None:
        """Close the phase's files; a phase that never committed (refused) drops what it held."""
        if self._held is not None:
            self.log.removeHandler(self._held)
            self._held = None
            self._staged = []
        super().close()
