"""1x1 convolutions of channels_last CPU tensors as matrix products.

A channels_last tensor is an [N*H*W, C] matrix in memory, so a 1x1 convolution is one GEMM.
oneDNN's convolution backward for the narrow layers of a search cell (16-64 channels) runs
about 2.5x slower than `F.linear` on the same memory (fwd+bwd at [16, 16, 32, 32]: 1.3 ms vs
0.5 ms on this project's CI CPU), whose backward is two more GEMMs. The result is the same
convolution; other layouts, devices and conv settings use the conv itself.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def is_plain_1x1(conv: nn.Conv2d) -> bool:
    return conv.kernel_size == (1, 1) and conv.stride == (1, 1) and conv.padding == (0, 0) \
        and conv.dilation == (1, 1) and conv.groups == 1 and conv.padding_mode == "zeros"


def pointwise(x: Tensor, conv: nn.Conv2d, weight: Tensor | None = None) -> Tensor:
    """`conv(x)` for a 1x1 stride-1 conv, as a matrix product when `x` is channels_last on CPU.

    `weight` replaces `conv.weight` (a recomputation differentiates with respect to a copy).
    A conv with forward hooks (feature extraction, counting tools) is called as the module, so
    its hooks see the call, and so is one traced by `torch.fx` (`archnas export --format py`),
    whose graph then holds the conv as a module rather than this function's layout test.
    """
    if weight is None and (conv._forward_hooks or conv._forward_pre_hooks or isinstance(x, torch.fx.Proxy)):
        return conv(x)
    weight = conv.weight if weight is None else weight
    if x.device.type != "cpu" or x.dim() != 4 or not is_plain_1x1(conv) or x.is_contiguous() \
            or not x.is_contiguous(memory_format=torch.channels_last):
        return conv._conv_forward(x, weight, conv.bias)
    return F.linear(x.permute(0, 2, 3, 1), weight.reshape(conv.out_channels, conv.in_channels), conv.bias) \
        .permute(0, 3, 1, 2)


def _as_matrix(x: Tensor) -> Tensor | None:
    """A channels_last CPU tensor as its [N*H*W, C] matrix (a view), else None."""
    if x.device.type != "cpu" or x.dim() != 4 or x.is_contiguous() or not x.is_contiguous(memory_format=torch.channels_last):
        return None
    return x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])


def pointwise_backward(grad: Tensor, x: Tensor, conv: nn.Conv2d, weight: Tensor, need_input: bool,
                       need_weight: bool) -> tuple[Tensor | None, Tensor | None]:
    """Gradients of `pointwise(x, conv, weight)` (bias-free) for the input and the weight."""
    g, m = _as_matrix(grad), _as_matrix(x)
    if g is None or m is None or not is_plain_1x1(conv):
        grad_x, grad_w, _ = torch.ops.aten.convolution_backward(
            grad, x, weight, None, conv.stride, conv.padding, conv.dilation, False, [0, 0], conv.groups,
            [need_input, need_weight, False])
        return grad_x, grad_w
    grad_x = grad_w = None
    if need_input:
        n, _, h, w = x.shape
        grad_x = (g @ weight.reshape(conv.out_channels, conv.in_channels)).view(n, h, w, -1).permute(0, 3, 1, 2)
    if need_weight:
        grad_w = (g.t() @ m).view_as(weight)
    return grad_x, grad_w
