"""[depthwise conv ->] 1x1 conv -> BatchNorm as one autograd node that keeps only its input.

Every conv candidate of a search cell ends in stages of this shape (sep_conv has two, dil_conv
one). Autograd would keep the depthwise output (for the 1x1 conv's weight gradient) and the 1x1
output (for BatchNorm's backward): two activation-sized tensors per stage, six per edge, most of
a search step's memory. Here the forward keeps the input (which the layer before keeps anyway:
it is the shared ReLU of a state, or the ReLU output inside a sep_conv) and BatchNorm's batch
statistics; the backward recomputes the two convolutions, which costs about as much as their
forward, a few percent of the step (measured by `scripts/bench_supernet.py`).

The forward is the modules' own computation: the convs read their weights, BatchNorm uses and
updates its running statistics as `nn.BatchNorm2d.forward` does (the caller counts the batch),
and the BatchNorm's affine weight may carry a mixed-op weight (`batchnorm_fns`). Only training
mode (batch statistics) is handled here; eval-mode BatchNorm goes through the plain modules.

Under autocast the node computes what autocast would: the convolutions on inputs and weights cast
to the autocast dtype, BatchNorm on their output with float32 parameters and statistics. It casts
them itself and runs with autocast off, because autocast only casts the inputs of ops called in
a forward, not those of the backward kernels the node calls; the recomputation in backward then
sees the same dtypes as the forward did.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from archnas.ops.batchnorm_fns import check_channels
from archnas.ops.layout import memory_format
from archnas.ops.pointwise import pointwise, pointwise_backward


@dataclass(frozen=True)
class DepthwiseSpec:
    """How to run the depthwise conv (it may differ from its module's settings, e.g. on phases)."""

    stride: int
    padding: int
    dilation: int
    groups: int


def _convs(x: Tensor, dw_weight: Tensor | None, dw: DepthwiseSpec | None, pw: nn.Conv2d, pw_weight: Tensor) -> Tensor:
    if dw_weight is not None:
        x = F.conv2d(x, dw_weight, None, dw.stride, dw.padding, dw.dilation, dw.groups)
    return pointwise(x, pw, pw_weight)


class _ConvBN(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, dw_weight: Tensor | None, pw_weight: Tensor, bn_weight: Tensor | None,
                bn_bias: Tensor | None, dw: DepthwiseSpec | None, pw: nn.Conv2d, running_mean: Tensor | None,
                running_var: Tensor | None, momentum: float, eps: float) -> Tensor:
        y = _convs(x, dw_weight, dw, pw, pw_weight)
        if y.numel() == y.shape[1]:
            raise ValueError(f"conv_bn: expected more than 1 value per channel when training, got {tuple(y.shape)}")
        out, mean, invstd = torch.native_batch_norm(y, bn_weight, bn_bias, running_mean, running_var, True, momentum, eps)
        ctx.save_for_backward(x, dw_weight, pw_weight, bn_weight, bn_bias, mean, invstd)
        ctx.dw, ctx.pw, ctx.eps = dw, pw, eps
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):
        if torch.is_grad_enabled():
            return _differentiable_backward(ctx, grad)
        x, dw_weight, pw_weight, bn_weight, bn_bias, mean, invstd = ctx.saved_tensors
        needs = ctx.needs_input_grad
        dw = ctx.dw
        with torch.no_grad():
            d = x if dw_weight is None else F.conv2d(x, dw_weight, None, dw.stride, dw.padding, dw.dilation, dw.groups)
            y = pointwise(d, ctx.pw, pw_weight)
        mask = [True, bn_weight is not None and needs[3], bn_bias is not None and needs[4]]
        grad_y, grad_bn_w, grad_bn_b = torch.ops.aten.native_batch_norm_backward(
            grad.contiguous(memory_format=memory_format(y)), y, bn_weight, None, None, mean, invstd, True, ctx.eps,
            mask)
        del y
        need_d = needs[0] or (dw_weight is not None and needs[1])
        grad_d, grad_pw = pointwise_backward(grad_y, d, ctx.pw, pw_weight, need_d, needs[2])
        del grad_y
        grad_x = grad_dw = None
        if dw_weight is None:
            grad_x = grad_d
        elif need_d:
            grad_x, grad_dw, _ = torch.ops.aten.convolution_backward(
                grad_d.contiguous(memory_format=memory_format(d)), x, dw_weight, None, [dw.stride] * 2,
                [dw.padding] * 2, [dw.dilation] * 2, False, [0, 0], dw.groups, [needs[0], needs[1], False])
        return (grad_x if needs[0] else None, grad_dw, grad_pw, grad_bn_w if mask[1] else None,
                grad_bn_b if mask[2] else None, None, None, None, None, None, None)


def _differentiable_backward(ctx, grad: Tensor) -> tuple:
    """The backward under `create_graph=True` (e.g. an exact second-order reference): autograd's
    gradient of a recomputed forward, so it is itself differentiable. Batch statistics are
    recomputed from the same input; running statistics are not touched again."""
    x, dw_weight, pw_weight, bn_weight, bn_bias, _, _ = ctx.saved_tensors
    inputs = (x, dw_weight, pw_weight, bn_weight, bn_bias)
    wanted = [i for i, t in enumerate(inputs) if t is not None and ctx.needs_input_grad[i]]
    y = F.batch_norm(_convs(x, dw_weight, ctx.dw, ctx.pw, pw_weight), None, None, bn_weight, bn_bias, True, 0.0,
                     ctx.eps)
    grads = torch.autograd.grad(y, [inputs[i] for i in wanted], grad, create_graph=True)
    out: list[Tensor | None] = [None] * 11
    for i, g in zip(wanted, grads):
        out[i] = g
    return tuple(out)


def _check_shapes(x: Tensor, dw: nn.Conv2d | None, dw_spec: DepthwiseSpec | None, pw: nn.Conv2d,
                  bn: nn.BatchNorm2d, bn_weight: Tensor | None, bn_bias: Tensor | None) -> None:
    """Refuse what the conv modules would refuse and what ATen's batch-norm kernels do not check,
    before the node hands these tensors to those kernels directly (forward and backward): a
    per-channel tensor of the wrong length is read or written out of bounds there."""
    if x.dim() != 4:
        raise ValueError(f"conv_bn: expected a 4-d input, got shape {tuple(x.shape)}")
    channels_in = pw.in_channels if dw is None else dw.in_channels
    if x.shape[1] != channels_in or (dw is not None and dw.out_channels != pw.in_channels):
        raise ValueError(f"conv_bn: input has {x.shape[1]} channels, the convs expect {channels_in}")
    if dw is not None and (dw_spec is None or dw_spec.groups != dw.groups or dw.weight.shape[1] * dw.groups != channels_in):
        raise ValueError(f"conv_bn: the depthwise spec {dw_spec} does not fit the conv's groups={dw.groups}")
    check_channels(bn, pw.out_channels, bn_weight, bn_bias)


def conv_bn(x: Tensor, dw: nn.Conv2d | None, dw_spec: DepthwiseSpec | None, pw: nn.Conv2d, bn: nn.BatchNorm2d,
            bn_weight: Tensor | None, bn_bias: Tensor | None, factor: float) -> Tensor:
    """`bn(pw(dw(x)))` in training mode, with BatchNorm's affine weight and bias given (they may
    carry a mixed-op weight) and `factor` the running-stats update factor of this batch."""
    _check_shapes(x, dw, dw_spec, pw, bn, bn_weight, bn_bias)
    dw_weight, pw_weight = None if dw is None else dw.weight, pw.weight
    stats = (bn.running_mean, bn.running_var) if bn.track_running_stats else (None, None)
    device_type = x.device.type
    if not torch.is_autocast_enabled(device_type):
        return _ConvBN.apply(x, dw_weight, pw_weight, bn_weight, bn_bias, dw_spec, pw, *stats, factor, bn.eps)
    dtype = torch.get_autocast_dtype(device_type)
    x, pw_weight = x.to(dtype), pw_weight.to(dtype)
    dw_weight = None if dw_weight is None else dw_weight.to(dtype)
    with torch.autocast(device_type, enabled=False):
        return _ConvBN.apply(x, dw_weight, pw_weight, bn_weight, bn_bias, dw_spec, pw, *stats, factor, bn.eps)
