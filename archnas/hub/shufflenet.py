"""Single Path One-Shot's ShuffleNetV2 space (Guo et al., ECCV 2020) as NNI 3.0's ShuffleNetSpace.

A 3x3 stem conv (stride 2) to 16 channels, four stages of 4, 4, 8 and 4 choice blocks at 64, 160,
320 and 640 channels (the first block of each at stride 2), a 1x1 conv to 1024, global pooling,
dropout 0.1 and a linear classifier without bias. Each of the 20 blocks is a LayerChoice
`layer_<n>` (n = 1..20, through the stages) of four ShuffleNetV2 units, NNI's `k3`, `k5`, `k7`
(one depthwise conv of that kernel) and `xcep` (three depthwise 3x3 convs), each with a 1x1
conv to half the block's width inside (`archnas.ops.mobile.ShuffleBlock`): 4^20 architectures.
Every candidate of a block has the block's input and output widths, so parameters and
multiply-adds are additive over the choices.

NNI's channel search (`channel_search=True`): each block's inner width (the first 1x1 conv's
output, which its depthwise convs keep) is a ValueChoice `channel_<n>` of
`int(c_out // 2 * (0.2 * k))` for k = 1..8 (0.2x to 1.6x of half the block's width, NNI's values),
shared by the block's four candidates, whose layers are then `archnas.space.nn` layers that run
a chosen width on the leading channels of the widest (as NNI's Mutable layers share weights).
A block's cost then depends on two labels, so costs are counted per architecture, not summed
over choices.

Small inputs: as in `archnas.hub.proxylessnas`, a stride-2 layer runs at stride 1 once the map
it gets has a side under `2 * min_size` (a stage's first block keeps its projection branch), so
8x8 digits keep 2x2 maps; 224x224 images get the reference strides (7x7 at the end).

Named architectures (`spos_arch()`, or the string `spos`): the network SPOS published, as NNI's
hub defines it; at 3x224x224 and 1000 classes it has NNI's 3,558,464 parameters and 322,918,720
multiply-adds.
"""

from __future__ import annotations

from functools import partial
from itertools import pairwise
from types import MappingProxyType
from typing import Any, Callable, Mapping, Sequence

from torch import Tensor, nn

from archnas.errors import SpaceError
from archnas.hub.common import check_space_params, named_arch_parser
from archnas.ops.mobile import (
    ShuffleBlock,
    downsampling_stride,
    init_spos_weights,
    strided_size,
)
import archnas.space.nn as snn
from archnas.space.choices import LayerChoice
from archnas.space.value import ValueChoice

STAGE_OUT_CHANNELS = (16, 64, 160, 320, 640, 1024)  # stem, the four stages, the last conv
STAGE_REPEATS = (4, 4, 8, 4)
CANDIDATES = ("k3", "k5", "k7", "xcep")


def block_label(n: int) -> str:
    return f"layer_{n}"


class ShuffleNetSpace(nn.Module):
    """The space for images of `input_shape` ([C, H, W]; the reference is 3x224x224) and
    `n_classes` outputs. `stage_out_channels` are NNI's widths (without its leading -1): stem, the
    stages of `stage_repeats` blocks, the last conv; `affine`: BatchNorm's scale and shift."""

    def __init__(self, input_shape: Sequence[int] = (3, 224, 224), n_classes: int = 1000, channel_search: bool = False,
                 stage_out_channels: Sequence[int] = STAGE_OUT_CHANNELS, stage_repeats: Sequence[int] = STAGE_REPEATS,
                 affine: bool = True, dropout_rate: float = 0.1, min_size: int = 2):
        super().__init__()
        check_space_params("shufflenet", input_shape, 1.0, dropout_rate, min_size)
        widths = list(stage_out_channels)
        if len(widths) != len(stage_repeats) + 2 or any(not isinstance(r, int) or r < 1 for r in stage_repeats):
            raise SpaceError(f"shufflenet: stage_out_channels {widths} needs {len(stage_repeats) + 2} widths (stem, "
                             f"{len(stage_repeats)} stages, last conv) for stage_repeats {list(stage_repeats)} "
                             "(each at least 1)")
        bad = [w for prev, w in pairwise(widths[:-1]) if w % 2 or w <= prev]
        if bad:
            raise SpaceError(f"shufflenet: stage widths {bad} must be even and wider than the stage before "
                             f"(stage_out_channels {widths})")
        norm = partial(snn.BatchNorm2d if channel_search else nn.BatchNorm2d, affine=affine)
        size = min(input_shape[1:])
        stride = downsampling_stride(2, size, min_size)
        self.first_conv = nn.Sequential(nn.Conv2d(input_shape[0], widths[0], 3, stride, 1, bias=False),
                                        nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True))
        size = strided_size(size, stride)
        blocks, c_in, n = [], widths[0], 0
        for stage, repeats in enumerate(stage_repeats):
            c_out = widths[stage + 1]
            for index in range(repeats):
                n += 1
                stride = downsampling_stride(2, size, min_size) if index == 0 else 1
                mid = channel_choice(c_out, n) if channel_search else c_out // 2
                blocks.append(LayerChoice.of_factories(_candidates(c_in, c_out, mid, stride, index == 0, norm,
                                                                   snn.Conv2d if channel_search else nn.Conv2d),
                                                      label=block_label(n)))
                size, c_in = strided_size(size, stride), c_out
        self.features = nn.Sequential(*blocks)
        self.conv_last = nn.Sequential(nn.Conv2d(c_in, widths[-1], 1, bias=False), norm(widths[-1]),
                                       nn.ReLU(inplace=True))
        self.globalpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout_rate)
        self.classifier = nn.Linear(widths[-1], n_classes, bias=False)
        init_spos_weights(self, self.first_conv)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv_last(self.features(self.first_conv(x)))
        return self.classifier(self.dropout(self.globalpool(x).flatten(1)))


def channel_choice(c_out: int, n: int) -> ValueChoice:
    """Block n's inner width under channel search: NNI's 0.2x .. 1.6x of `c_out // 2`."""
    base = c_out // 2
    widths = [int(base * (.2 * k)) for k in range(1, 9)]
    if widths[0] < 1 or len(set(widths)) != len(widths):
        raise SpaceError(f"shufflenet: channel_search needs stage widths of at least 10 (block {n} at {c_out} "
                         f"channels would choose among inner widths {widths})")
    return ValueChoice(widths, label=f"channel_{n}")


def _candidates(c_in: int, c_out: int, mid: Any, stride: int, project: bool, norm: Callable[[int], nn.Module],
                conv: Callable[..., nn.Module]) -> dict[str, Callable[[], nn.Module]]:
    out: dict[str, Callable[[], nn.Module]] = {
        f"k{k}": partial(ShuffleBlock, c_in, c_out, mid, k, stride, project, norm=norm, conv=conv) for k in (3, 5, 7)}
    out["xcep"] = partial(ShuffleBlock, c_in, c_out, mid, 3, stride, project, xception=True, norm=norm, conv=conv)
    return out


def spos_arch() -> dict[str, str]:
    """The architecture Single Path One-Shot published, from NNI's hub definition."""
    chosen = ("k7", "k5", "k3", "k5", "k7", "k3", "k7", "k3", "k7", "k3",
              "k7", "xcep", "k3", "k3", "k3", "k3", "xcep", "k7", "xcep", "xcep")
    return {block_label(n): c for n, c in enumerate(chosen, 1)}


NAMED_ARCHS: Mapping[str, Callable[[], dict[str, str]]] = MappingProxyType({"spos": spos_arch})
parse_shufflenet_arch = named_arch_parser("shufflenet", NAMED_ARCHS)
