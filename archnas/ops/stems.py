"""Model stems: the convolutions between the image and the first cell.

`stem_conv3x3` is DARTS's CIFAR stem (one 3x3 conv plus BN, feeding both inputs of cell 0);
`stem0_imagenet` (stride 4) and `stem1_imagenet` (stride 2) are DARTS's chained ImageNet stems.
Stems are always built with affine BatchNorm, as in DARTS's search network.
"""

from __future__ import annotations

from torch import Tensor, nn

from archnas.descs.model_desc import OpDesc
from archnas.ops.registry import Op, op_conv, register_op


class StemConv3x3(Op):
    """3x3 conv + BN at full resolution; with `relu`, followed by a ReLU."""

    def __init__(self, desc: OpDesc, affine: bool, relu: bool = False):
        super().__init__(desc)
        conv = op_conv(desc)
        layers: list[nn.Module] = [
            nn.Conv2d(conv.ch_in, conv.ch_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(conv.ch_out, affine=affine),
        ]
        if relu:
            layers.append(nn.ReLU(inplace=False))
        self.op = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.op(x)


class Stem0ImageNet(Op):
    """Two stride-2 3x3 convs (to ch_out/2, then ch_out) with BN and a ReLU between: stride 4."""

    def __init__(self, desc: OpDesc, affine: bool):
        super().__init__(desc)
        conv = op_conv(desc)
        mid = conv.ch_out // 2
        self.op = nn.Sequential(
            nn.Conv2d(conv.ch_in, mid, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(mid, affine=affine),
            nn.ReLU(inplace=False),
            nn.Conv2d(mid, conv.ch_out, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(conv.ch_out, affine=affine),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.op(x)


class Stem1ImageNet(Op):
    """ReLU, stride-2 3x3 conv, BN: reads stem0's output."""

    def __init__(self, desc: OpDesc, affine: bool):
        super().__init__(desc)
        conv = op_conv(desc)
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(conv.ch_in, conv.ch_out, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(conv.ch_out, affine=affine),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.op(x)


register_op("stem_conv3x3", StemConv3x3)
register_op("stem_conv3x3_relu", lambda d, a: StemConv3x3(d, a, relu=True))
register_op("stem0_imagenet", Stem0ImageNet)
register_op("stem1_imagenet", Stem1ImageNet)
