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


def pointwise(x: Tensor, conv: nn.Conv2d) -> Tensor:
    """`conv(x)` for a 1x1 stride-1 conv, as a matrix product when `x` is channels_last on CPU."""
    if x.device.type != "cpu" or x.dim() != 4 or not is_plain_1x1(conv) or x.is_contiguous() \
            or not x.is_contiguous(memory_format=torch.channels_last):
        return conv(x)
    weight = conv.weight.reshape(conv.out_channels, conv.in_channels)
    return F.linear(x.permute(0, 2, 3, 1), weight, conv.bias).permute(0, 3, 1, 2)
