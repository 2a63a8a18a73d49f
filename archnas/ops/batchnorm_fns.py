"""BatchNorm2d modules applied as functions, so a fused forward can fold work into them.

A mixed op multiplies each candidate's final BatchNorm output by the candidate's weight. Both
are per-channel affine maps, so `w * bn(x)` is one `F.batch_norm` call whose affine weight is
`w` (times gamma, and beta times `w`, when the BN is affine): no separate product is computed
or kept for backward, and the gradient of `w` comes out of BatchNorm's own backward.

The pooling candidates of every edge that reads a state compute the same pool of the same
input; in training mode their BatchNorms then normalize with the same batch statistics, so the
normalized pool is computed once (`normalize_shared`) and each BatchNorm only updates its own
running statistics with those statistics.

Both functions keep `nn.BatchNorm2d.forward`'s semantics: the module's own `training` flag,
`num_batches_tracked`, momentum None as a cumulative average, running stats in eval mode.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def count_batch(bn: nn.BatchNorm2d) -> float:
    """The running-stats update factor of this forward, counting the batch when the module
    would (training mode, tracking statistics), as `nn.BatchNorm2d.forward` does."""
    if bn.training and bn.track_running_stats:
        bn.num_batches_tracked.add_(1)
        if bn.momentum is None:
            return 1.0 / float(bn.num_batches_tracked)
    return 0.0 if bn.momentum is None else bn.momentum


def scaled_affine(bn: nn.BatchNorm2d, scale: Tensor | None, channels: int) -> tuple[Tensor | None, Tensor | None]:
    """BatchNorm's affine weight and bias for `bn(x) * scale` (`scale` 0-dim, or None for 1)."""
    weight, bias = bn.weight, bn.bias
    if scale is not None:
        # contiguous: CPU BatchNorm's backward reads a stride-0 weight wrongly on 1x1 maps (torch 2.13)
        scale = scale.reshape(1).expand(channels).contiguous()
        weight = scale if weight is None else weight * scale
        bias = None if bias is None else bias * scale
    return weight, bias


def check_channels(bn: nn.BatchNorm2d, channels: int, weight: Tensor | None, bias: Tensor | None) -> None:
    """Refuse per-channel tensors whose length is not `channels`. ATen's CPU batch-norm kernels
    index the running statistics and the affine tensors by the input's channel without checking
    their lengths (torch 2.13): a shorter buffer is written out of bounds, corrupting the heap."""
    per_channel = [t for t in (weight, bias, bn.running_mean, bn.running_var) if t is not None]
    if bn.num_features != channels or any(t.shape != (channels,) for t in per_channel):
        raise ValueError(f"BatchNorm over {channels} channels: its tensors must have shape ({channels},), got "
                         f"{[tuple(t.shape) for t in per_channel]} (num_features={bn.num_features})")


def uses_batch_stats(bn: nn.BatchNorm2d) -> bool:
    return bn.training or (bn.running_mean is None and bn.running_var is None)


def scaled_batch_norm(x: Tensor, bn: nn.BatchNorm2d, scale: Tensor | None = None) -> Tensor:
    """`bn(x) * scale` (`scale` a 0-dim tensor, or None for 1) as one BatchNorm call."""
    weight, bias = scaled_affine(bn, scale, x.shape[1])
    check_channels(bn, x.shape[1], weight, bias)
    factor = count_batch(bn)
    keep_buffers = not bn.training or bn.track_running_stats
    return F.batch_norm(
        x,
        bn.running_mean if keep_buffers else None,
        bn.running_var if keep_buffers else None,
        weight,
        bias,
        uses_batch_stats(bn),
        factor,
        bn.eps,
    )


def can_share_statistics(bns: Sequence[nn.BatchNorm2d]) -> bool:
    """Whether `normalize_shared` applies: non-affine, tracking, training, one eps."""
    return bool(bns) and all(
        bn.training and bn.track_running_stats and not bn.affine and bn.eps == bns[0].eps for bn in bns
    )


def normalize_shared(x: Tensor, bns: Sequence[nn.BatchNorm2d]) -> Tensor:
    """The output every one of `bns` (see `can_share_statistics`) would give for `x`, computed
    once, with each module's running statistics and batch count updated as its forward would."""
    with torch.no_grad():
        var, mean = torch.var_mean(x.detach(), dim=(0, 2, 3), correction=1)
        for bn in bns:
            factor = count_batch(bn)
            bn.running_mean.mul_(1.0 - factor).add_(mean, alpha=factor)
            bn.running_var.mul_(1.0 - factor).add_(var, alpha=factor)
    return F.batch_norm(x, None, None, None, None, True, 0.0, bns[0].eps)
