"""Drop-path (Zoph et al., 2018; DARTS eval): zero an edge's output for a random subset of the
batch while training, scaling the kept samples by 1/keep so the expectation is unchanged."""

from __future__ import annotations

from torch import Tensor, nn


def drop_path(x: Tensor, prob: float) -> Tensor:
    keep = 1.0 - prob
    mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
    return x.div(keep).mul(mask)


class DropPath(nn.Module):
    """Holds the probability, which `Model.drop_path_prob` ramps during training."""

    def __init__(self) -> None:
        super().__init__()
        self.prob = 0.0

    def forward(self, x: Tensor) -> Tensor:
        if self.training and self.prob > 0.0:
            return drop_path(x, self.prob)
        return x

    def extra_repr(self) -> str:
        return f"prob={self.prob}"
