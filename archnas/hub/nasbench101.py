"""NAS-Bench-101's search space (Ying et al., ICML 2019) as NNI's `NasBench101`, with its
arguments, defaults and labels.

A 3x3 conv-BN-ReLU stem to `stem_out_channels` (128), `num_stacks` (3) stacks of
`num_modules_per_stack` (3) cells, a 2x2 max-pool halving the map and the width doubling between
stacks, global pooling and a linear classifier. Every cell is a `NasBench101Cell` labelled `cell`
(all nine share one architecture: `cell/num_nodes`, `cell/op<i>`, `cell/input<i>`) over the ops
conv3x3-bn-relu, conv1x1-bn-relu, maxpool3x3, with a 1x1 conv-BN-ReLU projection of the cell input.
BatchNorm uses `bn_eps` and `bn_momentum` (NNI's: the benchmark's TF decay 0.997).

Architectures are also read in the benchmark's own form, its `ModelSpec`, wherever an
architecture is (`--arch`, `nas.eval.final_desc`): a mapping (inline YAML/JSON, or a file)

    {module_adjacency: [[0, 1, 0, 0, 1, 1, 0], ..., [0, 0, 0, 0, 0, 0, 0]],
     module_operations: [input, conv3x3-bn-relu, maxpool3x3, ..., output]}

an upper-triangular 0/1 matrix over at most `max_num_vertices` vertices with at most
`max_num_edges` ones, first op `input` and last `output`. It is pruned as the benchmark prunes
(`parse_nb101_spec`), and `nb101_spec` writes an architecture back in that form. The benchmark's
example spec (`module_adjacency` above, 9 edges) has its 8,555,530 trainable parameters at the
defaults on CIFAR-10's 3x32x32.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from torch import Tensor, nn

from archnas.errors import SpaceError
from archnas.ops.nasbench101 import NB101_OPS, ConvBNReLU, nb101_op, prune_spec
from archnas.space.nasbench101 import NasBench101Cell, cell_labels

LABEL = "cell"
SPEC_KEYS = ("module_adjacency", "module_operations")


class NasBench101(nn.Module):
    """The space for images of `input_shape` and `n_classes` outputs (NNI: `num_labels`)."""

    supernet_refusal = ("its NasBench101Cell has no supernet forward (the widths of a cell's vertices depend on its "
                        "graph, so candidates share no weights; NNI's has none either): search it with random or "
                        "multi-trial search")

    def __init__(self, input_shape: Sequence[int] = (3, 32, 32), n_classes: int = 10, stem_out_channels: int = 128,
                 num_stacks: int = 3, num_modules_per_stack: int = 3, max_num_vertices: int = 7, max_num_edges: int = 9,
                 bn_eps: float = 1e-5, bn_momentum: float = 0.003):
        super().__init__()
        for key, value in (("stem_out_channels", stem_out_channels), ("num_stacks", num_stacks),
                           ("num_modules_per_stack", num_modules_per_stack)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise SpaceError(f"nasbench101: {key} {value!r} must be a positive int")
        ops = {name: nb101_op(name) for name in NB101_OPS}
        self.stem_conv = ConvBNReLU(input_shape[0], stem_out_channels, 3)
        layers: list[nn.Module] = []
        c_in = c_out = stem_out_channels
        for stack in range(num_stacks):
            if stack:
                layers.append(nn.MaxPool2d(2, 2))
                c_out *= 2
            for _ in range(num_modules_per_stack):
                layers.append(NasBench101Cell(ops, c_in, c_out, lambda a, b: ConvBNReLU(a, b, 1), max_num_vertices,
                                              max_num_edges, label=LABEL))
                c_in = c_out
        self.features = nn.ModuleList(layers)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_out, n_classes)
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eps, m.momentum = bn_eps, bn_momentum

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem_conv(x)
        for layer in self.features:
            x = layer(x)
        return self.classifier(self.gap(x).flatten(1))


def parse_nb101_spec(data: Mapping[str, Any], max_num_vertices: int = 7, max_num_edges: int = 9) -> dict[str, Any]:
    """A `{module_adjacency, module_operations}` mapping -> `{label: choice}` of the pruned graph; any
    other mapping is returned as it is (a `{label: choice}` architecture)."""
    if not any(key in data for key in SPEC_KEYS):
        return dict(data)
    if set(data) != set(SPEC_KEYS):
        raise SpaceError(f"NAS-Bench-101 spec: expected exactly the keys {', '.join(SPEC_KEYS)}, got "
                         f"{', '.join(map(str, data))}")
    matrix, ops = data["module_adjacency"], data["module_operations"]
    n = len(matrix) if isinstance(matrix, list) else 0
    if not 2 <= n or not all(isinstance(row, list) and len(row) == n and all(v in (0, 1) and not isinstance(v, bool)
                                                                              for v in row) for row in matrix):
        raise SpaceError(f"NAS-Bench-101 spec: module_adjacency must be a square matrix of 0s and 1s, got {matrix!r}")
    if n > max_num_vertices:
        raise SpaceError(f"NAS-Bench-101 spec: {n} vertices, at most max_num_vertices={max_num_vertices} allowed")
    if any(matrix[u][v] for u in range(n) for v in range(u + 1)):
        raise SpaceError("NAS-Bench-101 spec: module_adjacency must be upper-triangular (edges go from a vertex to a "
                         "later one)")
    edges = sum(map(sum, matrix))
    if edges > max_num_edges:
        raise SpaceError(f"NAS-Bench-101 spec: {edges} edges, at most max_num_edges={max_num_edges} allowed")
    if not isinstance(ops, list) or len(ops) != n or ops[0] != "input" or ops[-1] != "output" or \
            any(op not in NB101_OPS for op in ops[1:-1]):
        raise SpaceError(f"NAS-Bench-101 spec: module_operations must list {n} ops, 'input' first, 'output' last and "
                         f"one of {', '.join(NB101_OPS)} between, got {ops!r}")
    try:
        matrix, ops = prune_spec(matrix, ops)
    except ValueError as exc:
        raise SpaceError(f"NAS-Bench-101 spec: {exc}") from None
    nodes_label, op_labels, input_labels = cell_labels(LABEL, len(matrix))
    arch: dict[str, Any] = {nodes_label: len(matrix)}
    arch.update({lb: op for lb, op in zip(op_labels, ops[1:-1])})
    arch.update({lb: [u for u in range(v) if matrix[u][v]] for v, lb in enumerate(input_labels, 1)})
    return arch


def nb101_spec(arch: Mapping[str, Any]) -> dict[str, Any]:
    """`{label: choice}` -> the benchmark's `{module_adjacency, module_operations}` (unpruned)."""
    n = arch[f"{LABEL}/num_nodes"]
    _, op_labels, input_labels = cell_labels(LABEL, n)
    matrix = [[0] * n for _ in range(n)]
    for v, lb in enumerate(input_labels, 1):
        for u in arch[lb]:
            matrix[u][v] = 1
    return {"module_adjacency": matrix, "module_operations": ["input", *(arch[lb] for lb in op_labels), "output"]}
