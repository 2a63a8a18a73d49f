"""Distributed training under torchrun: the DDP wrapper.

A run started by `torchrun --nproc_per_node N` finds RANK/WORLD_SIZE/LOCAL_RANK in its
environment; a plain `python` run is world size 1 and nothing here does anything.
"""

from __future__ import annotations

import torch.distributed as dist
from torch import nn

from archnas.context import PhaseContext


def wrap_ddp(model: nn.Module, ctx: PhaseContext) -> nn.Module:
    """`model` in DistributedDataParallel when the run has more than one process, else as is."""
    if ctx.run.world_size <= 1 or not dist.is_initialized():
        return model
    device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
