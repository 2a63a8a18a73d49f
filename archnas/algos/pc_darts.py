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

Over a space over a module (`nas.search.space`, e.g. nb201) the supernet is built under
`archnas.space.partial.partial_channels(k)`: every choice that builds its candidates for a channel
count (NasBench201Cell's edges) builds them for C/k channels and runs them on the first C/k of
its input's, the rest bypassing, then the shuffle, as above. A LayerChoice of modules built at
their full width cannot be narrowed, and the space is refused. Edge normalization weighs a node's
choice of inputs; in a module space that choice is an InputChoice, already a softmax over the
node's inputs, and nb201 chooses no inputs (every node sums all of its edges), so there PC-DARTS
is partial channels with DARTS's weighting. The result is the strongest choice of every label,
retrained at full width (a partial-channel edge has no frozen network: `nas.eval.mode: tune` is
refused).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from archnas.config.schema import EvalMode, FinalizerConf, FinalizerRank
from archnas.descs.model_desc import ConvMacroParams, EdgeDesc, OpDesc
from archnas.errors import ConfigError, SpaceError
from archnas.nas.finalizers import Finalizers, RandomFinalizers
from archnas.nas.registry import register_algorithm
from archnas.nas.strategy import Strategy
from archnas.space.partial import partial_channels, plain_layer_choices
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
    are added to the store as `arch.betas.<label>` when the weighting is attached, for every
    label of edges (a DARTS cell type); a single choice has no edges to weigh (softmax(alpha))."""

    def attach(self, store: ArchStore) -> None:
        store.betas = nn.ParameterDict(
            [(param_key(label), nn.Parameter(1e-3 * torch.randn(len(spec.rows)))) for label, spec in store.specs.items()
             if spec.rows]
        )

    def edge_norm(self, store: ArchStore, label: str) -> Tensor:
        """Each edge's weight: the softmax of the betas of its node's input edges."""
        betas = store.betas[param_key(label)]
        return torch.cat([F.softmax(b, dim=-1) for b in betas.split(list(store.specs[label].groups))])

    def weights(self, store: ArchStore) -> dict[str, ArchWeights]:
        return {label: ArchWeights(F.softmax(store.alpha(label), dim=-1),
                                   self.edge_norm(store, label) if spec.rows else None)
                for label, spec in store.specs.items()}


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

    def check(self) -> None:
        super().check()
        k, node_ch = self.section.k, self.conf.nas.search.model_desc.model_stems.init_node_ch
        if k < 1 or (not self.conf.nas.search.space and node_ch % k):
            raise ConfigError(f"nas.search.pc_darts.k: {k} must be at least 1 and divide the node channels "
                              f"(nas.search.model_desc.model_stems.init_node_ch = {node_ch})")
        if self.conf.nas.eval.mode == EvalMode.tune:
            raise ConfigError("nas.eval.mode: tune; pc_darts trains every candidate on 1/k of its edge's channels, "
                              "so no network of full width inherits them: retrain (nas.eval.mode=retrain)")
        if self.section.arch_warmup_epochs < 0:
            raise ConfigError(f"nas.search.pc_darts.arch_warmup_epochs: {self.section.arch_warmup_epochs} is negative")

    def mixed_op(self, primitives: list[str], conv: ConvMacroParams, stride: int) -> OpDesc:
        return partial_channel_mixed_op(self.section.k, primitives, conv, stride)

    def weighting(self) -> EdgeNormWeighting:
        return EdgeNormWeighting()

    def build_module_supernet(self, build: Callable[[], nn.Module]) -> nn.Module:
        """The space built with partial-channel edges; refused when a LayerChoice cannot be narrowed."""
        with partial_channels(self.section.k):
            model = build()
        plain = plain_layer_choices(model)
        if plain:
            raise SpaceError(f"pc_darts cannot search it: partial channels need candidates built for 1/k of an edge's "
                             f"channels, but the LayerChoice {plain[0]!r} holds modules built at their full width "
                             "(only choices that build their candidates for a channel count can be narrowed, such as "
                             "NasBench201Cell's edges); search this space with darts or gdas")
        return model

    def takes_arch_step(self, epoch: int) -> bool:
        return epoch >= self.section.arch_warmup_epochs

    def epoch_metrics(self, model) -> dict[str, Any]:
        store = model.arch
        return {"edge_weights": {label: [round(float(v), 6) for v in store.weighting.edge_norm(store, label).detach().cpu()]
                                 for label, spec in store.specs.items() if spec.rows}}
