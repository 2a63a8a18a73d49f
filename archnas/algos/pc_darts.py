"""PC-DARTS (Xu et al.: "PC-DARTS: Partial Channel Connections for Memory-Efficient Architecture
Search", ICLR 2020).

Two changes to DARTS, and where each lives:

- Partial channels (`archnas.ops.mixed_op.PartialChannelMixedOp`, op `pc_mixed_op` on every
  supernet edge): an
  edge of C channels sends its first C/k channels through the mixed op and lets the other
  C - C/k bypass it (max-pooled 2x2 on stride-2 edges of reduction cells, as the PC-DARTS code
  does), concatenates [mixed, bypass] and shuffles the channels in k groups, so the next edge
  samples other channels. The candidates are built for C/k channels, and the supernet desc says
  so: each mixed op is C -> C, its children C/k -> C/k. Memory of the search drops accordingly.
- Edge normalization (`EdgeNormWeighting`): a second set of architecture parameters, `betas`,
  one per edge, which the weighting adds to the architecture store; each node's input edges are weighted by the
  softmax of their betas (a node's weights sum to 1), which damps the noise partial channels add
  to the choice of inputs.

The finalizer ranks candidates by softmax(alpha) * edge weight, as the PC-DARTS genotype code
does, then applies the DARTS rule; every kept edge becomes a full-channel op again, so the final
desc is an ordinary cell. The search is first order with no alpha steps in the first
`nas.search.pc_darts.arch_warmup_epochs` epochs (15 of 50 in the PC-DARTS code).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from archnas.config.schema import FinalizerConf, FinalizerRank
from archnas.descs.model_desc import ConvMacroParams, EdgeDesc, OpDesc
from archnas.errors import ConfigError
from archnas.nas.finalizers import Finalizers, RandomFinalizers
from archnas.nas.registry import register_algorithm
from archnas.nas.spaces import Space
from archnas.nas.strategy import Strategy
from archnas.space.store import ArchStore, ArchWeights, Weighting, param_key


@dataclass
class PcDartsConf:
    """`nas.search.pc_darts`: partial channels and edge normalization."""

    k: int = 4  # 1/k of each edge's channels go through the mixed op, the rest bypass it; must divide the node channels
    # No architecture steps in the first N epochs, only weight steps (the PC-DARTS code: 15 of 50).
    arch_warmup_epochs: int = 15


def partial_channel_mixed_op(k: int, primitives: list[str], conv: ConvMacroParams, stride: int) -> OpDesc:
    """A supernet edge of C channels whose candidates take C/k of them."""
    part = ConvMacroParams(conv.ch_in // k, conv.ch_out // k)
    children = [OpDesc(p, {"conv": part, "stride": stride}) for p in primitives]
    return OpDesc("pc_mixed_op", {"conv": conv, "stride": stride, "k": k}, children=children)


class EdgeNormWeighting(Weighting):
    """DARTS's softmax(alpha) per edge, times each edge's weight: the softmax of the `betas` of its
    node's input edges. The betas (one per edge, initialized like the alphas, 1e-3 * N(0, 1))
    are added to the store as `arch.betas.<label>` when the weighting is attached."""

    def attach(self, store: ArchStore) -> None:
        store.betas = nn.ParameterDict(
            [(param_key(label), nn.Parameter(1e-3 * torch.randn(len(spec.rows)))) for label, spec in store.specs.items()]
        )

    def edge_norm(self, store: ArchStore, label: str) -> Tensor:
        """Each edge's weight: the softmax of the betas of its node's input edges."""
        betas = store.betas[param_key(label)]
        return torch.cat([F.softmax(b, dim=-1) for b in betas.split(list(store.specs[label].groups))])

    def weights(self, store: ArchStore) -> dict[str, ArchWeights]:
        return {label: ArchWeights(F.softmax(store.alpha(label), dim=-1), self.edge_norm(store, label))
                for label in store.specs}


class FullChannelEdges:
    """Finalizer mixin: a kept candidate gets its edge's full channels back (no inherited weights,
    which were trained on C/k channels)."""

    def finalize_edge(self, edge: EdgeDesc, primitive: str) -> EdgeDesc:
        op = edge.op_desc.candidate(primitive).clone(edge.op_desc.conv, clear_trainables=True)
        return EdgeDesc(op, list(edge.input_ids))


class PcDartsFinalizers(FullChannelEdges, Finalizers):
    """The DARTS rule on softmax(alpha) * edge weight, as the PC-DARTS genotype code ranks."""

    def __init__(self, conf: FinalizerConf, max_final_edges: int):
        if conf.rank != FinalizerRank.softmax:
            raise ConfigError(f"nas.search.finalizer.rank: pc_darts ranks by softmax(alpha) times the edge weights, "
                              f"as the PC-DARTS code does; {conf.rank!r} is not supported, use softmax")
        super().__init__(conf, max_final_edges)

    def edge_weights(self, model, cell_type) -> Tensor:
        ops = F.softmax(model.alphas(cell_type).detach().float().cpu(), dim=-1)
        edges = model.arch.weighting.edge_norm(model.arch, str(cell_type)).detach().float().cpu()
        return ops * edges[:, None]


class PcDartsRandomFinalizers(FullChannelEdges, RandomFinalizers):
    """The random baseline on a PC-DARTS supernet: random cells at full channels."""


@register_algorithm
class PcDarts(Strategy):
    name = "pc_darts"
    config_class = PcDartsConf
    first_order_only = "its code searches first order"
    default_finalizers = PcDartsFinalizers
    random_finalizers = PcDartsRandomFinalizers

    def supports(self, space: Space) -> Optional[str]:
        if space.kind == "modules":
            return ("partial channels and edge normalization are built into its DARTS cell edges (pc_mixed_op); "
                    "search DARTS cells (leave nas.search.space empty), or search this space with darts or gdas")
        return None

    def check(self) -> None:
        super().check()
        k, node_ch = self.section.k, self.conf.nas.search.model_desc.model_stems.init_node_ch
        if k < 1 or node_ch % k:
            raise ConfigError(f"nas.search.pc_darts.k: {k} must be at least 1 and divide the node channels "
                              f"(nas.search.model_desc.model_stems.init_node_ch = {node_ch})")
        if self.section.arch_warmup_epochs < 0:
            raise ConfigError(f"nas.search.pc_darts.arch_warmup_epochs: {self.section.arch_warmup_epochs} is negative")

    def mixed_op(self, primitives: list[str], conv: ConvMacroParams, stride: int) -> OpDesc:
        return partial_channel_mixed_op(self.section.k, primitives, conv, stride)

    def weighting(self) -> EdgeNormWeighting:
        return EdgeNormWeighting()

    def takes_arch_step(self, epoch: int) -> bool:
        return epoch >= self.section.arch_warmup_epochs

    def epoch_metrics(self, model) -> dict[str, Any]:
        store = model.arch
        return {"edge_weights": {label: [round(float(v), 6) for v in store.weighting.edge_norm(store, label).detach().cpu()]
                                 for label in store.specs}}
