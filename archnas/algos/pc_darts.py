"""PC-DARTS (Xu et al.: "PC-DARTS: Partial Channel Connections for Memory-Efficient Architecture
Search", ICLR 2020).

Two changes to DARTS, and where each lives:

- Partial channels (`PcMixedOp`, op `pc_mixed_op`, put on every edge by `PcDartsBuilder`): an
  edge of C channels sends its first C/k channels through the mixed op and lets the other
  C - C/k bypass it (max-pooled 2x2 on stride-2 edges of reduction cells, as the PC-DARTS code
  does), concatenates [mixed, bypass] and shuffles the channels in k groups, so the next edge
  samples other channels. The candidates are built for C/k channels, and the supernet desc says
  so: each mixed op is C -> C, its children C/k -> C/k. Memory of the search drops accordingly.
- Edge normalization (`PcDartsArchParams`, edge-weights strategy `pc_darts`): a second set of
  architecture parameters, `betas`, one per edge; each node's input edges are weighted by the
  softmax of their betas (a node's weights sum to 1), which damps the noise partial channels add
  to the choice of inputs.

The finalizer ranks candidates by softmax(alpha) * edge weight, as the PC-DARTS genotype code
does, then applies the DARTS rule; every kept edge becomes a full-channel op again, so the final
desc is an ordinary cell. The search is first order with no alpha steps in the first
`nas.search.pc_darts.arch_warmup_epochs` epochs (15 of 50 in the PC-DARTS code).
"""

from __future__ import annotations

from functools import partial
from typing import Any, Callable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from archnas.config.schema import FinalizerConf, FinalizerRank, PcDartsConf
from archnas.config.schema.model_desc import ModelDescConf
from archnas.context import PhaseContext
from archnas.data.loader import Batch
from archnas.descs.builder import CellNodes, ModelDescBuilder
from archnas.descs.dataset_info import DatasetInfo
from archnas.descs.model_desc import CellType, ConvMacroParams, EdgeDesc, ModelDesc, OpDesc
from archnas.errors import ConfigError, DescError
from archnas.model.arch_params import ArchParams, CellLayout, CellWeights, register_edge_weights
from archnas.nas.arch_trainer import ArchTrainer, require_first_order
from archnas.nas.finalizers import Finalizers, RandomFinalizers
from archnas.nas.runner import ExperimentRunner, register_algorithm
from archnas.ops.mixed_op import MixedOp
from archnas.ops.registry import op_conv, op_param, op_stride, register_op
from archnas.training.trainer import Trainer

EDGE_WEIGHTS = "pc_darts"
MIXED_OP = "pc_mixed_op"


def channel_shuffle(x: Tensor, groups: int) -> Tensor:
    """ShuffleNet's shuffle: channel g * (C / groups) + i moves to i * groups + g.

    Its inverse is the shuffle with C / groups groups.
    """
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class PcMixedOp(MixedOp):
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

    def forward(self, x: Tensor, weights: Tensor, chosen: int | None = None) -> Tensor:
        mixed = super().forward(x[:, : self.part], weights)
        bypass = x[:, self.part:]
        if self.stride == 2:
            bypass = F.max_pool2d(bypass, 2, 2)
        return channel_shuffle(torch.cat([mixed, bypass], dim=1), self.k)


class PcDartsArchParams(ArchParams):
    """DARTS's alphas plus `betas`, one per edge, initialized like the alphas (1e-3 * N(0, 1))."""

    def __init__(self, layouts: Mapping[CellType, CellLayout]):
        super().__init__(layouts)
        self.betas = nn.ParameterDict(
            [(str(t), nn.Parameter(1e-3 * torch.randn(lay.n_edges))) for t, lay in self.layouts.items()]
        )

    def edge_norm(self, cell_type: CellType) -> Tensor:
        """Each edge's weight: the softmax of the betas of its node's input edges."""
        betas = self.betas[str(cell_type)]
        nodes = betas.split(list(self.layouts[CellType(cell_type)].edges_per_node))
        return torch.cat([F.softmax(b, dim=-1) for b in nodes])

    def cell_weights(self, cell_type: CellType) -> CellWeights:
        return CellWeights(F.softmax(self.alphas[str(cell_type)], dim=-1), self.edge_norm(cell_type))


register_op(MIXED_OP, PcMixedOp)
register_edge_weights(EDGE_WEIGHTS, PcDartsArchParams)


def check_k(k: int, node_ch: int) -> None:
    if k < 1 or node_ch % k:
        raise ConfigError(f"nas.search.pc_darts.k: {k} must be at least 1 and divide the node channels "
                          f"(nas.search.model_desc.model_stems.init_node_ch = {node_ch})")


class PcDartsBuilder(ModelDescBuilder):
    """The DARTS supernet with partial-channel edges and edge normalization; final and eval
    networks (built from a template) are unchanged."""

    def __init__(self, k: int):
        super().__init__()
        self.k = k

    def build_with_nodes(self, conf: ModelDescConf, dataset_info: DatasetInfo, cell_nodes: CellNodes | None) -> ModelDesc:
        if cell_nodes is None:
            check_k(self.k, conf.model_stems.init_node_ch)
        desc = super().build_with_nodes(conf, dataset_info, cell_nodes)
        if cell_nodes is None:
            desc.edge_weights = EDGE_WEIGHTS
        return desc

    def mixed_op(self, conf: ModelDescConf, conv: ConvMacroParams, stride: int) -> OpDesc:
        part = ConvMacroParams(conv.ch_in // self.k, conv.ch_out // self.k)
        children = [OpDesc(p, {"conv": part, "stride": stride}) for p in conf.primitives]
        return OpDesc(MIXED_OP, {"conv": conv, "stride": stride, "k": self.k}, children=children)


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

    def edge_weights(self, model, cell_type: CellType) -> Tensor:
        ops = F.softmax(model.alphas(cell_type).detach().float().cpu(), dim=-1)
        edges = model.arch.edge_norm(cell_type).detach().float().cpu()
        return ops * edges[:, None]


class PcDartsRandomFinalizers(FullChannelEdges, RandomFinalizers):
    """The random baseline on a PC-DARTS supernet: random cells at full channels."""


class PcDartsTrainer(ArchTrainer):
    """First-order alpha steps, none in the warm-up epochs; each epoch records the edge weights."""

    def __init__(self, conf, model: nn.Module, ctx: PhaseContext, *, pc_darts: PcDartsConf, **kwargs):
        require_first_order(conf, "pc_darts", "its code searches first order")
        if pc_darts.arch_warmup_epochs < 0:
            raise ConfigError(f"nas.search.pc_darts.arch_warmup_epochs: {pc_darts.arch_warmup_epochs} is negative")
        super().__init__(conf, model, ctx, **kwargs)
        self.arch_warmup_epochs = pc_darts.arch_warmup_epochs

    def run_step(self, batch: Batch) -> None:
        if self.epoch < self.arch_warmup_epochs:
            Trainer.run_step(self, batch)  # the weight step alone
        else:
            super().run_step(batch)

    def epoch_metrics(self) -> dict[str, Any]:
        record = super().epoch_metrics()
        arch = self.base_model.arch
        record["edge_weights"] = {
            str(t): [round(float(v), 6) for v in arch.edge_norm(t).detach().cpu()] for t in arch.layouts
        }
        return record


@register_algorithm("pc_darts")
class PcDartsRunner(ExperimentRunner):
    default_finalizers = PcDartsFinalizers
    random_finalizers = PcDartsRandomFinalizers

    def model_desc_builder(self) -> ModelDescBuilder:
        return PcDartsBuilder(self.conf.nas.search.pc_darts.k)

    def trainer_class(self) -> Callable[..., ArchTrainer]:
        return partial(PcDartsTrainer, pc_darts=self.conf.nas.search.pc_darts)

