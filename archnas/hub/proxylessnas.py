"""ProxylessNAS's search space (Cai, Zhu & Han, ICLR 2019) with NNI 3.0's widths, strides and labels.

A 3x3 stem conv (stride 2) to 32 channels, a fixed depthwise-separable block to 16, six searched
stages at 32, 40, 80, 96, 192 and 320 channels (strides 2, 2, 2, 1, 2, 1; four blocks each, one
in the last), a 1x1 conv to 1280, global pooling, dropout and a linear classifier; every width
times `width_mult`, rounded to a multiple of 8 as NNI does. Each searched block is a LayerChoice
`s<stage>_i<index>` (stages 2..7, blocks from 0) of six MobileNetV2 blocks, named as NNI names
them: `k3e3 k5e3 k7e3 k3e6 k5e6 k7e6` (depthwise kernel 3/5/7, expansion 3/6). The blocks after
the first of stages 2..6 also offer `zero`: the block is skipped (its shortcut passes the input
on), ProxylessNAS's own way to search depth: 21 choices, 6^6 * 7^15 (2.2e17) architectures.

NNI 3.0 searches depth with a `Repeat` per stage (`s<stage>_depth`, 1..4) instead, so its labels
are these 21 plus five depth labels; `from_nni_arch` turns an NNI architecture into this space's
(depth d: blocks d.. are `zero`). Zero blocks make every choice's cost its own (with a depth
label, a block's cost would depend on two choices), so parameters and multiply-adds are additive
over the choices, which the latency models need; they also allow a skipped block between two
others, as ProxylessNAS's own space does.

Small inputs: a stride-2 layer (the stem's, a stage's first block's) runs at stride 1 once the
map it gets has a side under `2 * min_size` (`archnas.ops.mobile.downsampling_stride`), so 8x8
digits keep 2x2 maps in the last stages instead of 1x1; 224x224 images get the reference strides
(7x7 at the end) with any `min_size` up to 7, and `min_size=1` gives them to every input.

Named architectures (`proxyless_mobile_arch()`, or the string `proxyless-mobile` wherever an
architecture is read): the published ProxylessNAS-Mobile network as NNI's hub defines it; at
3x224x224 and 1000 classes it has NNI's 4,080,512 parameters and 320,427,584 multiply-adds.
"""

from __future__ import annotations

from functools import partial
from types import MappingProxyType
from typing import Any, Callable, Mapping, Sequence

from torch import Tensor, nn

from archnas.errors import SpaceError
from archnas.hub.common import check_space_params, named_arch_parser
from archnas.ops.mobile import (
    ConvBNAct,
    downsampling_stride,
    init_mobilenet_weights,
    inverted_residual,
    make_divisible,
    strided_size,
)
from archnas.space.choices import LayerChoice

BASE_WIDTHS = (32, 16, 32, 40, 80, 96, 192, 320, 1280)  # stem, stage 1 .. 7, head
# Searched stages 2..7: (stride of the first block, blocks).
STAGES: Mapping[int, tuple[int, int]] = MappingProxyType({2: (2, 4), 3: (2, 4), 4: (2, 4), 5: (1, 4), 6: (2, 4), 7: (1, 1)})
CANDIDATES = tuple(f"k{k}e{e}" for e in (3, 6) for k in (3, 5, 7))  # NNI's names, in its order
ZERO = "zero"


def block_label(stage: int, index: int) -> str:
    return f"s{stage}_i{index}"


class ProxylessNAS(nn.Module):
    """The space for images of `input_shape` ([C, H, W]; the reference is 3x224x224) and
    `n_classes` outputs. `base_widths`: stem, stages 1..7 and head, before `width_mult`;
    BatchNorm uses `bn_eps` and `bn_momentum` (NNI's defaults)."""

    def __init__(self, input_shape: Sequence[int] = (3, 224, 224), n_classes: int = 1000,
                 width_mult: float = 1.0, dropout_rate: float = 0.0, base_widths: Sequence[int] = BASE_WIDTHS,
                 bn_eps: float = 1e-3, bn_momentum: float = 0.1, min_size: int = 2):
        super().__init__()
        if len(base_widths) != len(BASE_WIDTHS):
            raise SpaceError(f"proxylessnas: base_widths {list(base_widths)} needs {len(BASE_WIDTHS)} widths (stem, "
                             "stages 1 to 7, head)")
        check_space_params("proxylessnas", input_shape, width_mult, dropout_rate, min_size)
        widths = [make_divisible(w * width_mult, 8) for w in base_widths]
        norm = partial(nn.BatchNorm2d, eps=bn_eps, momentum=bn_momentum)
        size = min(input_shape[1:])
        stride = downsampling_stride(2, size, min_size)
        self.stem = ConvBNAct(input_shape[0], widths[0], 3, stride, norm=norm)
        size = strided_size(size, stride)
        blocks: list[nn.Module] = [inverted_residual(widths[0], widths[1], 3, 1, None, norm=norm)]
        for stage, (first_stride, depth) in STAGES.items():
            for index in range(depth):
                c_in = widths[stage - 1] if index == 0 else widths[stage]
                stride = downsampling_stride(first_stride, size, min_size) if index == 0 else 1
                blocks.append(LayerChoice.of_factories(_candidates(c_in, widths[stage], stride, index > 0, norm),
                                                      label=block_label(stage, index)))
                size = strided_size(size, stride)
        self.blocks = nn.Sequential(*blocks)
        self.feature_mix_layer = ConvBNAct(widths[7], widths[8], 1, norm=norm)
        self.global_avg_pooling = nn.AdaptiveAvgPool2d(1)
        self.dropout_layer = nn.Dropout(dropout_rate)
        self.classifier = nn.Linear(widths[8], n_classes)
        init_mobilenet_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.feature_mix_layer(self.blocks(self.stem(x)))
        return self.classifier(self.dropout_layer(self.global_avg_pooling(x).flatten(1)))


def _candidates(c_in: int, c_out: int, stride: int, skippable: bool,
                norm: Callable[[int], nn.Module]) -> dict[str, Callable[[], nn.Module]]:
    out: dict[str, Callable[[], nn.Module]] = {}
    for name in CANDIDATES:
        kernel, expansion = (int(v) for v in name[1:].split("e"))
        out[name] = partial(inverted_residual, c_in, c_out, kernel, stride, make_divisible(c_in * expansion, 8), norm=norm)
    if skippable:
        out[ZERO] = nn.Identity
    return out


def from_nni_arch(arch: Mapping[str, Any]) -> dict[str, Any]:
    """An architecture of NNI 3.0's ProxylessNAS (with `s<stage>_depth` labels) in this space's
    labels: the blocks at and after a stage's depth are `zero`; other labels are kept as given
    (the space checks them when it reads the architecture)."""
    out = {label: value for label, value in arch.items() if not label.endswith("_depth")}
    for stage, (_, depth) in STAGES.items():
        chosen = arch.get(f"s{stage}_depth")
        if chosen is None:
            continue
        if not isinstance(chosen, int) or isinstance(chosen, bool) or not 1 <= chosen <= depth:
            raise SpaceError(f"NNI ProxylessNAS architecture: s{stage}_depth is {chosen!r}, not a depth in 1..{depth}")
        for index in range(chosen, depth):
            out[block_label(stage, index)] = ZERO
    return out


def proxyless_mobile_arch() -> dict[str, str]:
    """ProxylessNAS-Mobile (the paper's mobile-latency network), from NNI's hub definition."""
    return from_nni_arch({
        "s2_depth": 2, "s2_i0": "k5e3", "s2_i1": "k3e3",
        "s3_depth": 4, "s3_i0": "k7e3", "s3_i1": "k3e3", "s3_i2": "k5e3", "s3_i3": "k5e3",
        "s4_depth": 4, "s4_i0": "k7e6", "s4_i1": "k5e3", "s4_i2": "k5e3", "s4_i3": "k5e3",
        "s5_depth": 4, "s5_i0": "k5e6", "s5_i1": "k5e3", "s5_i2": "k5e3", "s5_i3": "k5e3",
        "s6_depth": 4, "s6_i0": "k7e6", "s6_i1": "k7e6", "s6_i2": "k7e3", "s6_i3": "k7e3",
        "s7_depth": 1, "s7_i0": "k7e6",
    })


NAMED_ARCHS: Mapping[str, Callable[[], dict[str, str]]] = MappingProxyType({"proxyless-mobile": proxyless_mobile_arch})
parse_proxylessnas_arch = named_arch_parser("proxylessnas", NAMED_ARCHS)
