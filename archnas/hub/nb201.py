"""NAS-Bench-201's search space (Dong & Yang, ICLR 2020), with NNI's defaults and labels.

A stem (3x3 conv to C channels, BatchNorm), three stages of N cells at C, 2C and 4C channels with
a residual block halving the resolution between them, then BatchNorm, ReLU, global pooling and a
linear classifier. Every cell is a `NasBench201Cell` labelled `cell`, so all 3N cells share one
architecture: six edges `cell__<j>_<t>` (j < t, tensors 0..3), each one of none, skip_connect,
conv_1x1, conv_3x3, avg_pool_3x3: 5^6 = 15,625 networks. On CIFAR-10 (C=16, N=5) they have
73,306 to 1,531,546 parameters, as in the benchmark.

Architecture strings are accepted in the benchmark API's spelling,
`|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|`
(node t lists `op~j` for its inputs j), and in NNI's op names (`conv_3x3`); `nb201_string` writes
the API's spelling.
"""

from __future__ import annotations

import itertools
import re
from typing import Any, Iterator, Sequence

from torch import Tensor, nn

from archnas.errors import SpaceError
from archnas.ops.nb201 import NB201_OPS, ResNetBasicblock, nb201_op
from archnas.space.cells import NasBench201Cell

LABEL = "cell"
EDGES = tuple((j, t) for t in range(1, 4) for j in range(t))  # the API's order: node by node, input by input
_API_NAMES = {"conv_1x1": "nor_conv_1x1", "conv_3x3": "nor_conv_3x3"}
_FROM_API = {v: k for k, v in _API_NAMES.items()}


def edge_label(j: int, t: int) -> str:
    return f"{LABEL}__{j}_{t}"


class NasBench201(nn.Module):
    """The space at `stem_out_channels` (C) stem channels and `num_modules_per_stack` (N) cells per
    stage, NNI's names (`C` and `N` are their aliases in `create_space` and configs), for images of
    `input_shape` (its channels feed the stem; the reference is 3x32x32) and `n_classes` outputs
    (NNI: `num_labels`).

    `affine` and `track_running_stats` are those of the cells' BatchNorms. The benchmark's
    networks have both (the defaults); its reference code searches with both off, as DARTS does:
    without a learned scale, an op cannot win the architecture gradient by rescaling its output
    (GDAS's straight-through estimator otherwise ranks the parameter-free ops first), and batch
    statistics in eval mode make a supernet's val accuracy that of the paths it runs rather than
    of averaged running statistics."""

    def __init__(self, input_shape: Sequence[int] = (3, 32, 32), n_classes: int = 10, stem_out_channels: int = 16,
                 num_modules_per_stack: int = 5, op_candidates: Sequence[str] = NB201_OPS, affine: bool = True,
                 track_running_stats: bool = True):
        super().__init__()
        C, N = stem_out_channels, num_modules_per_stack
        unknown = [op for op in op_candidates if op not in NB201_OPS]
        if unknown or not op_candidates:
            raise SpaceError(f"nb201: op_candidates {list(op_candidates)} must be some of {', '.join(NB201_OPS)}")
        if C < 1 or N < 1:
            raise SpaceError(f"nb201: stem_out_channels (C: {C}) and num_modules_per_stack (N: {N}) must be at least 1")
        self.stem = nn.Sequential(nn.Conv2d(input_shape[0], C, 3, padding=1, bias=False), nn.BatchNorm2d(C))
        ops = {name: nb201_op(name, affine, track_running_stats) for name in op_candidates}
        cells: list[nn.Module] = []
        width = C
        for stage, channels in enumerate((C, 2 * C, 4 * C)):
            if stage:
                cells.append(ResNetBasicblock(width, channels))
                width = channels
            cells += [NasBench201Cell(ops, width, width, label=LABEL) for _ in range(N)]
        self.cells = nn.ModuleList(cells)
        self.lastact = nn.Sequential(nn.BatchNorm2d(width), nn.ReLU())
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(width, n_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        for cell in self.cells:
            x = cell(x)
        return self.classifier(self.global_pooling(self.lastact(x)).flatten(1))


def parse_nb201_string(text: str) -> dict[str, str]:
    """`|op~0|+|op~0|op~1|+|op~0|op~1|op~2|` (either spelling) -> `{cell__j_t: op}`."""
    nodes = text.strip().split("+")
    if len(nodes) != 3:
        raise SpaceError(f"NAS-Bench-201 string {text!r}: expected 3 nodes separated by '+', got {len(nodes)}")
    arch: dict[str, str] = {}
    for t, node in enumerate(nodes, 1):
        parts = [p for p in node.strip().strip("|").split("|")]
        if len(parts) != t:
            raise SpaceError(f"NAS-Bench-201 string {text!r}: node {t} needs {t} edges 'op~input', got {node!r}")
        for j, part in enumerate(parts):
            match = re.fullmatch(r"(\w+)~(\d+)", part.strip())
            if not match or int(match[2]) != j:
                raise SpaceError(f"NAS-Bench-201 string {text!r}: node {t} edge {j + 1} must be 'op~{j}', got {part!r}")
            op = _FROM_API.get(match[1], match[1])
            if op not in NB201_OPS:
                raise SpaceError(f"NAS-Bench-201 string {text!r}: unknown op {match[1]!r}; ops: "
                                 f"{', '.join(_API_NAMES.get(o, o) for o in NB201_OPS)}")
            arch[edge_label(j, t)] = op
    return arch


def nb201_string(arch: dict[str, Any]) -> str:
    """`{cell__j_t: op}` -> the NAS-Bench-201 API's string."""
    missing = [edge_label(j, t) for j, t in EDGES if edge_label(j, t) not in arch]
    if missing:
        raise SpaceError(f"not a NAS-Bench-201 architecture: no value for {', '.join(missing)}")
    return "+".join("|" + "|".join(f"{_API_NAMES.get(arch[edge_label(j, t)], arch[edge_label(j, t)])}~{j}"
                                   for j in range(t)) + "|" for t in range(1, 4))


def all_nb201_archs(op_candidates: Sequence[str] = NB201_OPS) -> Iterator[dict[str, str]]:
    """Every architecture of the space (5^6 = 15,625 with the default ops)."""
    for ops in itertools.product(op_candidates, repeat=len(EDGES)):
        yield {edge_label(j, t): op for (j, t), op in zip(EDGES, ops)}
