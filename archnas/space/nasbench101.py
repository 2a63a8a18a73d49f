"""NNI's `NasBench101Cell`: NAS-Bench-101's cell space (a DAG over at most `max_num_nodes`
vertices, input and output included, with at most `max_num_edges` edges and one op per interior
vertex) as labelled choices, with NNI's arguments and labels:

- `<label>/num_nodes`: the number of vertices, 2 .. max_num_nodes (NNI's prior: 2^n, normalized);
- `<label>/op<i>`: the op of vertex i (1 .. num_nodes - 2), a name of `op_candidates`;
- `<label>/input<i>`: the vertices feeding vertex i (1 .. num_nodes - 1; the last is the output),
  a non-empty list of indices below i.

An architecture with more than `max_num_edges` edges is refused (`arch_problem`, which
`SearchSpaceModel.check_arch` and the genome's `allows` apply), as NNI's constraint refuses it.
NNI's input choices may also be empty; a vertex without inputs is pruned, and every pruned graph
has an equal one with fewer vertices whose inputs are all non-empty, so the set of networks is
NNI's. Under `fixed_arch` (and `freeze`) the cell is the pruned plain cell
(`archnas.ops.nasbench101.NasBench101Fixed`): its widths depend on the graph, so candidates share
no weights. Like NNI's, the cell has no supernet forward: strategies that train a supernet refuse
spaces holding it, and the others (random search, multi-trial search) build a network per
architecture.
"""

from __future__ import annotations

import itertools
from typing import Any, Callable, Mapping, Optional, Sequence, Union

from torch import Tensor, nn

from archnas.errors import SpaceError
from archnas.ops.nasbench101 import NasBench101Fixed, prune_spec
from archnas.space.choices import InputChoice
from archnas.space.fixed import KEEP, Resolvable, current_fixed_arch
from archnas.space.value import ValueChoice

OpFactories = Union[Mapping[str, Callable[[int], nn.Module]], Sequence[Callable[[int], nn.Module]]]


def _named(op_candidates: OpFactories) -> dict[str, Callable[[int], nn.Module]]:
    """NNI's form: a mapping name -> factory of a width, or a list (named "0", "1", ...)."""
    items = dict(op_candidates) if isinstance(op_candidates, Mapping) else \
        {str(i): op for i, op in enumerate(op_candidates)}
    if not items or not all(callable(op) for op in items.values()):
        raise SpaceError("NasBench101Cell: op_candidates must be a non-empty mapping (or list) of factories of a width")
    return items


def _check_limits(max_num_nodes: int, max_num_edges: int, label: Optional[str]) -> str:
    if not isinstance(max_num_nodes, int) or isinstance(max_num_nodes, bool) or max_num_nodes < 2:
        raise SpaceError(f"NasBench101Cell: max_num_nodes {max_num_nodes!r} must be an int of at least 2")
    if not isinstance(max_num_edges, int) or isinstance(max_num_edges, bool) or max_num_edges < 1:
        raise SpaceError(f"NasBench101Cell: max_num_edges {max_num_edges!r} must be a positive int")
    if not label or not isinstance(label, str):
        raise SpaceError("NasBench101Cell: give it a label (cells sharing one share their architecture)")
    return label


def cell_labels(label: str, num_nodes: int) -> tuple[str, list[str], list[str]]:
    """(num_nodes label, op labels of vertices 1..n-2, input labels of vertices 1..n-1)."""
    return (f"{label}/num_nodes", [f"{label}/op{i}" for i in range(1, num_nodes - 1)],
            [f"{label}/input{i}" for i in range(1, num_nodes)])


def _subsets(i: int) -> tuple[list[int], ...]:
    return tuple(list(c) for r in range(1, i + 1) for c in itertools.combinations(range(i), r))


def graph_of(num_nodes: int, inputs: Sequence[Sequence[int]]) -> list[list[int]]:
    """The adjacency matrix (row: source, column: target) of the vertices' input lists."""
    matrix = [[0] * num_nodes for _ in range(num_nodes)]
    for v, sources in enumerate(inputs, 1):
        for u in sources:
            matrix[u][v] = 1
    return matrix


class NasBench101Cell(Resolvable, nn.Module):
    """NNI's arguments: `op_candidates` (name -> factory of a width), `in_features`,
    `out_features`, `projection(in, out)` (the module bringing the cell input to a vertex's
    width), `max_num_nodes`, `max_num_edges`, `label`."""

    @classmethod
    def _instead(cls, op_candidates: OpFactories, in_features: int, out_features: int,
                 projection: Callable[[int, int], nn.Module], max_num_nodes: int = 7, max_num_edges: int = 9,
                 label: Optional[str] = None):
        fixed = current_fixed_arch()
        if fixed is None:
            return KEEP
        ops = _named(op_candidates)
        label = _check_limits(max_num_nodes, max_num_edges, label)
        nodes_label, _, _ = cell_labels(label, max_num_nodes)
        n = fixed.choose(nodes_label, "NasBench101Cell", tuple(range(2, max_num_nodes + 1)))
        _, op_labels, input_labels = cell_labels(label, n)
        chosen = {nodes_label: n}
        chosen.update({lb: fixed.choose(lb, "NasBench101Cell", tuple(ops)) for lb in op_labels})
        chosen.update({lb: fixed.choose(lb, "NasBench101Cell", _subsets(i)) for i, lb in enumerate(input_labels, 1)})
        return _fixed_cell(label, chosen, ops, in_features, out_features, projection, max_num_edges)

    def __init__(self, op_candidates: OpFactories, in_features: int, out_features: int,
                 projection: Callable[[int, int], nn.Module], max_num_nodes: int = 7, max_num_edges: int = 9,
                 label: Optional[str] = None):
        super().__init__()
        self.op_factories = _named(op_candidates)
        self.cell_label = _check_limits(max_num_nodes, max_num_edges, label)
        self.in_features, self.out_features, self.projection = in_features, out_features, projection
        self.max_num_nodes, self.max_num_edges = max_num_nodes, max_num_edges
        nodes_label, op_labels, input_labels = cell_labels(self.cell_label, max_num_nodes)
        prior = [2.0 ** n for n in range(2, max_num_nodes + 1)]
        self.num_nodes = ValueChoice(list(range(2, max_num_nodes + 1)), prior=[p / sum(prior) for p in prior],
                                     label=nodes_label)
        self.ops = nn.ModuleList([ValueChoice(list(self.op_factories), label=lb) for lb in op_labels])
        self.inputs = nn.ModuleList([InputChoice(i, None, label=lb) for i, lb in enumerate(input_labels, 1)])

    def reachable(self, arch: Mapping[str, Any]) -> list[nn.Module]:
        """The choices an architecture of `num_nodes` vertices reads."""
        n = arch[self.num_nodes.label_key]
        return [self.num_nodes, *self.ops[:n - 2], *self.inputs[:n - 1]]

    def arch_problem(self, arch: Mapping[str, Any]) -> Optional[str]:
        """Why `arch` is not an architecture of this cell (too many edges), or None."""
        n = arch[self.num_nodes.label_key]
        edges = sum(len(arch[choice.label_key]) for choice in self.inputs[:n - 1])
        if edges > self.max_num_edges:
            return (f"NasBench101Cell {self.cell_label!r}: {edges} edges, at most max_num_edges={self.max_num_edges} "
                    "allowed")
        return None

    def frozen(self, arch: Mapping[str, Any]) -> nn.Module:
        return _fixed_cell(self.cell_label, arch, self.op_factories, self.in_features, self.out_features,
                           self.projection, self.max_num_edges)

    def forward(self, x: Tensor) -> Tensor:
        raise SpaceError(f"NasBench101Cell {self.cell_label!r} has no supernet forward (NNI's has none either): its "
                         "vertices' widths depend on the graph; build a network per architecture (fixed_arch, freeze) "
                         "or search it with random or multi-trial search")


def _fixed_cell(label: str, arch: Mapping[str, Any], ops: Mapping[str, Callable[[int], nn.Module]], in_features: int,
                out_features: int, projection: Callable[[int, int], nn.Module], max_num_edges: int) -> NasBench101Fixed:
    """The pruned plain cell of `arch`'s values for this cell's labels."""
    n = arch[f"{label}/num_nodes"]
    _, op_labels, input_labels = cell_labels(label, n)
    inputs = [list(arch[lb]) for lb in input_labels]
    edges = sum(len(i) for i in inputs)
    if edges > max_num_edges:
        raise SpaceError(f"NasBench101Cell {label!r}: {edges} edges, at most max_num_edges={max_num_edges} allowed")
    names = ["input", *(arch[lb] for lb in op_labels), "output"]
    matrix, kept = prune_spec(graph_of(n, inputs), names)
    return NasBench101Fixed(matrix, [ops[name] for name in kept[1:-1]], in_features, out_features, projection)
