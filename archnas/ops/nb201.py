"""The operations of NAS-Bench-201 (Dong & Yang, ICLR 2020), layer for layer as its reference code
defines them, so parameter counts and multiply-adds equal the benchmark's: ReLU-Conv-BN (no conv
bias, affine BatchNorm with running statistics), 3x3 average pooling without the padded zeros,
the zero op, identity, and the residual block between stages. Plain torch modules: a frozen
NAS-Bench-201 network is made of these and torch's own.
"""

from __future__ import annotations

from typing import Callable

from torch import Tensor, nn

# The benchmark's edge ops, by NNI's names (the NAS-Bench-201 API says nor_conv_3x3, nor_conv_1x1).
NB201_OPS = ("none", "skip_connect", "conv_1x1", "conv_3x3", "avg_pool_3x3")


class ReLUConvBN(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, kernel_size: int, stride: int, padding: int, affine: bool = True,
                 track_running_stats: bool = True):
        super().__init__(nn.ReLU(inplace=False), nn.Conv2d(c_in, c_out, kernel_size, stride, padding, bias=False),
                         nn.BatchNorm2d(c_out, affine=affine, track_running_stats=track_running_stats))


class Zero(nn.Module):
    """`none`: the edge is absent (zeros of the input's shape)."""

    def forward(self, x: Tensor) -> Tensor:
        return x.mul(0.0)


class ResNetBasicblock(nn.Module):
    """Between stages: two ReLU-Conv-BN (the first of stride 2) plus a 2x2-average-pooled 1x1 conv
    shortcut."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv_a = ReLUConvBN(c_in, c_out, 3, 2, 1)
        self.conv_b = ReLUConvBN(c_out, c_out, 3, 1, 1)
        self.downsample = nn.Sequential(nn.AvgPool2d(2, 2), nn.Conv2d(c_in, c_out, 1, bias=False))

    def forward(self, x: Tensor) -> Tensor:
        return self.downsample(x) + self.conv_b(self.conv_a(x))


def nb201_op(name: str, affine: bool = True, track_running_stats: bool = True) -> Callable[[int, int], nn.Module]:
    """The factory `f(in_features, out_features)` of one edge op (cells keep their width); the
    BatchNorm settings are those of the conv ops (the reference searches with both off)."""
    bn = {"affine": affine, "track_running_stats": track_running_stats}
    factories: dict[str, Callable[[int, int], nn.Module]] = {
        "none": lambda c_in, c_out: Zero(),
        "skip_connect": lambda c_in, c_out: nn.Identity(),
        "conv_1x1": lambda c_in, c_out: ReLUConvBN(c_in, c_out, 1, 1, 0, **bn),
        "conv_3x3": lambda c_in, c_out: ReLUConvBN(c_in, c_out, 3, 1, 1, **bn),
        "avg_pool_3x3": lambda c_in, c_out: nn.AvgPool2d(3, 1, 1, count_include_pad=False),
    }
    return factories[name]
