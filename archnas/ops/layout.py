"""Memory layouts: which one a tensor has, and keeping gradients in it.

`dense_grad` is an identity whose backward hands on the gradient in the layout of the forward
tensor.

The gradient of a cell's node reaches it as the sum of what its readers send back, and one of
them is the channel concatenation of the cell output, whose backward sends a strided slice (for
the last cell, an expanded one from the global pool). CPU kernels take slow paths when a
gradient's layout differs from their input's (BatchNorm's backward runs about 6x slower on an
NCHW gradient of a channels_last input), and every term summed into the node gets that same
gradient. One copy at the node is cheaper than slow kernels on every term.
"""

from __future__ import annotations

import torch
from torch import Tensor


def memory_format(x: Tensor) -> torch.memory_format:
    """channels_last if `x` is laid out that way (and not also plainly contiguous), else contiguous."""
    if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


class _DenseGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        ctx.fmt = memory_format(x)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        return grad.contiguous(memory_format=ctx.fmt)


def cpu_channels_last(x: Tensor) -> Tensor:
    """`x` in channels_last on CPU, as it is elsewhere.

    On CPU a search cell's depthwise convolutions and pools run 3-4x faster on channels_last
    tensors and its 1x1 convolutions become plain matrix products (`archnas.ops.pointwise`);
    the fused cell is slower than the plain one on NCHW (8x8 digits: 1.2 s vs 1.0 s per weight
    step) and 1.7x faster on channels_last. On CUDA the layout is the trainer's choice
    (`trainer.channels_last`). Under `torch.fx` tracing (`archnas export --format py`) the layout,
    a choice of speed, not of what is computed, is left out of the graph."""
    if isinstance(x, torch.fx.Proxy) or x.device.type != "cpu" or x.dim() != 4:
        return x
    return x.contiguous(memory_format=torch.channels_last)


def dense_grad(x: Tensor) -> Tensor:
    """`x`, with its gradient made contiguous in `x`'s memory format."""
    return _DenseGrad.apply(x) if x.requires_grad else x
