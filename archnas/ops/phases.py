"""Dilation-2 depthwise convolutions as ordinary ones on the four pixel phases of the input.

On CPU, oneDNN has fast kernels for non-dilated depthwise convolutions only; the backward of a
dilated one falls back to a generic kernel that pads every group to 16 channels and runs 4-8x
slower than the forward (DARTS's dil_conv_3x3/5x5 use dilation 2). A dilation-2 convolution
never mixes pixels of different row or column parity, so with `h = 2i + a`, `w = 2j + b`:

    dilated_conv(x, k, padding p)[.., h, w] = conv(x[.., a::2, b::2], k, padding p/2)[.., i, j]

The four phases are stacked along the batch (`to_phases`), convolved in one call, and put back
in place when the result is added to something (`add_from_phases`). Everything in between that
is per pixel (1x1 convolutions, ReLU) or per channel over all pixels (BatchNorm statistics)
gives the same result in phase order, so a fused search cell stays in phase order from the
depthwise conv to the node sum.

A stride-2 dilation-2 convolution only reads even pixels: it is a stride-1 convolution of
`x[.., ::2, ::2]` (`even_pixels`) with half the padding.
"""

from __future__ import annotations

import torch
from torch import Tensor

from archnas.ops.layout import memory_format


def phases_apply(h: int, w: int, dilation: int, padding: int) -> bool:
    """Whether a dilated conv on an h x w map has the phase form: dilation 2, even padding
    (DARTS's "same" padding 2 and 4) and even sizes."""
    return dilation == 2 and padding % 2 == 0 and h % 2 == 0 and w % 2 == 0


def _to_phases(x: Tensor) -> Tensor:
    n, c, h, w = x.shape
    if memory_format(x) == torch.channels_last:
        nhwc = x.permute(0, 2, 3, 1).reshape(n, h // 2, 2, w // 2, 2, c)
        return nhwc.permute(2, 4, 0, 1, 3, 5).reshape(4 * n, h // 2, w // 2, c).permute(0, 3, 1, 2)
    return x.reshape(n, c, h // 2, 2, w // 2, 2).permute(3, 5, 0, 1, 2, 4).reshape(4 * n, c, h // 2, w // 2)


def _phase_view(y: Tensor) -> Tensor:
    """[4N, C, I, J] in phase order as a [N, C, I, 2, J, 2] view (pixel (2i + a, 2j + b))."""
    return y.unflatten(0, (2, 2, y.shape[0] // 4)).permute(2, 3, 4, 0, 5, 1)


def _pixel_view(x: Tensor) -> Tensor:
    """[N, C, H, W] as a [N, C, H/2, 2, W/2, 2] view."""
    n, c, h, w = x.shape
    return x.unflatten(3, (w // 2, 2)).unflatten(2, (h // 2, 2))


class _ToPhases(torch.autograd.Function):
    """Autograd sees one copy each way, so gradients keep the layout of the tensors they belong to."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        ctx.fmt = memory_format(x)
        return _to_phases(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        n4, c, hh, ww = grad.shape
        out = torch.empty((n4 // 4, c, 2 * hh, 2 * ww), dtype=grad.dtype, device=grad.device, memory_format=ctx.fmt)
        _pixel_view(out).copy_(_phase_view(grad))
        return out


class _AddFromPhases(torch.autograd.Function):
    @staticmethod
    def forward(ctx, acc: Tensor | None, y: Tensor) -> Tensor:
        ctx.fmt_y = memory_format(y)
        ctx.has_acc = acc is not None
        n4, c, hh, ww = y.shape
        shape = (n4 // 4, c, 2 * hh, 2 * ww)
        if n4 % 4 or (acc is not None and (tuple(acc.shape) != shape or acc.dtype != y.dtype or acc.device != y.device)):
            # `out=` below writes through a view of `out`: a broadcast or a cast would resize that
            # view instead of failing, so the shapes are checked here
            raise ValueError(f"add_from_phases: {tuple(y.shape)} in phase order does not add to "
                             f"{None if acc is None else (tuple(acc.shape), acc.dtype)}")
        fmt = memory_format(y) if acc is None else memory_format(acc)
        out = torch.empty(shape, dtype=y.dtype, device=y.device, memory_format=fmt)
        if acc is None:
            _pixel_view(out).copy_(_phase_view(y))
        else:
            torch.add(_pixel_view(acc), _phase_view(y), out=_pixel_view(out))
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor]:
        grad_y = _to_phases(grad)
        if memory_format(grad_y) != ctx.fmt_y:
            grad_y = grad_y.contiguous(memory_format=ctx.fmt_y)
        return (grad if ctx.has_acc else None), grad_y


def to_phases(x: Tensor) -> Tensor:
    """[N, C, H, W] -> [4N, C, H/2, W/2], batch entries ordered (a, b, n); memory format kept."""
    return _ToPhases.apply(x)


def add_from_phases(acc: Tensor | None, y: Tensor) -> Tensor:
    """`acc + y` with `y` ([4N, C, H/2, W/2] in phase order) put back to [N, C, H, W]; `acc`
    None gives `y` put back. The result has `acc`'s memory format (else `y`'s)."""
    return _AddFromPhases.apply(acc, y)


def even_pixels(x: Tensor) -> Tensor:
    return x[:, :, ::2, ::2].contiguous(memory_format=memory_format(x))
