"""The model head: a pool over the last cell's output, then the logits op.

Pools keep `[N, C, 1, 1]`; the logits op flattens. `pool_avg2d7x7` is DARTS's ImageNet head,
which equals the adaptive pool at 224x224 input (7x7 maps) but fails loudly on other sizes.
"""

from __future__ import annotations

from torch import Tensor, nn

from archnas.descs.model_desc import OpDesc
from archnas.ops.registry import Op, op_conv, register_op


class Pool2d(Op):
    def __init__(self, desc: OpDesc, affine: bool, pool: nn.Module):
        super().__init__(desc)
        self.op = pool

    def forward(self, x: Tensor) -> Tensor:
        return self.op(x)


class PoolMeanTensor(Op):
    """Mean over the spatial dims (the same as adaptive average pooling, without a module)."""

    def forward(self, x: Tensor) -> Tensor:
        return x.mean(dim=(2, 3), keepdim=True)


class Linear(Op):
    """Flatten, then a linear layer with bias from `conv.ch_in` features to `conv.ch_out` classes."""

    def __init__(self, desc: OpDesc, affine: bool):
        super().__init__(desc)
        conv = op_conv(desc)
        self.linear = nn.Linear(conv.ch_in, conv.ch_out)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(x.flatten(1))


register_op("pool_adaptive_avg2d", lambda d, a: Pool2d(d, a, nn.AdaptiveAvgPool2d(1)))
register_op("pool_avg2d7x7", lambda d, a: Pool2d(d, a, nn.AvgPool2d(7)))
register_op("pool_mean_tensor", lambda d, a: PoolMeanTensor(d))
register_op("linear", Linear)
