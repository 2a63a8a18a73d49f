"""One edge of a cell's DAG: its op applied to the states it reads, then drop-path."""

from __future__ import annotations

from torch import Tensor, nn

from archnas.descs.model_desc import EdgeDesc
from archnas.errors import DescError
from archnas.ops.drop_path import DropPath
from archnas.ops.mixed_op import MixedOp
from archnas.ops.registry import Op


class DagEdge(nn.Module):
    """`index` is the edge's row in its cell type's architecture parameters (edges counted node by
    node); a mixed-op edge reads that row from the model's architecture store."""

    def __init__(self, desc: EdgeDesc, index: int, affine: bool, droppath: bool):
        super().__init__()
        if len(desc.input_ids) != desc.op_desc.in_len:
            raise DescError(
                f"edge with op {desc.op_desc.name!r} reads {len(desc.input_ids)} states "
                f"{desc.input_ids} but the op takes {desc.op_desc.in_len}"
            )
        self.input_ids = list(desc.input_ids)
        self.index = index
        self.op = Op.create(desc.op_desc, affine)
        self.searchable = isinstance(self.op, MixedOp)
        self.drop_path = DropPath() if droppath and self.op.droppable else None

    def forward(self, states: list[Tensor]) -> Tensor:
        y = self.op(*(states[i] for i in self.input_ids))
        if self.drop_path is not None:
            y = self.drop_path(y)
        return y
