"""Cell post-ops: how a cell merges its node outputs into its single output.

DARTS concatenates the intermediate nodes along channels (`concate_channels`), so a cell with
n nodes of C channels outputs n*C channels; `proj_channels` adds a 1x1 ReLU-conv-BN back to
`conv.ch_out` channels, keeping the width of a deep stack of cells constant. Both take every
node's output; with the param `concat` (state ids, 2 = the first node, as a genotype's
`normal_concat`) they merge only those nodes: the loose ends of a NASNet-style cell.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from archnas.descs.model_desc import OpDesc
from archnas.errors import DescError
from archnas.ops.registry import Op, op_conv, op_param, register_op


def concat_positions(desc: OpDesc) -> list[int] | None:
    """The positions in the node list the op merges (None: all), from its `concat` state ids."""
    if desc.in_len < 1:
        raise DescError(f"op {desc.name!r} needs in_len >= 1, got {desc.in_len}")
    ids = op_param(desc, "concat", list, None)
    if ids is None:
        return None
    ok = ids and all(isinstance(i, int) and not isinstance(i, bool) and 2 <= i < 2 + desc.in_len for i in ids)
    if not ok or ids != sorted(set(ids)):
        raise DescError(f"op {desc.name!r}: concat {ids!r} must be increasing state ids in [2, {2 + desc.in_len})")
    return [i - 2 for i in ids]


def _merged(positions: list[int] | None, states: list[Tensor]) -> Tensor:
    return torch.cat(states if positions is None else [states[i] for i in positions], dim=1)


class ConcateChannels(Op):
    takes_list = True

    def __init__(self, desc: OpDesc, affine: bool):
        super().__init__(desc)
        self.positions = concat_positions(desc)

    def forward(self, states: list[Tensor]) -> Tensor:
        return _merged(self.positions, states)


class ProjChannels(Op):
    takes_list = True

    def __init__(self, desc: OpDesc, affine: bool):
        super().__init__(desc)
        conv = op_conv(desc)
        self.positions = concat_positions(desc)
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(conv.ch_in, conv.ch_out, 1, bias=False),
            nn.BatchNorm2d(conv.ch_out, affine=affine),
        )

    def forward(self, states: list[Tensor]) -> Tensor:
        return self.op(_merged(self.positions, states))


register_op("concate_channels", ConcateChannels)
register_op("proj_channels", ProjChannels)
