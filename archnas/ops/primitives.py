"""Cell-edge operations: the DARTS primitives and the convolutions cells use to preprocess inputs.

Each op is defined exactly as in the DARTS code (operations.py of quark0/darts), because parameter
counts and multiply-adds are only comparable with published numbers if the layers are identical:
no conv bias, ReLU first, BatchNorm last, depthwise separable convs stacked twice.
Every op keeps its layers in an `nn.Sequential` named `op` (or named convs for FactorizedReduce),
so alternative forwards (a fused search cell) can read the same parameters by name. The forwards
run those layers in order, with 1x1 convolutions through `archnas.ops.pointwise` (a matrix
product on channels_last CPU tensors, the conv itself otherwise).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from archnas.descs.model_desc import OpDesc
from archnas.errors import DescError
from archnas.ops.pointwise import pointwise
from archnas.ops.registry import Op, op_conv, op_param, op_stride, register_op


class Zero(Op):
    """`none`: the candidate that says "no edge"; at stride 2 it halves the spatial size."""

    def __init__(self, desc: OpDesc, affine: bool):
        super().__init__(desc)
        op_conv(desc, same_channels=True)
        self.stride = op_stride(desc)

    def forward(self, x: Tensor) -> Tensor:
        if self.stride == 1:
            return x.mul(0.0)
        return x[:, :, :: self.stride, :: self.stride].mul(0.0)


class Identity(Op):
    """Identity; DARTS never drops the path of an identity edge."""

    droppable = False

    def __init__(self, desc: OpDesc, affine: bool):
        super().__init__(desc)
        if "conv" in desc.params:
            op_conv(desc, same_channels=True)
        if op_stride(desc) != 1:
            raise DescError(f"op {desc.name!r} needs stride 1 (use skip_connect or factorized_reduce to reduce)")

    def forward(self, x: Tensor) -> Tensor:
        return x


class Pool(Op):
    """3x3 max or average pooling; average pooling ignores the zero padding (as DARTS)."""

    pooling = True

    def __init__(self, desc: OpDesc, affine: bool, kind: str, kernel: int = 3):
        super().__init__(desc)
        op_conv(desc, same_channels=True)
        stride = op_stride(desc)
        if kind == "max":
            self.op = nn.MaxPool2d(kernel, stride=stride, padding=kernel // 2)
        else:
            self.op = nn.AvgPool2d(kernel, stride=stride, padding=kernel // 2, count_include_pad=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.op(x)


class WidePool(Pool):
    """5x5 and 7x7 pooling of the NASNet search space (NDS's ops): a class of its own, so the fused
    search cell, whose kernels pool 3x3, leaves it to its own forward."""


def _kernel_and_padding(desc: OpDesc) -> tuple[int, int, int]:
    kernel = op_param(desc, "kernel_size", int, 1)
    return kernel, op_stride(desc), op_param(desc, "padding", int, (kernel - 1) // 2)


class ReLUConvBN(Op):
    """ReLU, conv, BN: DARTS's cell preprocessing (1x1) and a general conv op (`kernel` fixes its
    size: the NASNet space's `conv_1x1` and `conv_3x3`)."""

    def __init__(self, desc: OpDesc, affine: bool, kernel: int | None = None):
        super().__init__(desc)
        conv = op_conv(desc)
        kernel, stride, padding = _kernel_and_padding(desc) if kernel is None else (kernel, op_stride(desc), kernel // 2)
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(conv.ch_in, conv.ch_out, kernel, stride=stride, padding=padding, bias=False),
            nn.BatchNorm2d(conv.ch_out, affine=affine),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.op[2](pointwise(self.op[0](x), self.op[1]))


class ConvBNReLU(Op):
    """Conv, BN, ReLU: the post-activation ordering, for stems and user macros."""

    def __init__(self, desc: OpDesc, affine: bool):
        super().__init__(desc)
        conv = op_conv(desc)
        kernel, stride, padding = _kernel_and_padding(desc)
        self.op = nn.Sequential(
            nn.Conv2d(conv.ch_in, conv.ch_out, kernel, stride=stride, padding=padding, bias=False),
            nn.BatchNorm2d(conv.ch_out, affine=affine),
            nn.ReLU(inplace=False),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.op(x)


class DilConv(Op):
    """ReLU, dilated depthwise conv, pointwise conv, BN (one stage)."""

    def __init__(self, desc: OpDesc, affine: bool, kernel: int, padding: int, dilation: int):
        super().__init__(desc)
        conv = op_conv(desc)
        stride = op_stride(desc)
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(conv.ch_in, conv.ch_in, kernel, stride, padding, dilation=dilation, groups=conv.ch_in, bias=False),
            nn.Conv2d(conv.ch_in, conv.ch_out, 1, bias=False),
            nn.BatchNorm2d(conv.ch_out, affine=affine),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.op[3](pointwise(self.op[1](self.op[0](x)), self.op[2]))


class SepConv(Op):
    """Two stacked ReLU, depthwise conv, pointwise conv, BN stages; only the first one strides."""

    def __init__(self, desc: OpDesc, affine: bool, kernel: int, padding: int, dilation: int = 1):
        super().__init__(desc)
        conv = op_conv(desc)
        stride = op_stride(desc)
        c_in, c_out = conv.ch_in, conv.ch_out
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_in, kernel, stride, padding, dilation=dilation, groups=c_in, bias=False),
            nn.Conv2d(c_in, c_in, 1, bias=False),
            nn.BatchNorm2d(c_in, affine=affine),
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_in, kernel, 1, padding, dilation=dilation, groups=c_in, bias=False),
            nn.Conv2d(c_in, c_out, 1, bias=False),
            nn.BatchNorm2d(c_out, affine=affine),
        )

    def forward(self, x: Tensor) -> Tensor:
        op = self.op
        y = op[3](pointwise(op[1](op[0](x)), op[2]))
        return op[7](pointwise(op[5](op[4](y)), op[6]))


class DilSepConv(SepConv):
    """SepConv with both depthwise convs dilated (AmoebaNet's `dil_sep_conv_3x3`, as NDS defines it);
    a class of its own, so the fused search cell leaves it to its own forward."""


class Conv7x1_1x7(Op):
    """ReLU, 1xk conv, kx1 conv, BN (NASNet/AmoebaNet's factorized 7x7; `conv_3x1_1x3` at k=3)."""

    def __init__(self, desc: OpDesc, affine: bool, kernel: int = 7):
        super().__init__(desc)
        conv = op_conv(desc)
        stride = op_stride(desc)
        pad = kernel // 2
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(conv.ch_in, conv.ch_out, (1, kernel), stride=(1, stride), padding=(0, pad), bias=False),
            nn.Conv2d(conv.ch_out, conv.ch_out, (kernel, 1), stride=(stride, 1), padding=(pad, 0), bias=False),
            nn.BatchNorm2d(conv.ch_out, affine=affine),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.op(x)


class FactorizedReduce(Op):
    """Halve the spatial size without losing every other pixel: two stride-2 1x1 convs, one on
    `x` and one on `x` shifted by a pixel, each producing half the output channels."""

    def __init__(self, desc: OpDesc, affine: bool):
        super().__init__(desc)
        conv = op_conv(desc)
        if conv.ch_out % 2:
            raise DescError(f"op {desc.name!r} needs an even ch_out, got {conv.ch_out}")
        self.relu = nn.ReLU(inplace=False)
        self.conv_1 = nn.Conv2d(conv.ch_in, conv.ch_out // 2, 1, stride=2, padding=0, bias=False)
        self.conv_2 = nn.Conv2d(conv.ch_in, conv.ch_out // 2, 1, stride=2, padding=0, bias=False)
        self.bn = nn.BatchNorm2d(conv.ch_out, affine=affine)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(x)
        return self.bn(torch.cat([self.conv_1(x), self.conv_2(x[:, :, 1:, 1:])], dim=1))


def _skip_connect(desc: OpDesc, affine: bool) -> Op:
    """Identity at stride 1, factorized reduce at stride 2 (the DARTS `skip_connect`)."""
    return Identity(desc, affine) if op_stride(desc) == 1 else FactorizedReduce(desc, affine)


register_op("none", Zero)
register_op("identity", Identity)
register_op("skip_connect", _skip_connect)
register_op("factorized_reduce", FactorizedReduce)
register_op("max_pool_3x3", lambda d, a: Pool(d, a, "max"))
register_op("avg_pool_3x3", lambda d, a: Pool(d, a, "avg"))
register_op("sep_conv_3x3", lambda d, a: SepConv(d, a, 3, 1))
register_op("sep_conv_5x5", lambda d, a: SepConv(d, a, 5, 2))
register_op("sep_conv_7x7", lambda d, a: SepConv(d, a, 7, 3))
register_op("dil_conv_3x3", lambda d, a: DilConv(d, a, 3, 2, 2))
register_op("dil_conv_5x5", lambda d, a: DilConv(d, a, 5, 4, 2))
register_op("conv_7x1_1x7", Conv7x1_1x7)
# the NASNet search space's others (Zoph et al., 2018; as NDS / NNI's hub nasnet.py define them)
register_op("max_pool_5x5", lambda d, a: WidePool(d, a, "max", 5))
register_op("max_pool_7x7", lambda d, a: WidePool(d, a, "max", 7))
register_op("avg_pool_5x5", lambda d, a: WidePool(d, a, "avg", 5))
register_op("conv_1x1", lambda d, a: ReLUConvBN(d, a, kernel=1))
register_op("conv_3x3", lambda d, a: ReLUConvBN(d, a, kernel=3))
register_op("conv_3x1_1x3", lambda d, a: Conv7x1_1x7(d, a, kernel=3))
register_op("dil_sep_conv_3x3", lambda d, a: DilSepConv(d, a, 3, 2, dilation=2))
register_op("relu_conv_bn", ReLUConvBN)
register_op("conv_bn_relu", ConvBNReLU)
