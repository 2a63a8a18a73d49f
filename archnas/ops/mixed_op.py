"""The mixed op of differentiable search: every candidate op on one edge, summed with weights.

The weights are not owned here: the cell gets one `[n_edges, n_candidates]` tensor per forward
from the model's architecture parameters (`archnas.model.arch_params`) and hands row i to edge
i. How that row is computed (softmax, Gumbel sample, ...) is the arch-params strategy's business.
As in DARTS's `MixedOp`, pooling candidates are followed by a non-affine BatchNorm.
"""

from __future__ import annotations

from torch import Tensor, nn

from archnas.descs.model_desc import OpDesc
from archnas.errors import DescError
from archnas.ops.registry import Op, op_conv, register_op


class MixedOp(Op):
    droppable = False  # DARTS applies no drop-path in the search network

    def __init__(self, desc: OpDesc, affine: bool):
        super().__init__(desc)
        if not desc.children:
            raise DescError(f"op {desc.name!r} needs candidate ops in children")
        if desc.in_len != 1 or any(desc.children_ins or ()):
            raise DescError(f"op {desc.name!r} reads one input; got in_len={desc.in_len}, children_ins={desc.children_ins}")
        self.ops = nn.ModuleList(Op.create(child, affine) for child in desc.children)
        self.pool_bns = nn.ModuleDict(
            {str(i): nn.BatchNorm2d(op_conv(child).ch_out, affine=False)
             for i, (child, op) in enumerate(zip(desc.children, self.ops)) if op.pooling}
        )

    def candidate(self, index: int, x: Tensor) -> Tensor:
        """Candidate `index` alone, including the BatchNorm a pooling candidate gets in search."""
        y = self.ops[index](x)
        key = str(index)
        return self.pool_bns[key](y) if key in self.pool_bns else y

    def forward(self, x: Tensor, weights: Tensor, chosen: int | None = None) -> Tensor:
        """`chosen`: the candidate a one-hot `weights` selects, when the strategy knows it (unused here)."""
        return sum(w * self.candidate(i, x) for i, w in enumerate(weights))

    def finalize_candidate(self, index: int) -> OpDesc:
        """Candidate `index` as a standalone op desc with its current weights, for a final desc."""
        return self.ops[index].finalize()


register_op("mixed_op", MixedOp)
