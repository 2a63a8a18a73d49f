"""The blocks of the mobile search spaces (`archnas.hub`: proxylessnas, shufflenet, mobilenet):
MobileNetV2's inverted residual, ShuffleNetV2's blocks as Single Path One-Shot searches them, a
conv-BN-activation layer, and the rules the spaces share for widths and strides.

Plain torch modules, so a frozen network of these spaces is made of them and torch's own. Each
block takes its input and output widths from the space, never from the choice it serves, so any
candidate of a slot can replace any other and a block's cost is its own (the spaces' costs are
additive over their choices).
"""

from __future__ import annotations

import math
from types import MappingProxyType
from typing import Any, Callable, Mapping, Optional

import torch
from torch import Tensor, nn

Norm = Callable[[int], nn.Module]
Activation = Callable[[], nn.Module]
Conv = Callable[..., nn.Module]  # nn.Conv2d, or a layer that takes value choices (archnas.space.nn's)

# What the `activation=` of an op string may name.
ACTIVATIONS: Mapping[str, Activation] = MappingProxyType({
    "relu": nn.ReLU,
    "relu6": nn.ReLU6,
    "leaky_relu": nn.LeakyReLU,
    "hswish": nn.Hardswish,
    "swish": nn.SiLU,
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "gelu": nn.GELU,
})


def make_divisible(value: float, divisor: int = 8, min_value: Optional[int] = None) -> int:
    """The channel count near `value` that `divisor` divides: TensorFlow MobileNet's rule, with
    NNI's rounding, so widths (and counts) equal NNI's hub spaces at any width multiplier. It is
    at least `min_value` (default `divisor`) and never more than 10% below `value`."""
    floor = divisor if min_value is None else min_value
    channels = max(floor, round(value + divisor // 2) // divisor * divisor)
    return channels + divisor if channels < 0.9 * value else channels


def downsampling_stride(stride: int, size: int, min_size: int) -> int:
    """The stride a layer runs at when its input's smaller side is `size`: a stride of 2 only while
    the halved map keeps at least `min_size` pixels a side (`size >= 2 * min_size`), so a space
    made for 224x224 images still sees more than one pixel of an 8x8 digit in its last stages."""
    return stride if stride == 1 or size >= 2 * min_size else 1


def strided_size(size: int, stride: int) -> int:
    """A map's side after a padded ("same") convolution of that stride."""
    return math.ceil(size / stride)


class ConvBNAct(nn.Sequential):
    """Conv (no bias: BatchNorm follows), BatchNorm, then the activation (None: linear)."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int = 3, stride: int = 1, groups: int = 1,
                 activation: Optional[Activation] = nn.ReLU6, norm: Norm = nn.BatchNorm2d):
        layers = [nn.Conv2d(c_in, c_out, kernel_size, stride, kernel_size // 2, groups=groups, bias=False), norm(c_out)]
        if activation is not None:
            layers.append(activation())
        super().__init__(*layers)


class Residual(nn.Module):
    """`body(x)`, plus `x` when the body keeps its shape (stride 1, as many channels out as in):
    MobileNetV2's rule for when a block gets a shortcut."""

    def __init__(self, body: nn.Module, shortcut: bool):
        super().__init__()
        self.body = body
        self.shortcut = shortcut

    def forward(self, x: Tensor) -> Tensor:
        y = self.body(x)
        return x + y if self.shortcut else y

    def extra_repr(self) -> str:
        return f"shortcut={self.shortcut}"


def inverted_residual(c_in: int, c_out: int, kernel_size: int, stride: int, hidden: Optional[int],
                      activation: Activation = nn.ReLU6, norm: Norm = nn.BatchNorm2d) -> Residual:
    """MobileNetV2's block (MBConv): a 1x1 expansion to `hidden` channels (None: none, the
    depthwise-separable block of MobileNetV2's first stage), a k x k depthwise conv carrying the
    stride, a linear 1x1 projection; a shortcut when the shape is kept."""
    layers: list[nn.Module] = []
    width = c_in
    if hidden is not None:
        layers.append(ConvBNAct(c_in, hidden, 1, activation=activation, norm=norm))
        width = hidden
    layers.append(ConvBNAct(width, width, kernel_size, stride, groups=width, activation=activation, norm=norm))
    layers.append(ConvBNAct(width, c_out, 1, activation=None, norm=norm))
    return Residual(nn.Sequential(*layers), stride == 1 and c_in == c_out)


def _depthwise(channels: Any, kernel_size: int, stride: int, norm: Norm, conv: Conv) -> list[nn.Module]:
    return [conv(channels, channels, kernel_size, stride, kernel_size // 2, groups=channels, bias=False),
            norm(channels)]


def _pointwise(c_in: Any, c_out: Any, norm: Norm, conv: Conv) -> list[nn.Module]:
    return [conv(c_in, c_out, 1, bias=False), norm(c_out), nn.ReLU(inplace=True)]


class ShuffleBlock(nn.Module):
    """A ShuffleNetV2 unit as Single Path One-Shot searches it.

    The first block of a stage (`project`) runs two branches on its whole input: a projection
    (depthwise k x k, BN, 1x1, BN, ReLU) to `c_in` channels and the main branch to `c_out - c_in`;
    it carries the stage's stride. The others split their input channel-shuffled (even channels
    pass through, odd ones feed the main branch, to `c_out - c_in // 2` channels). The main branch
    is 1x1, depthwise k x k, 1x1 (`xception`: three depthwise 3x3 convs, each followed by a 1x1).
    Outputs are concatenated, so every candidate of a slot has the same width. `mid` may be a
    value choice (a space's channel search) when `conv` and `norm` take one (`archnas.space.nn`'s).
    """

    def __init__(self, c_in: int, c_out: int, mid: Any, kernel_size: int, stride: int, project: bool,
                 xception: bool = False, norm: Norm = nn.BatchNorm2d, conv: Conv = nn.Conv2d):
        super().__init__()
        through = c_in if project else c_in // 2
        if c_out <= through or (not project and (c_in % 2 or stride != 1)):
            raise ValueError(f"ShuffleBlock: {c_in} -> {c_out} channels at stride {stride} "
                             f"({'projecting' if project else 'splitting'}) leaves no channels for its main branch")
        if xception:
            main = [*_depthwise(through, 3, stride, norm, conv), *_pointwise(through, mid, norm, conv),
                    *_depthwise(mid, 3, 1, norm, conv), *_pointwise(mid, mid, norm, conv),
                    *_depthwise(mid, 3, 1, norm, conv), *_pointwise(mid, c_out - through, norm, conv)]
        else:
            main = [*_pointwise(through, mid, norm, conv), *_depthwise(mid, kernel_size, stride, norm, conv),
                    *_pointwise(mid, c_out - through, norm, conv)]
        self.main = nn.Sequential(*main)
        self.proj = nn.Sequential(*_depthwise(c_in, kernel_size, stride, norm, conv),
                                  *_pointwise(c_in, c_in, norm, conv)) \
            if project else None

    def forward(self, x: Tensor) -> Tensor:
        if self.proj is not None:
            return torch.cat((self.proj(x), self.main(x)), 1)
        return torch.cat((x[:, 0::2], self.main(x[:, 1::2])), 1)


def init_mobilenet_weights(model: nn.Module) -> None:
    """MobileNetV2's and ProxylessNAS's initialization (as NNI's hub applies it): convs He-normal
    over their fan-out, BatchNorm scale 1 and shift 0, linear layers N(0, 0.01) with zero bias."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
        elif isinstance(m, nn.BatchNorm2d) and m.affine:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def init_spos_weights(model: nn.Module, first: nn.Module) -> None:
    """Single Path One-Shot's initialization (as NNI's hub applies it): convs N(0, 1 / fan-in per
    group), those of the `first` layer N(0, 0.01); BatchNorm scale 1 and shift 1e-4; linear layers
    N(0, 0.01) with zero bias."""
    first_convs = {id(m) for m in first.modules()}
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, 0.0, 0.01 if id(m) in first_convs else 1.0 / m.weight.shape[1])
        elif isinstance(m, nn.BatchNorm2d) and m.affine:
            nn.init.ones_(m.weight)
            nn.init.constant_(m.bias, 1e-4)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
