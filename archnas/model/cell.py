"""A cell: two stems preprocess its inputs, each node sums its edges, the post-op merges nodes.

The forward is deliberately small so an alternative can override it and read the same modules:
`stems[k]`, `dag[node][edge].op`, `post_op`. A searchable cell (mixed ops on its edges) is bound
to its cell type's label in the model's architecture store; a DARTS search cell (plain mixed ops
on every edge) then runs the fused forward of `archnas.model.fused_cell` on that label's
weights, which computes the same function faster and in less memory; `fused = None` turns it
off for that cell. On CPU, cells of the DARTS
primitives run channels_last (`cpu_channels_last`).
"""

from __future__ import annotations

from torch import Tensor, nn

from archnas.descs.model_desc import CellDesc
from archnas.errors import DescError
from archnas.model.dag_edge import DagEdge
from archnas.model.fused_cell import FusedCellPlan
from archnas.ops.layout import cpu_channels_last
from archnas.ops.primitives import (
    DilConv,
    FactorizedReduce,
    Identity,
    Pool,
    ReLUConvBN,
    SepConv,
    Zero,
)
from archnas.ops.registry import Op
from archnas.space.store import ArchBinding

# Ops measured faster on channels_last CPU tensors (depthwise convs, pools, 1x1 convs as GEMMs);
# cells made only of these run channels_last on CPU (the DARTS_V2 eval step: see
# scripts/bench_supernet.py). Other ops (PC-DARTS's channel shuffle, user ops) keep the layout
# they are given.
_CHANNELS_LAST_OPS = (Zero, Identity, Pool, FactorizedReduce, SepConv, DilConv, ReLUConvBN)


class Cell(nn.Module):
    def __init__(self, desc: CellDesc, affine: bool, droppath: bool):
        super().__init__()
        if len(desc.stems) != 2:
            raise DescError(f"cell {desc.id}: expected 2 stems, got {len(desc.stems)}")
        self.id = desc.id
        self.cell_type = desc.cell_type
        self.stems = nn.ModuleList(Op.create(s, affine) for s in desc.stems)
        self.dag = nn.ModuleList()
        index = 0
        for j, node in enumerate(desc.nodes):
            if not node.edges:
                raise DescError(f"cell {desc.id} node {j}: a node needs at least one edge")
            for edge in node.edges:
                if any(not 0 <= i < j + 2 for i in edge.input_ids):
                    raise DescError(f"cell {desc.id} node {j}: input ids {edge.input_ids} must be in [0, {j + 2})")
            self.dag.append(nn.ModuleList(DagEdge(e, index + k, affine, droppath) for k, e in enumerate(node.edges)))
            index += len(node.edges)
        self.post_op = Op.create(desc.post_op, affine)
        self.fused: FusedCellPlan | None = FusedCellPlan.for_cell(self)
        self.arch_label: str | None = None
        self._binding: ArchBinding | None = None
        ops = [*self.stems, *(edge.op for node in self.dag for edge in node)]
        self.cpu_channels_last = all(type(op) in _CHANNELS_LAST_OPS for op in ops)

    @property
    def edges(self) -> list[DagEdge]:
        return [edge for node in self.dag for edge in node]

    def bind_arch(self, binding: ArchBinding, label: str) -> None:
        """Read this cell's edge weights from `binding` under `label` (its cell type)."""
        self._binding, self.arch_label = binding, label
        for edge in self.edges:
            if edge.searchable:
                edge.op.bind_arch(binding, label, edge.index)

    def forward(self, s0: Tensor, s1: Tensor) -> Tensor:
        if self.fused is not None and self._binding is not None:
            return self.fused.forward(self, s0, s1, self._binding.get(self.arch_label))
        if self.cpu_channels_last:
            s0, s1 = cpu_channels_last(s0), cpu_channels_last(s1)
        states = [self.stems[0](s0), self.stems[1](s1)]
        for node in self.dag:
            states.append(sum(edge(states) for edge in node))
        return self.post_op(states[2:])
