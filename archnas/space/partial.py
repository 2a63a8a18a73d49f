"""Partial channels (PC-DARTS) over a space's LayerChoices: `partial_channels(k)` while the
supernet is built.

    with partial_channels(4):
        model = NasBench201(stem_out_channels=16)  # every edge a PartialChannelLayerChoice of C/4-channel candidates

A choice that builds its candidates from factories of the channel count (`NasBench201Cell`'s edges)
builds them for C/k channels inside the block and becomes a `PartialChannelLayerChoice`: the first
C/k channels go through the weighted candidates, the other C - C/k bypass them, and the two are
concatenated and shuffled in k groups (ShuffleNet's shuffle), as PC-DARTS's edges do. A
LayerChoice made of modules already built at their full width cannot be narrowed: PC-DARTS
refuses a space with one (`plain_layer_choices`).

The k in force is context-local state (a ContextVar), as `fixed_arch`'s architecture is: the one
way a choice built inside a user's constructor can learn it; it is set only inside the block.
"""

from __future__ import annotations

import contextlib
from contextvars import ContextVar
from typing import Any, Iterator, Mapping, Optional, Sequence

import torch
from torch import Tensor, nn

from archnas.errors import SpaceError
from archnas.ops.mixed_op import channel_shuffle
from archnas.space.choices import Candidates, LayerChoice
from archnas.space.fixed import KEEP

_K: ContextVar[Optional[int]] = ContextVar("archnas_partial_channels", default=None)


def current_partial_channels() -> Optional[int]:
    """The k of the supernet being built (1/k of each edge's channels through its candidates), or None."""
    return _K.get()


@contextlib.contextmanager
def partial_channels(k: int) -> Iterator[None]:
    """Build supernets with partial-channel edges (1/k of the channels) in the block."""
    token = _K.set(k)
    try:
        yield
    finally:
        _K.reset(token)


class PartialChannelLayerChoice(LayerChoice):
    """A LayerChoice over C/k of its input's C channels; the rest bypass it (see the module docstring).
    Its candidates were trained on C/k channels: it has no frozen network (retrain the architecture)."""

    @classmethod
    def _instead(cls, candidates: Candidates, k: int, *, prior: Optional[Sequence[float]] = None,
                 label: Optional[str] = None) -> Any:
        return KEEP

    def __init__(self, candidates: Candidates, k: int, *, prior: Optional[Sequence[float]] = None,
                 label: Optional[str] = None):
        super().__init__(candidates, prior=prior, label=label)
        self.k = k

    def forward(self, x: Tensor) -> Tensor:
        part = x.shape[1] // self.k
        return channel_shuffle(torch.cat([super().forward(x[:, :part]), x[:, part:]], dim=1), self.k)

    def frozen(self, arch: Mapping[str, Any]) -> nn.Module:
        raise SpaceError(f"{self.label_key!r}: a partial-channel edge's candidates were trained on 1/{self.k} of its "
                         "channels; retrain the architecture (nas.eval.mode=retrain)")


def plain_layer_choices(model: nn.Module) -> list[str]:
    """The LayerChoices of `model` that partial channels could not narrow (built at full width)."""
    return [m.label_key for m in model.modules()
            if isinstance(m, LayerChoice) and not isinstance(m, PartialChannelLayerChoice)]
