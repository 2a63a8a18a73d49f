"""Cell post-ops: how a cell merges its node outputs into its single output.

DARTS concatenates the intermediate nodes along channels (`concate_channels`), so a cell with
n nodes of C channels outputs n*C channels; `proj_channels` adds a 1x1 ReLU-conv-BN back to
`conv.ch_out` channels, keeping the width of a deep stack of cells constant.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from archnas.descs.model_desc import OpDesc
from archnas.errors import DescError
from archnas.ops.registry import Op, op_conv, register_op


class ConcateChannels(Op):
    takes_list = True

    def __init__(self, desc: OpDesc, affine: bool):
        super().__init__(desc)
        if desc.in_len < 1:
            raise DescError(f"op {desc.name!r} needs in_len >= 1, got {desc.in_len}")

    def forward(self, states: list[Tensor]) -> Tensor:
        return torch.cat(states, dim=1)


class ProjChannels(Op):
    takes_list = True

    def __init__(self, desc: OpDesc, affine: bool):
        super().__init__(desc)
        conv = op_conv(desc)
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(conv.ch_in, conv.ch_out, 1, bias=False),
            nn.BatchNorm2d(conv.ch_out, affine=affine),
        )

    def forward(self, states: list[Tensor]) -> Tensor:
        return self.op(torch.cat(states, dim=1))


register_op("concate_channels", ConcateChannels)
register_op("proj_channels", ProjChannels)
