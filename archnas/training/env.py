"""What a training needs from the run around it, apart from what it trains.

A `TrainingEnv` is a folder to write checkpoints, metrics and TensorBoard events into, a logger,
a device, where this process stands among the ranks, and the run's checkpoint and resume policy.
The Trainer takes nothing else from its surroundings: no experiment config, no NAS. A phase of an
experiment (`archnas.context.PhaseContext`) is one; a script can make one directly.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence, TypeVar

import torch

from archnas.config.schema import CheckpointConf
from archnas.utils import atomic
from archnas.utils.nofollow import open_append, unplant

T = TypeVar("T")


@dataclass(kw_only=True)
class TrainingEnv:
    name: str  # shown in progress lines, e.g. "search" or "eval"
    dir: Path
    log: logging.Logger
    device: torch.device
    checkpoint: CheckpointConf = field(default_factory=CheckpointConf)
    resume: bool = True  # continue from the folder's checkpoint, if it has one
    log_every_steps: int = 50  # plain progress lines when stdout is not a terminal (0: none by count)
    log_every_seconds: float = 30.0  # ... and one whenever this long passed since the last (0: none by time)
    clock: Callable[[], float] = time.monotonic  # what progress lines measure time with (tests pass a fake one)
    tensorboard: bool = True
    hparams: dict[str, Any] = field(default_factory=dict)  # the settings TensorBoard's hparams tab shows (nested)
    rank: int = 0
    world_size: int = 1
    control_group: Any = None  # a gloo group for host-side agreement between ranks (None: the default group)
    section_key: str = ""  # where the trained section sits in the config ("nas.eval"), for messages
    probe: Any = None  # an `archnas.training.probe.Probe`: every Trainer here is timed and stopped (a dry run)
    _tb: Any = field(default=None, repr=False)

    @property
    def is_main(self) -> bool:
        """Only the main process (rank 0) writes files."""
        return self.rank == 0

    def commit(self, resumed: dict[str, Any] | None = None, config_changes: Sequence[dict[str, Any]] = ()) -> None:
        """The Trainer calls this once it has checked what it was given (config, checkpoint) and
        is about to train: an env that holds back its writes until then (a phase's) writes them
        now, so a run refused before this point changes nothing. `resumed`: where training goes
        on from; `config_changes`: every change of settings a resume brought, as the trainer
        records them. This one writes nothing, so there is nothing to hold back."""

    def open_tensorboard(self, purge_step: int | None = None) -> Any:
        """The SummaryWriter of this folder (rank 0, when TensorBoard is on); `purge_step` drops
        events a resumed run is about to redo."""
        if self._tb is None and self.is_main and self.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            unplant(self.dir / "tb", self.log, folder=True)  # events go into the phase's own folder, not a link's
            self._tb = SummaryWriter(str(self.dir / "tb"), purge_step=purge_step)
        return self._tb

    def write_metrics(self, record: dict[str, Any], filename: str = "metrics.jsonl") -> None:
        """Append one JSON line (rank 0 only)."""
        if self.is_main:
            unplant(self.dir / filename, self.log)  # never appended through a link planted in the folder
            with open_append(self.dir / filename) as f:
                f.write(json.dumps(record, default=float) + "\n")

    def rewrite_metrics(self, records: Iterable[dict[str, Any]], filename: str = "metrics.jsonl") -> None:
        """Replace the metrics file with `records`, e.g. the history a resumed checkpoint holds."""
        if self.is_main:
            atomic.write_text(self.dir / filename, "".join(json.dumps(r, default=float) + "\n" for r in records))

    def progress(self, items: Iterable[T], total: int, desc: str, done: int = 0) -> Iterator[T]:
        """Iterate with a progress bar on a terminal, or, otherwise (a pipe, a log file), plain
        lines every `log_every_steps` steps and whenever `log_every_seconds` passed since the
        last line: a count alone says nothing for minutes when an epoch has few slow steps.
        `total` counts every step of the epoch, `done` those finished before (a resumed epoch)."""
        if self.is_main and sys.stdout.isatty():
            from tqdm import tqdm

            yield from tqdm(items, total=total, initial=done, desc=desc, leave=False, dynamic_ncols=True)
            return
        every = self.log_every_steps if self.is_main else 0
        seconds = self.log_every_seconds if self.is_main else 0.0
        start = last = self.clock()
        for i, item in enumerate(items, done + 1):
            yield item
            if i >= total or not (every or seconds):
                continue  # the epoch line follows
            now = self.clock()
            if (every and i % every == 0) or (seconds and now - last >= seconds):
                elapsed = now - start
                left = elapsed / (i - done) * (total - i)
                self.log.info(f"{desc}: step {i}/{total}, {elapsed:.0f}s, about {left:.0f}s left in the epoch")
                last = now

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        for h in list(self.log.handlers):
            self.log.removeHandler(h)
            h.close()
