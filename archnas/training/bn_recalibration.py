"""Batch-norm recalibration: re-estimate every BatchNorm's running statistics for the network as it
now runs.

A weight-sharing supernet's running statistics average over every path its training sampled, so
one subnet evaluated with them normalizes with the wrong mean and variance; the SPOS authors
report that evaluating inherited weights "would be unstable without" recomputing them (ENOT's
`tune_bn` does the same before its search). Recalibration resets each BatchNorm's statistics and
runs `batches` training batches in train mode without gradients, with momentum None: PyTorch
then keeps the cumulative (equal-weight) average of the batches' statistics, which does not
depend on their order. Only running statistics change; weights and the modules' momentum are
left as they were.
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from archnas.data.loader import Batch


def batch_norms(model: nn.Module) -> list[_BatchNorm]:
    return [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]


@torch.no_grad()
def recalibrate_bn(model: nn.Module, batches: Iterable[Batch], device: torch.device | None = None) -> int:
    """Reset and re-estimate the running statistics of `model`'s BatchNorms from `batches`;
    returns how many batches were used (0 leaves the model untouched: nothing to estimate from)."""
    layers = batch_norms(model)
    batches = list(batches)
    if not layers or not batches:
        return 0
    momenta = [m.momentum for m in layers]
    was_training = model.training
    try:
        for m in layers:
            m.reset_running_stats()
            m.momentum = None
        model.train()
        for x, _ in batches:
            model(x if device is None else x.to(device, non_blocking=True))
    finally:
        for m, momentum in zip(layers, momenta):
            m.momentum = momentum
        model.train(was_training)
    return len(batches)
