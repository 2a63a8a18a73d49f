"""NAS-Bench-101's cell as a plain network (Ying et al., ICML 2019), and its ops.

A cell is a DAG over at most 7 vertices (input, up to 5 op vertices, output) given by an
upper-triangular adjacency matrix and one op per interior vertex. Before it is built the graph is
pruned: a vertex not on a path from the input to the output computes nothing that reaches the
output and is removed (`prune_spec`), as the benchmark's `ModelSpec` does. Widths follow the
benchmark's `compute_vertex_channels`: the output's channels are split among the vertices that feed
it (the first ones get one more when the split is uneven), every other vertex takes the widest of
the vertices it feeds, and the cell input reaches a vertex through a 1x1 conv-BN-ReLU projection
to that vertex's width. A vertex sums its inputs (a wider one truncated to its width); the output
concatenates the interior vertices that feed it and adds the projected input when the input feeds
it too. Only the projections a graph uses exist, so the parameter count is the benchmark's
(NNI's fixed cell also builds the unused ones).
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from torch import Tensor, nn

Matrix = list[list[int]]


class ConvBNReLU(nn.Sequential):
    """The benchmark's conv (no bias), BatchNorm, ReLU, "same" padding; its convs start from a
    truncated normal of std sqrt(1 / fan_in) (the TF code's variance scaling)."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int):
        super().__init__(nn.Conv2d(c_in, c_out, kernel_size, 1, kernel_size // 2, bias=False), nn.BatchNorm2d(c_out),
                         nn.ReLU(inplace=True))
        std = math.sqrt(1.0 / (c_in * kernel_size ** 2))
        nn.init.trunc_normal_(self[0].weight, 0.0, std, -2 * std, 2 * std)


def nb101_op(name: str) -> Callable[[int], nn.Module]:
    """The factory (of a vertex's width) of one of the benchmark's three ops."""
    if name == "conv3x3-bn-relu":
        return lambda c: ConvBNReLU(c, c, 3)
    if name == "conv1x1-bn-relu":
        return lambda c: ConvBNReLU(c, c, 1)
    if name == "maxpool3x3":
        return lambda c: nn.MaxPool2d(3, 1, 1)
    raise ValueError(f"not a NAS-Bench-101 op: {name!r}")


NB101_OPS = ("conv3x3-bn-relu", "conv1x1-bn-relu", "maxpool3x3")  # NNI's names and order


def prune_spec(matrix: Matrix, ops: Sequence[str]) -> tuple[Matrix, list[str]]:
    """The graph without the vertices that are not on a path from the input (0) to the output
    (last); ValueError when no path joins them."""
    n = len(matrix)
    from_input, to_output = {0}, {n - 1}
    for v in range(1, n):
        if any(matrix[u][v] for u in from_input if u < v):
            from_input.add(v)
    for v in range(n - 2, -1, -1):
        if any(matrix[v][w] for w in to_output if w > v):
            to_output.add(v)
    keep = sorted(from_input & to_output)
    if 0 not in keep or n - 1 not in keep:
        raise ValueError("no path joins the input to the output")
    return [[matrix[u][v] for v in keep] for u in keep], [ops[v] for v in keep]


def vertex_channels(c_in: int, c_out: int, matrix: Matrix) -> list[int]:
    """The width of every vertex of a pruned graph (the benchmark's rule, see the module docstring)."""
    n = len(matrix)
    widths = [0] * n
    widths[0], widths[-1] = c_in, c_out
    if n == 2:
        return widths
    feeding = [v for v in range(1, n - 1) if matrix[v][n - 1]]
    base, extra = divmod(c_out, len(feeding))
    for k, v in enumerate(feeding):
        widths[v] = base + (1 if k < extra else 0)
    for v in range(n - 3, 0, -1):
        if not matrix[v][n - 1]:
            widths[v] = max(widths[w] for w in range(v + 1, n - 1) if matrix[v][w])
    return widths


class NasBench101Fixed(nn.Module):
    """One cell of a pruned graph (`matrix`, `ops`: the interior vertices' op factories of a width)
    from `in_features` to `out_features` channels; `projection(c_in, c_out)` brings the cell input
    to a vertex's width."""

    def __init__(self, matrix: Matrix, ops: Sequence[Callable[[int], nn.Module]], in_features: int, out_features: int,
                 projection: Callable[[int, int], nn.Module]):
        super().__init__()
        self.matrix = [list(row) for row in matrix]
        n = len(matrix)
        self.widths = vertex_channels(in_features, out_features, self.matrix)
        self.ops = nn.ModuleList([nn.Identity()] + [op(w) for op, w in zip(ops, self.widths[1:-1])])
        self.projections = nn.ModuleDict({str(v): projection(in_features, self.widths[v])
                                          for v in range(1, n) if self.matrix[0][v]})

    def forward(self, x: Tensor) -> Tensor:
        n = len(self.matrix)
        states = [x]
        for v in range(1, n - 1):
            inputs = [states[u][:, :self.widths[v]] for u in range(1, v) if self.matrix[u][v]]
            if self.matrix[0][v]:
                inputs.append(self.projections[str(v)](x))
            states.append(self.ops[v](sum(inputs[1:], inputs[0])))
        feeding = [states[u] for u in range(1, n - 1) if self.matrix[u][n - 1]]
        if not feeding:
            return self.projections[str(n - 1)](x)
        out = torch.cat(feeding, 1) if len(feeding) > 1 else feeding[0]
        return out + self.projections[str(n - 1)](x) if self.matrix[0][n - 1] else out

    def extra_repr(self) -> str:
        return f"matrix={self.matrix}, widths={self.widths}"
