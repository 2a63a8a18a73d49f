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


def dense_grad(x: Tensor) -> Tensor:
    """`x`, with its gradient made contiguous in `x`'s memory format."""
    return _DenseGrad.apply(x) if x.requires_grad else x
