"""Trainer hooks (detectron2 style) and the ones every Trainer runs: drop-path ramp, periodic
checkpoints, metrics output.

A hook sees the whole trainer (`self.trainer`) at six points: before/after fit, epoch and step,
and at a seventh, `before_save`, just before a checkpoint is written (what a hook buffers must be
out by then: a resumed run redoes only what came after the checkpoint).
`before_epoch` also runs when a run resumes in the middle of an epoch, so it must only set state
that is a function of the epoch (as the drop-path ramp does), never accumulate.
"""

from __future__ import annotations

import math
from time import monotonic
from typing import TYPE_CHECKING, Any

from archnas.config.schema import CheckpointConf
from archnas.errors import ConfigError

if TYPE_CHECKING:
    from archnas.training.trainer import Trainer


class HookBase:
    trainer: "Trainer"

    def before_fit(self) -> None:
        pass

    def after_fit(self) -> None:
        pass

    def before_epoch(self) -> None:
        pass

    def after_epoch(self) -> None:
        pass

    def before_step(self) -> None:
        pass

    def after_step(self) -> None:
        pass

    def before_save(self) -> None:
        pass


class DropPathRamp(HookBase):
    """Drop-path probability `drop_path_prob * epoch / epochs`, as in the DARTS eval code."""

    def before_epoch(self) -> None:
        t = self.trainer
        model = t.base_model
        if hasattr(model, "drop_path_prob"):
            p = t.conf.drop_path_prob * t.epoch / t.conf.epochs
            model.drop_path_prob(p)
            t.epoch_info["drop_path_prob"] = p


class PeriodicCheckpoint(HookBase):
    """`checkpoint_last.pt` every N epochs, N steps and/or N minutes (`common.checkpoint`), after
    the last epoch, and `checkpoint_best.pt` whenever the validation metric improves."""

    def __init__(self, conf: CheckpointConf):
        for key in ("every_epochs", "every_steps", "every_minutes"):
            if getattr(conf, key) < 0:
                raise ConfigError(f"common.checkpoint.{key}: {getattr(conf, key)} is negative")
        self.conf = conf
        self._last_time = math.inf

    def _minutes_due(self) -> bool:
        return self.conf.every_minutes > 0 and monotonic() - self._last_time >= 60 * self.conf.every_minutes

    def before_fit(self) -> None:
        self._last_time = monotonic()

    def after_step(self) -> None:
        t = self.trainer
        if self.conf.every_steps > 0 and t.global_step % self.conf.every_steps == 0:
            self._save()
        elif self._minutes_due():
            # The clock differs between ranks: the trainer writes it when every rank agrees,
            # at the end of this step.
            t.request_checkpoint()
            self._last_time = monotonic()

    def after_epoch(self) -> None:
        t = self.trainer
        finished = t.epochs_done >= t.conf.epochs
        epochs_due = self.conf.every_epochs > 0 and t.epochs_done % self.conf.every_epochs == 0
        if not (finished or epochs_due) and self._minutes_due():
            t.request_checkpoint()
            self._last_time = monotonic()
        last = finished or epochs_due
        if last or t.new_best:
            self._save(last=last, best=t.new_best)

    def _save(self, last: bool = True, best: bool = False) -> None:
        self.trainer.save_checkpoint(last=last, best=best)
        if last:
            self._last_time = monotonic()


# Record fields that are bookkeeping, not measurements: in metrics.jsonl, never TensorBoard scalars.
NOT_SCALARS = frozenset({"epoch", "global_step", "k", "best_epoch"})
STEP_FLUSH = 256  # step losses are read back from the device in batches of at most this many


class MetricsWriter(HookBase):
    """Each epoch's record to metrics.jsonl, TensorBoard and the log; every step's train loss and
    lr to TensorBoard (`step/train_loss`, `step/lr`); the hyperparameters and final metrics to
    TensorBoard's hparams tab when the training ends.

    TensorBoard's x axis is the global step for every scalar, so epoch and step curves line up.
    The step losses stay on the device and are read back together at the end of each epoch (one
    transfer, not one per step). On resume the jsonl file is rewritten from the checkpoint's
    history and TensorBoard events after the checkpoint's step are purged, so neither holds a
    step twice."""

    def __init__(self) -> None:
        self.tb: Any = None  # the phase's SummaryWriter, None when TensorBoard is off or on other ranks
        self._steps: list[tuple[int, float, Any]] = []  # (global step, lr, loss tensor) not yet written
        self._lr = 0.0

    def before_fit(self) -> None:
        t = self.trainer
        t.env.rewrite_metrics(t.history.records)
        self.tb = t.env.open_tensorboard(purge_step=t.global_step + 1)

    def before_step(self) -> None:
        if self.tb is not None:
            self._lr = self.trainer.optimizer.param_groups[0]["lr"]  # the lr this step uses

    def after_step(self) -> None:
        t = self.trainer
        if self.tb is not None and t.step_loss is not None:
            self._steps.append((t.global_step, self._lr, t.step_loss))
            if len(self._steps) >= STEP_FLUSH:
                self._flush_steps()

    def _flush_steps(self) -> None:
        if not self._steps:
            return
        import torch

        losses = torch.stack([loss.float() for _, _, loss in self._steps]).tolist()
        for (step, lr, _), loss in zip(self._steps, losses):
            self.tb.add_scalar("step/train_loss", loss, step)
            self.tb.add_scalar("step/lr", lr, step)
        self._steps.clear()

    def before_save(self) -> None:
        if self.tb is not None:
            self._flush_steps()
            self.tb.flush()

    def after_epoch(self) -> None:
        t = self.trainer
        record = t.history.last
        t.env.write_metrics(record)
        if self.tb is not None:
            self._flush_steps()
            for key, value in record.items():
                if key not in NOT_SCALARS and isinstance(value, (int, float)) and not isinstance(value, bool):
                    self.tb.add_scalar(key, value, record["global_step"])
            self.tb.flush()
        val = f", val loss {record['val_loss']:.4f} top1 {record['val_top1']:.2%}" if "val_loss" in record else ""
        t.log.info(
            f"epoch {record['epoch']}/{t.conf.epochs}: train loss {record['train_loss']:.4f} "
            f"top1 {record['train_top1']:.2%}{val}, lr {record['lr']:.3g}, "
            f"{record['epoch_time']:.1f}s ({record['images_per_s']:.0f} img/s)"
        )

    def after_fit(self) -> None:
        if self.tb is None:
            return
        self._flush_steps()
        t = self.trainer
        last = t.history.last or {}
        metrics = {f"hparam/{k}": v for k, v in last.items()
                   if k not in NOT_SCALARS and isinstance(v, (int, float)) and not isinstance(v, bool)}
        if t.history.best_value is not None:
            metrics["hparam/best_val_top1"] = t.history.best_value
        # run_name ".": the hparams go into this folder's run, next to its scalars, not a new one.
        self.tb.add_hparams(t.hparams(), metrics, run_name=".", global_step=t.global_step)
        self.tb.flush()
