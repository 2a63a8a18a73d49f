"""A MobileNetV2-like search space from op strings, as ENOT's `build_mobilenet` builds one.

    create_space("mobilenet", input_shape=(3, 224, 224), n_classes=1000,
                 search_ops=["MIB_k=3_t=6", "MIB_k=5_t=6", "MIB_k=7_t=6"],
                 blocks_out_channels=[24, 32, 64, 96, 160, 320], blocks_count=[2, 3, 4, 3, 3, 1],
                 blocks_stride=[2, 2, 2, 1, 2, 1], stem_channels=32, stem_stride=2, head_channels=1280)

A 3x3 stem conv (BN, ReLU6), stages of `blocks_count[s]` blocks to `blocks_out_channels[s]`
channels (the first at `blocks_stride[s]`, the others at 1), a 1x1 head conv (BN, ReLU6; none
when `head_channels` is None), global pooling, dropout and a linear classifier. Every block is a
LayerChoice `s<stage>_i<index>` (stages from 1, blocks from 0) of its stage's op strings, named
by the strings as given, so an architecture reads `{"s1_i0": "MIB_k=3_t=6", ...}`. `search_ops`
is one list for every stage (ENOT's form) or one list per stage. Widths are multiplied by
`width_multiplier` and rounded to multiples of 8 (at least `min_channels`), the head's only above
1x (MobileNetV2's rule).

Op strings are ENOT's, `<OP>[_<key>=<value>]...`:
- `MIB_k=<odd kernel>_t=<expansion>[_activation=<name>]`: MobileNetV2's inverted residual (a 1x1
  expansion to round(t * in) channels, none at t=1; a k x k depthwise conv; a linear 1x1);
  k defaults to 3, t to 1, the activation to relu6.
- `Conv_k=<odd kernel>[_activation=<name>]`: conv, BN, activation (default relu).
- `conv1x1-skip`: a 1x1 conv and BN, linear: the cheapest way to match a block's shape.
- `identity` (archnas's addition): the block is skipped, a depth search; offered only on blocks
  that keep their shape and left out of the others.
Activations: relu, relu6, leaky_relu, hswish, swish, sigmoid, tanh, gelu. A block at stride 1
with as many channels out as in adds its input (a residual), whichever op it runs. Candidates
keep the block's widths, so costs are additive over the choices. An unknown or malformed string
is a SpaceError naming it and this grammar.

The defaults are a small net for 8x8 digits that trains in seconds on two cores: stem 8 channels
at stride 1, stages of 1, 2, 2 blocks at 8, 16, 24 channels and strides 1, 2, 2 (8x8, 4x4, 2x2
maps), a 64-channel head, four MIB candidates (k 3/5, t 3/6). A stride-2 layer runs at stride 1
once its input has a side under `2 * min_size`, as in `archnas.hub.proxylessnas`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from functools import partial
from types import MappingProxyType
from typing import Any, Callable, Mapping, Optional, Sequence, Union

from torch import Tensor, nn

from archnas.errors import SpaceError
from archnas.hub.common import check_space_params
from archnas.ops.mobile import (
    ACTIVATIONS,
    ConvBNAct,
    Residual,
    downsampling_stride,
    init_mobilenet_weights,
    inverted_residual,
    make_divisible,
    strided_size,
)
from archnas.space.choices import LayerChoice

DEFAULT_OPS = ("MIB_k=3_t=3", "MIB_k=5_t=3", "MIB_k=3_t=6", "MIB_k=5_t=6")
GRAMMAR = ("op strings are MIB_k=<odd kernel>_t=<expansion>[_activation=<name>], Conv_k=<odd kernel>"
           "[_activation=<name>], conv1x1-skip or identity; activations: " + ", ".join(ACTIVATIONS))
# Each op's keys and their defaults.
_OPS: Mapping[str, Mapping[str, Any]] = MappingProxyType({
    "MIB": MappingProxyType({"k": 3, "t": 1.0, "activation": "relu6"}),
    "Conv": MappingProxyType({"k": 3, "activation": "relu"}),
    "conv1x1-skip": MappingProxyType({}),
    "identity": MappingProxyType({}),
})
_PARAM = re.compile(r"_([a-z]+)=(.*?)(?=_[a-z]+=|$)")


@dataclass(frozen=True)
class OpSpec:
    """One parsed op string."""

    text: str
    op: str
    params: dict[str, Any] = field(default_factory=dict)

    def fits(self, c_in: int, c_out: int, stride: int) -> bool:
        """Whether the op can join a block of this shape (identity only where the shape is kept)."""
        return self.op != "identity" or (stride == 1 and c_in == c_out)

    def build(self, c_in: int, c_out: int, stride: int) -> nn.Module:
        """The block of this op between those widths."""
        shortcut = stride == 1 and c_in == c_out
        if self.op == "identity":
            return nn.Identity()
        if self.op == "conv1x1-skip":
            return Residual(ConvBNAct(c_in, c_out, 1, stride, activation=None), shortcut)
        activation = ACTIVATIONS[self.params["activation"]]
        if self.op == "Conv":
            return Residual(ConvBNAct(c_in, c_out, self.params["k"], stride, activation=activation), shortcut)
        t = self.params["t"]
        hidden = None if t == 1 else max(1, round(c_in * t))
        return inverted_residual(c_in, c_out, self.params["k"], stride, hidden, activation=activation)


def parse_op(text: Any) -> OpSpec:
    """`MIB_k=5_t=3` -> OpSpec('MIB', {k: 5, t: 3.0, activation: relu6}); a SpaceError naming the
    string and the grammar when it is none of the ops or malformed."""
    def bad(problem: str) -> SpaceError:
        return SpaceError(f"mobilenet: op {text!r} {problem}; {GRAMMAR}")

    if not isinstance(text, str):
        raise bad("is not a string")
    name = next((op for op in _OPS if text == op or text.startswith(op + "_")), None)
    if name is None:
        raise bad(f"is not a known op ({', '.join(_OPS)})")
    rest = text[len(name):]
    found = _PARAM.findall(rest)
    if "".join(f"_{k}={v}" for k, v in found) != rest:
        raise bad("is malformed (expected <OP>_<key>=<value>_...)")
    params = dict(_OPS[name])
    for key, value in found:
        if key not in params:
            raise bad(f"has an unknown key {key!r} ({name} takes {', '.join(_OPS[name]) or 'no keys'})")
        if [k for k, _ in found].count(key) > 1:
            raise bad(f"sets {key} twice")
        params[key] = _value(key, value, bad)
    return OpSpec(text, name, params)


def _value(key: str, value: str, bad: Callable[[str], SpaceError]) -> Any:
    if key == "activation":
        if value not in ACTIVATIONS:
            raise bad(f"has an unknown activation {value!r}")
        return value
    try:
        number = int(value) if key == "k" else float(value)
    except ValueError:
        raise bad(f"has {key}={value!r}, not {'an int' if key == 'k' else 'a number'}") from None
    if key == "k" and (number < 1 or number % 2 == 0):
        raise bad(f"has kernel size {number}: it must be odd (padding keeps the map's size)")
    if key == "t" and not (number > 0 and math.isfinite(number)):
        raise bad(f"has expansion {value}: it must be positive")
    return number


def block_label(stage: int, index: int) -> str:
    return f"s{stage}_i{index}"


OpLists = Union[Sequence[str], Sequence[Sequence[str]]]


class MobileNetSpace(nn.Module):
    """The space of images of `input_shape` ([C, H, W]) into `n_classes`; ENOT's parameter names
    (`search_ops`, `blocks_out_channels`, `blocks_count`, `blocks_stride`, `width_multiplier`,
    `min_channels`, `dropout_rate`), plus the stem's and head's widths and the stem's stride."""

    def __init__(self, input_shape: Sequence[int] = (1, 8, 8), n_classes: int = 10, search_ops: OpLists = DEFAULT_OPS,
                 blocks_out_channels: Sequence[int] = (8, 16, 24), blocks_count: Sequence[int] = (1, 2, 2),
                 blocks_stride: Sequence[int] = (1, 2, 2), width_multiplier: float = 1.0, min_channels: int = 8,
                 stem_channels: int = 8, stem_stride: int = 1, head_channels: Optional[int] = 64,
                 dropout_rate: float = 0.0, min_size: int = 2):
        super().__init__()
        check_space_params("mobilenet", input_shape, width_multiplier, dropout_rate, min_size)
        stages = _stage_ops(search_ops, len(blocks_out_channels))
        _check_stages(blocks_out_channels, blocks_count, blocks_stride, stem_channels, stem_stride, head_channels)

        def width(c: int) -> int:
            return make_divisible(c * width_multiplier, 8, min_channels)

        size = min(input_shape[1:])
        stride = downsampling_stride(stem_stride, size, min_size)
        c_in = width(stem_channels)
        self.stem = ConvBNAct(input_shape[0], c_in, 3, stride)
        size = strided_size(size, stride)
        blocks = []
        for s, (ops, c, n, first_stride) in enumerate(zip(stages, blocks_out_channels, blocks_count, blocks_stride), 1):
            c_out = width(c)
            for i in range(n):
                stride = downsampling_stride(first_stride, size, min_size) if i == 0 else 1
                candidates = {op.text: partial(op.build, c_in, c_out, stride) for op in ops if op.fits(c_in, c_out, stride)}
                if not candidates:
                    raise SpaceError(f"mobilenet: block {block_label(s, i)} changes the shape ({c_in} -> {c_out} "
                                     f"channels, stride {stride}) and its only candidate is identity")
                blocks.append(LayerChoice.of_factories(candidates, label=block_label(s, i)))
                size, c_in = strided_size(size, stride), c_out
        self.blocks = nn.Sequential(*blocks)
        if head_channels is None:
            self.head = nn.Identity()
        else:
            head = make_divisible(head_channels * max(1.0, width_multiplier), 8, min_channels)
            self.head = ConvBNAct(c_in, head, 1)
            c_in = head
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout_rate)
        self.classifier = nn.Linear(c_in, n_classes)
        init_mobilenet_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.head(self.blocks(self.stem(x)))
        return self.classifier(self.dropout(self.pool(x).flatten(1)))


def _stage_ops(search_ops: OpLists, n_stages: int) -> list[list[OpSpec]]:
    """One list of parsed ops per stage, from one list for all or one per stage."""
    if isinstance(search_ops, str):
        raise SpaceError(f"mobilenet: search_ops {search_ops!r} must be a list of op strings (or one list per stage)")
    items = list(search_ops)
    per_stage = bool(items) and all(isinstance(x, (list, tuple)) for x in items)
    if per_stage and len(items) != n_stages:
        raise SpaceError(f"mobilenet: search_ops has {len(items)} lists for {n_stages} stages (blocks_out_channels)")
    stages = [list(x) for x in items] if per_stage else [items] * n_stages
    out = []
    for s, ops in enumerate(stages, 1):
        if not ops:
            raise SpaceError(f"mobilenet: stage {s} has no op strings in search_ops")
        twice = sorted({op for op in ops if ops.count(op) > 1})
        if twice:
            raise SpaceError(f"mobilenet: stage {s} lists {', '.join(map(repr, twice))} twice in search_ops")
        out.append([parse_op(op) for op in ops])
    return out


def _check_stages(channels: Sequence[int], counts: Sequence[int], strides: Sequence[int], stem_channels: int,
                  stem_stride: int, head_channels: Optional[int]) -> None:
    if not channels or not len(channels) == len(counts) == len(strides):
        raise SpaceError(f"mobilenet: blocks_out_channels {list(channels)}, blocks_count {list(counts)} and "
                         f"blocks_stride {list(strides)} need one entry per stage, as many of each")

    def positive(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and v >= 1

    if not all(positive(v) for v in (*channels, *counts, stem_channels)) or \
            (head_channels is not None and not positive(head_channels)):
        raise SpaceError(f"mobilenet: channels and block counts must be positive ints: blocks_out_channels "
                         f"{list(channels)}, blocks_count {list(counts)}, stem_channels {stem_channels}, "
                         f"head_channels {head_channels}")
    bad = [s for s in (*strides, stem_stride) if s not in (1, 2)]
    if bad:
        raise SpaceError(f"mobilenet: strides {bad} must be 1 or 2 (blocks_stride {list(strides)}, "
                         f"stem_stride {stem_stride})")
