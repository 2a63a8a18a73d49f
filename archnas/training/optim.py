"""Optimizers from config: sgd, adam, adamw, radam, with weight decay optionally lifted from BN and biases.

The caller says which parameters an optimizer trains (a supernet's weight optimizer gets its
weights, never its architecture parameters).
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

from archnas.config.ranges import check_optimizer
from archnas.config.schema import OptimizerConf, OptimizerType
from archnas.errors import ConfigError


def param_groups(params: Iterable[nn.Parameter], decay: float, decay_bn: float | None) -> list[dict]:
    """Two groups when BN/bias decay differs: 1-d tensors are exactly the norm scales/shifts and biases."""
    params = list(params)
    if decay_bn is None or decay_bn == decay:
        return [{"params": params, "weight_decay": decay}]
    groups = [
        {"params": [p for p in params if p.dim() > 1], "weight_decay": decay},
        {"params": [p for p in params if p.dim() <= 1], "weight_decay": decay_bn},
    ]
    return [g for g in groups if g["params"]]


def build_optimizer(
    conf: OptimizerConf, params: Iterable[nn.Parameter], key: str = "trainer.optimizer"
) -> torch.optim.Optimizer:
    """`key` is where `conf` sits in the config, for error messages (the alpha optimizer reuses this)."""
    check_optimizer(conf, key)
    groups = param_groups(params, conf.decay, conf.decay_bn)
    if not any(g["params"] for g in groups):
        raise ValueError("the optimizer got no parameters to train")
    if conf.type == OptimizerType.sgd:
        return torch.optim.SGD(groups, lr=conf.lr, momentum=conf.momentum, nesterov=conf.nesterov)
    classes = {OptimizerType.adam: torch.optim.Adam, OptimizerType.adamw: torch.optim.AdamW,
               OptimizerType.radam: torch.optim.RAdam}
    cls = classes[conf.type]
    return cls(groups, lr=conf.lr, betas=(conf.betas[0], conf.betas[1]))


SCHEDULE_KEYS = ("params", "lr", "initial_lr", "max_lr", "min_lr", "base_momentum", "max_momentum")


def apply_hyperparameters(optimizer: torch.optim.Optimizer, conf: OptimizerConf, params: Iterable[nn.Parameter],
                          key: str, keep_lr: bool) -> None:
    """Give a resumed optimizer `conf`'s hyperparameters (momentum, weight decay, betas, ... and,
    unless `keep_lr`, the lr: one without a schedule), keeping its per-parameter state (momentum
    buffers, Adam moments). A change of type or of its parameter groups is refused: that state
    would not fit."""
    fresh = build_optimizer(conf, params, key=key)
    if type(fresh) is not type(optimizer) or len(fresh.param_groups) != len(optimizer.param_groups):
        raise ConfigError(
            f"{key}: the checkpoint's optimizer is {type(optimizer).__name__} with {len(optimizer.param_groups)} "
            f"parameter group(s), the config's {type(fresh).__name__} with {len(fresh.param_groups)}; an optimizer's "
            "type and groups (type, decay_bn) cannot change on a resume, even with --force: restore them, or pass "
            "--restart to start the phase over (the old folder is kept)"
        )
    skip = SCHEDULE_KEYS if keep_lr else ("params",)
    for group, new in zip(optimizer.param_groups, fresh.param_groups):
        group.update({k: v for k, v in new.items() if k not in skip})
