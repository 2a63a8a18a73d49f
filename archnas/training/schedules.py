"""Learning-rate schedules from config, built from torch.optim.lr_scheduler and stepped once per
optimizer step.

Lengths are given in epochs and converted to steps, so at every epoch boundary the lr equals the
per-epoch schedule of the DARTS code (cosine from lr to min_lr over the epochs), while inside an
epoch it moves smoothly. A linear warmup (`warmup.epochs`) runs first, from
`warmup.start_factor * lr` to lr; the main schedule then runs over the remaining epochs.
Epoch numbers in `milestones` count from the start of training, warmup included; `step_size`
counts from the end of the warmup.
"""

from __future__ import annotations

from torch.optim import Optimizer
from torch.optim.lr_scheduler import (
    CosineAnnealingLR,
    LambdaLR,
    LRScheduler,
    MultiStepLR,
    OneCycleLR,
    SequentialLR,
    StepLR,
)

from archnas.config.schema import LrScheduleConf, LrScheduleType
from archnas.errors import ConfigError


def _constant(step: int) -> float:
    return 1.0


def build_scheduler(
    conf: LrScheduleConf, optimizer: Optimizer, epochs: int, steps_per_epoch: int, key: str = "trainer.lr_schedule"
) -> LRScheduler:
    """A schedule for an optimizer whose groups still hold their base lr (no scheduler attached yet)."""
    if epochs < 1 or steps_per_epoch < 1:
        raise ValueError(
            f"a schedule needs at least one epoch and one step per epoch, got {epochs} and {steps_per_epoch}"
        )
    base_lrs = [g["lr"] for g in optimizer.param_groups]
    warmup_epochs = conf.warmup.epochs if conf.warmup is not None else 0
    if not 0 <= warmup_epochs < epochs:
        raise ConfigError(f"{key}.warmup.epochs: {warmup_epochs} must be in [0, epochs={epochs})")
    warmup_steps = warmup_epochs * steps_per_epoch
    main_steps = (epochs - warmup_epochs) * steps_per_epoch
    if warmup_steps == 0:
        return _main_schedule(conf, optimizer, base_lrs, main_steps, 0, steps_per_epoch, key)
    start = conf.warmup.start_factor
    if not 0.0 <= start <= 1.0:
        raise ConfigError(f"{key}.warmup.start_factor: {start} is not in [0, 1]")
    # The warmup is built first: it records the base lrs before one_cycle rewrites the groups.
    warmup = LambdaLR(optimizer, lambda step: start + (1.0 - start) * min(step, warmup_steps) / warmup_steps)
    main = _main_schedule(conf, optimizer, base_lrs, main_steps, warmup_epochs, steps_per_epoch, key)
    return SequentialLR(optimizer, [warmup, main], milestones=[warmup_steps])


def _main_schedule(
    conf: LrScheduleConf,
    optimizer: Optimizer,
    base_lrs: list[float],
    steps: int,
    warmup_epochs: int,
    steps_per_epoch: int,
    key: str,
) -> LRScheduler:
    if conf.type == LrScheduleType.constant:
        return LambdaLR(optimizer, _constant)
    if conf.type == LrScheduleType.cosine:
        return CosineAnnealingLR(optimizer, T_max=steps, eta_min=conf.min_lr)
    if conf.type == LrScheduleType.step:
        if conf.step_size < 1:
            raise ConfigError(f"{key}.step_size: {conf.step_size} is not a positive number of epochs")
        return StepLR(optimizer, step_size=conf.step_size * steps_per_epoch, gamma=conf.gamma)
    if conf.type == LrScheduleType.multistep:
        if (
            not conf.milestones
            or sorted(conf.milestones) != list(conf.milestones)
            or conf.milestones[0] <= warmup_epochs
        ):
            raise ConfigError(
                f"{key}.milestones: {conf.milestones} must be increasing epochs after the warmup "
                f"({warmup_epochs} epochs)"
            )
        return MultiStepLR(
            optimizer, [(m - warmup_epochs) * steps_per_epoch for m in conf.milestones], gamma=conf.gamma
        )
    if conf.type == LrScheduleType.one_cycle:
        if not 0.0 < conf.pct_start < 1.0:
            raise ConfigError(f"{key}.pct_start: {conf.pct_start} is not in (0, 1)")
        max_lrs = [conf.max_lr if conf.max_lr is not None else lr for lr in base_lrs]
        return OneCycleLR(optimizer, max_lr=max_lrs, total_steps=steps, pct_start=conf.pct_start)
    raise ConfigError(f"{key}.type: unknown schedule {conf.type!r}")
