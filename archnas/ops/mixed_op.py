"""The mixed ops of differentiable search: every candidate op of one edge, weighted.

The weights are not owned here. A mixed op is a choice of its model's architecture store
(`archnas.space.store`): the model binds it to a label (its cell type) and a row (its edge), and
at each forward the op reads that row from the weights the store bound for the forward (softmax
for DARTS, a one-hot sample for GDAS, ...), so nothing is passed through forward arguments.
As in DARTS's `MixedOp`, pooling candidates are followed by a non-affine BatchNorm.

- `mixed_op` (DARTS): the weighted sum of every candidate.
- `gdas_mixed_op` (GDAS): only the candidate the one-hot weights select, times its weight (1 in
  value, so alpha still gets its gradient through it).
- `pc_mixed_op` (PC-DARTS): the weighted sum over the first C/k channels; the others bypass the
  candidates (max-pooled on stride-2 edges); then a channel shuffle in k groups.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from archnas.descs.model_desc import ConvMacroParams, OpDesc
from archnas.errors import DescError
from archnas.ops.registry import Op, op_conv, op_param, op_stride, register_op

if TYPE_CHECKING:
    from archnas.space.store import ArchBinding


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
        self.arch_label: str | None = None
        self.arch_row = 0
        self._binding: "ArchBinding | None" = None

    def bind_arch(self, binding: "ArchBinding", label: str, row: int) -> None:
        """Read row `row` of label `label` from `binding` at every forward."""
        self._binding, self.arch_label, self.arch_row = binding, label, row

    def candidate(self, index: int, x: Tensor) -> Tensor:
        """Candidate `index` alone, including the BatchNorm a pooling candidate gets in search."""
        y = self.ops[index](x)
        key = str(index)
        return self.pool_bns[key](y) if key in self.pool_bns else y

    def forward(self, x: Tensor) -> Tensor:
        if self._binding is None:
            raise RuntimeError(f"op {self.desc.name!r} is not bound to architecture weights (build it inside a Model)")
        w = self._binding.get(self.arch_label)
        y = self.mix(x, w.probs[self.arch_row], None if w.chosen is None else w.chosen[self.arch_row])
        return y if w.edges is None else y * w.edges[self.arch_row]

    def mix(self, x: Tensor, weights: Tensor, chosen: int | None) -> Tensor:
        """The candidates of `x` under this edge's `weights`; `chosen`: the candidate a one-hot
        `weights` selects, when the strategy knows it."""
        return sum(w * self.candidate(i, x) for i, w in enumerate(weights))

    def finalize_candidate(self, index: int) -> OpDesc:
        """Candidate `index` as a standalone op desc with its current weights, for a final desc."""
        return self.ops[index].finalize()




class GdasMixedOp(MixedOp):
    """Runs only the candidate its (one-hot) weights select, scaled by that weight."""

    def mix(self, x: Tensor, weights: Tensor, chosen: int | None) -> Tensor:
        index = int(weights.detach().argmax()) if chosen is None else chosen
        return self.candidate(index, x) * weights[index]


def channel_shuffle(x: Tensor, groups: int) -> Tensor:
    """ShuffleNet's shuffle: channel g * (C / groups) + i moves to i * groups + g.

    Its inverse is the shuffle with C / groups groups.
    """
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class PartialChannelMixedOp(MixedOp):
    """The mixed op over the first C/k channels; the rest bypass it; then the channel shuffle.

    Desc params: `conv` is the edge's C -> C, `k` the proportion; the children are C/k -> C/k.
    """

    def __init__(self, desc: OpDesc, affine: bool):
        super().__init__(desc, affine)
        conv = op_conv(desc, same_channels=True)
        self.k = op_param(desc, "k", int)
        self.stride = op_stride(desc)
        if self.k < 1 or conv.ch_in % self.k:
            raise DescError(f"op {desc.name!r}: k={self.k} must be at least 1 and divide its {conv.ch_in} channels")
        self.part = conv.ch_in // self.k
        wrong = [c.name for c in desc.children if op_conv(c) != ConvMacroParams(self.part, self.part)]
        if wrong:
            raise DescError(f"op {desc.name!r}: candidates {wrong} must have {self.part} = {conv.ch_in}/{self.k} "
                            "channels in and out")

    def mix(self, x: Tensor, weights: Tensor, chosen: int | None) -> Tensor:
        mixed = super().mix(x[:, : self.part], weights, chosen)
        bypass = x[:, self.part:]
        if self.stride == 2:
            bypass = F.max_pool2d(bypass, 2, 2)
        return channel_shuffle(torch.cat([mixed, bypass], dim=1), self.k)


register_op("mixed_op", MixedOp)
register_op("gdas_mixed_op", GdasMixedOp)
register_op("pc_mixed_op", PartialChannelMixedOp)
