"""A probe: the first few steps of a training, timed, then the training stopped (the dry run's
measurement, `archnas plan` / `--dry-run`).

A run whose `TrainingEnv.probe` is set gives every Trainer it builds one more hook,
`ProbeHook`: it times `warmup` + `steps` optimizer steps (each from the end of the one before,
so fetching and augmenting the batch counts, as it does in `step_time`), then times what the
training does besides steps, once each: a validation pass (a few batches, scaled to the val
loader's length) and a checkpoint save (which also leaves the weights for a stage that inherits
them), and raises `ProbeDone`. What it measured stays on the `Probe` for the caller, who
multiplies it out (`TrainerMeasure.estimate`).

The Trainer knows nothing of this beyond registering the hook; nothing here knows of NAS.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from itertools import islice
from typing import TYPE_CHECKING, Any, Optional

import torch

from archnas.training.hooks import HookBase

if TYPE_CHECKING:
    from archnas.training.trainer import Trainer


class ProbeDone(BaseException):
    """A probed training (or selection) measured what it needed and stops. A BaseException, as
    `RunInterrupted` is, so no `except Exception` in the code it unwinds through swallows it."""


@dataclass
class TrainerMeasure:
    """What one probed Trainer measured, and the training it belongs to."""

    epochs: int
    steps_per_epoch: int
    step_seconds: list[float]  # the timed steps, after the warm-up
    warmup_seconds: list[float]
    val_batches: int = 0  # of the val loader (0: the training validates on nothing)
    val_passes: int = 0  # how many validation passes the whole training runs
    val_batch_seconds: Optional[float] = None  # per val batch, measured
    checkpoint_seconds: Optional[float] = None
    checkpoints: int = 0  # saves the whole training writes (common.checkpoint)
    started: float = 0.0  # time.perf_counter() when its first epoch began (what came before is setup)

    def steps(self) -> list[float]:
        """The timed steps, or the warm-up ones when the training had no more steps than those."""
        return self.step_seconds or self.warmup_seconds

    def estimate(self, step: Optional[float] = None) -> float:
        """Seconds for the whole training: every step at `step` seconds (default the median
        measured), every validation pass and every checkpoint save."""
        step = statistics.median(self.steps()) if step is None else step
        return (self.epochs * self.steps_per_epoch * step
                + self.val_passes * self.val_batches * (self.val_batch_seconds or 0.0)
                + self.checkpoints * (self.checkpoint_seconds or 0.0))

    def to_dict(self) -> dict[str, Any]:
        steps = self.steps()
        return {
            "epochs": self.epochs, "steps_per_epoch": self.steps_per_epoch,
            "step_s": {"median": statistics.median(steps), "min": min(steps), "max": max(steps),
                       "measured": len(steps), "warmup": len(self.warmup_seconds) if self.step_seconds else 0},
            "val_passes": self.val_passes, "val_batches": self.val_batches,
            "val_pass_s": None if self.val_batch_seconds is None else self.val_batches * self.val_batch_seconds,
            "checkpoints": self.checkpoints, "checkpoint_s": self.checkpoint_seconds,
        }


@dataclass
class Probe:
    """How much a probe measures (`warmup` untimed steps, then `steps` timed ones; a selection:
    `steps` candidates), and what the current stage's first probed training measured."""

    steps: int = 5
    warmup: int = 1
    trainer: Optional[TrainerMeasure] = None
    extra: dict[str, Any] = field(default_factory=dict)  # what a selection adds (candidates, seconds each)

    def reset(self) -> None:
        self.trainer, self.extra = None, {}

    def hook(self) -> "ProbeHook":
        return ProbeHook(self)


def _now(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)  # the step's kernels have run: its time is the device's too
    return time.perf_counter()


def validation_passes(epochs: int, freq: int) -> int:
    """Epochs after which the Trainer validates: every `freq`-th and the last."""
    return sum(1 for e in range(1, epochs + 1) if e % max(freq, 1) == 0 or e == epochs)


def checkpoint_saves(trainer: "Trainer") -> int:
    """Saves of `checkpoint_last.pt` a whole training writes (`PeriodicCheckpoint`: every N epochs,
    every N steps, after the last epoch; the minutes rule and best-model saves are not counted)."""
    conf, epochs = trainer.env.checkpoint, trainer.conf.epochs
    if not conf.enabled:
        return 0
    by_epoch = sum(1 for e in range(1, epochs + 1) if e == epochs or (conf.every_epochs and e % conf.every_epochs == 0))
    by_step = epochs * trainer.steps_per_epoch // conf.every_steps if conf.every_steps > 0 else 0
    return by_epoch + by_step


class ProbeHook(HookBase):
    """Times the steps of one training and stops it (see the module docstring)."""

    def __init__(self, probe: Probe):
        self.probe = probe
        self.times: list[float] = []
        self.mark: Optional[float] = None
        self.started: Optional[float] = None

    def before_epoch(self) -> None:
        self.mark = _now(self.trainer.device)
        if self.started is None:
            self.started = self.mark

    def after_step(self) -> None:
        now = _now(self.trainer.device)
        self.times.append(now - (self.mark if self.mark is not None else now))
        self.mark = now
        if len(self.times) >= self.probe.warmup + self.probe.steps:
            self.finish()

    def after_fit(self) -> None:
        self.finish()  # a training shorter than the probe: measured whole

    def finish(self) -> None:
        t = self.trainer
        warm = min(self.probe.warmup, len(self.times))
        measure = TrainerMeasure(epochs=t.conf.epochs, steps_per_epoch=t.steps_per_epoch,
                                 step_seconds=self.times[warm:], warmup_seconds=self.times[:warm],
                                 checkpoints=checkpoint_saves(t), started=self.started or 0.0)
        if t.val_loader is not None:
            measure.val_batches = len(t.val_loader)  # type: ignore[arg-type]
            measure.val_passes = validation_passes(t.conf.epochs, t.conf.validation.freq)
            n = max(1, min(self.probe.steps, measure.val_batches))
            start = _now(t.device)
            t.evaluate(islice(iter(t.val_loader), n), "val")
            measure.val_batch_seconds = (_now(t.device) - start) / n
        start = _now(t.device)
        t.checkpointer.save(last=True)  # also the weights a later stage of the dry run inherits
        measure.checkpoint_seconds = _now(t.device) - start
        if self.probe.trainer is None:  # the stage's first training (a selection's first trial)
            self.probe.trainer = measure
        raise ProbeDone("probed")
