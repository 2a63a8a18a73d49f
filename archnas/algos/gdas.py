"""GDAS (Dong, Yang: "Searching for A Robust Neural Architecture in Four GPU Hours", CVPR 2019).

DARTS runs every candidate op of every edge and mixes them with softmax(alpha). GDAS samples one
op per edge and forward from the Gumbel-softmax of alpha and runs only that op, which is where
its saving in time and memory comes from. How it maps onto the shared machinery:

- Edge weights (`GdasArchParams`, edge-weights strategy `gdas`): per edge, with Gumbel noise g,
  p = softmax((log_softmax(alpha) + g) / tau); the forward value is one_hot(argmax p) and the
  gradient is that of p (straight-through: one_hot - p.detach() + p), as in the GDAS code. Eval
  mode samples too, as the GDAS code does: the search phase's val accuracy is that of networks
  drawn from the current distribution. (Its mode would be no better a measure: before the alphas
  settle, the argmax of many edges is `none`, which no final cell keeps.)
- Only the sampled op runs (`GdasMixedOp`, op `gdas_mixed_op`, put on every edge by
  `GdasBuilder`): the edge outputs candidate(k) * w[k] for the sampled k, so alpha still gets its
  gradient through w[k] (w[k] is 1 in value; the other candidates' terms are omitted, as in the
  GDAS code's `forward_gdas`). An edge that samples `none` outputs zeros and so passes no
  gradient to its alphas in that step; that is GDAS's estimator, not a detached graph.
- Temperature (`GumbelTemperature` hook): tau_max - (tau_max - tau_min) * epoch / (epochs - 1),
  set before every epoch; a function of the epoch only, so a resumed run uses the same tau.
- Architecture step: first order. The GDAS loop takes a weight step on a train batch, then an
  alpha step on a val batch, each forward drawing its own sample; the ArchTrainer takes the
  alpha step first, then the weight step. Over a run that is the same alternation shifted by
  half a step. A second-order (unrolled) step is refused: its several forwards would each draw
  a different architecture, so the finite differences would compare different networks.
- Finalizer (`GdasFinalizers`): GDAS's genotype code ranks, per node, every (input, op) pair
  other than `none` by softmax(alpha) and keeps the top two pairs, so both kept ops may read the
  same input; the DARTS rule keeps one op on each of the two strongest inputs.
"""

from __future__ import annotations

from functools import partial
from typing import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from archnas.config.schema import BilevelOrder, GdasConf
from archnas.config.schema.model_desc import ModelDescConf
from archnas.context import PhaseContext
from archnas.descs.builder import CellNodes, ModelDescBuilder
from archnas.descs.dataset_info import DatasetInfo
from archnas.descs.model_desc import CellDesc, CellType, ConvMacroParams, ModelDesc, NodeDesc, OpDesc
from archnas.errors import ConfigError, DescError
from archnas.model.arch_params import ArchParams, CellLayout, CellWeights, register_edge_weights
from archnas.nas.arch_trainer import ArchTrainer, require_first_order
from archnas.nas.bilevel import BilevelOptimizer
from archnas.nas.finalizers import NONE_OP, Finalizers
from archnas.nas.runner import ExperimentRunner, register_algorithm
from archnas.nas.searcher import Searcher
from archnas.ops.mixed_op import MixedOp
from archnas.ops.registry import register_op
from archnas.training.hooks import HookBase

EDGE_WEIGHTS = "gdas"
MIXED_OP = "gdas_mixed_op"


def hard_gumbel_softmax(alphas: Tensor, tau: float) -> Tensor:
    """One-hot samples of each row's categorical softmax(alpha), with the gradient of the
    tempered Gumbel-softmax (straight-through).

    The argmax of log_softmax(alpha) + Gumbel noise is an exact sample of softmax(alpha) at any
    tau; tau only shapes the gradient. An exponential draw of exactly 0 (noise of +inf, which
    the GDAS code redraws) is raised to the smallest normal float instead: no host sync, and
    every other draw is what it was.
    """
    draws = torch.empty_like(alphas).exponential_().clamp_min_(torch.finfo(alphas.dtype).tiny)
    gumbels = -draws.log()
    probs = F.softmax((F.log_softmax(alphas, dim=-1) + gumbels) / tau, dim=-1)
    one_hot = torch.zeros_like(probs).scatter_(-1, probs.argmax(-1, keepdim=True), 1.0)
    return one_hot - probs.detach() + probs


class GdasArchParams(ArchParams):
    """DARTS's alphas, turned into one hard sample per edge and forward.

    `tau` is set by the `GumbelTemperature` hook before every epoch; until then it is tau_max.
    """

    def __init__(self, layouts: Mapping[CellType, CellLayout]):
        super().__init__(layouts)
        self.tau = GdasConf().tau_max

    def cell_weights(self, cell_type: CellType) -> CellWeights:
        return self.all_cell_weights()[cell_type]

    def all_cell_weights(self) -> dict[CellType, CellWeights]:
        """One sample per edge of every cell type; the chosen candidates are read back to the host
        in one transfer for the whole forward (the mixed ops branch on them)."""
        samples = {t: hard_gumbel_softmax(self.alphas[str(t)], self.tau) for t in self.layouts}
        chosen = torch.cat([s.detach().argmax(-1) for s in samples.values()]).tolist()
        out, start = {}, 0
        for t, sample in samples.items():
            out[t] = CellWeights(sample, chosen=chosen[start: start + len(sample)])
            start += len(sample)
        return out


class GdasMixedOp(MixedOp):
    """A mixed op that runs only the candidate its (one-hot) weights select, scaled by that weight."""

    def forward(self, x: Tensor, weights: Tensor, chosen: int | None = None) -> Tensor:
        index = int(weights.detach().argmax()) if chosen is None else chosen
        return self.candidate(index, x) * weights[index]


register_op(MIXED_OP, GdasMixedOp)
register_edge_weights(EDGE_WEIGHTS, GdasArchParams)


class GdasBuilder(ModelDescBuilder):
    """The DARTS supernet with `gdas_mixed_op` edges and GDAS edge weights; final and eval
    networks (built from a template) are unchanged."""

    def mixed_op(self, conf: ModelDescConf, conv: ConvMacroParams, stride: int) -> OpDesc:
        op = super().mixed_op(conf, conv, stride)
        op.name = MIXED_OP
        return op

    def build_with_nodes(self, conf: ModelDescConf, dataset_info: DatasetInfo, cell_nodes: CellNodes | None) -> ModelDesc:
        desc = super().build_with_nodes(conf, dataset_info, cell_nodes)
        if cell_nodes is None:
            desc.edge_weights = EDGE_WEIGHTS
        return desc


def gdas_tau(conf: GdasConf, epoch: int, epochs: int) -> float:
    """The temperature of `epoch` (0-based) out of `epochs`: tau_max at the first, tau_min at the last."""
    return conf.tau_max - (conf.tau_max - conf.tau_min) * epoch / max(epochs - 1, 1)


def check_gdas_conf(conf: GdasConf) -> None:
    if not 0 < conf.tau_min <= conf.tau_max:
        raise ConfigError(f"nas.search.gdas: need 0 < tau_min <= tau_max, got tau_min={conf.tau_min}, "
                          f"tau_max={conf.tau_max}")


class GumbelTemperature(HookBase):
    """Sets the model's Gumbel-softmax temperature for the epoch and records it as `gdas_tau`."""

    def __init__(self, conf: GdasConf):
        check_gdas_conf(conf)
        self.conf = conf

    def before_epoch(self) -> None:
        t = self.trainer
        tau = gdas_tau(self.conf, t.epoch, t.conf.epochs)
        t.base_model.arch.tau = tau
        t.epoch_info["gdas_tau"] = tau


class GdasTrainer(ArchTrainer):
    """The ArchTrainer with first-order alpha steps and the annealed temperature."""

    def __init__(self, conf, model: nn.Module, ctx: PhaseContext, *, gdas: GdasConf, **kwargs):
        require_first_order(conf, "gdas", "every forward draws another architecture, so an unrolled step would "
                            "compare different networks")
        super().__init__(conf, model, ctx, **kwargs)
        self.register_hooks([GumbelTemperature(gdas)])

    def make_bilevel(self) -> BilevelOptimizer:
        return BilevelOptimizer(self.base_model, self.optimizer, self.alpha_optimizer, self.loss_fn, BilevelOrder.first)


class GdasFinalizers(Finalizers):
    """Per node, the `max_final_edges` strongest (input, op) pairs other than `none`, strongest
    first; ties go to the lower input, then the earlier op (the order GDAS's stable sort keeps)."""

    def finalize_node(self, cell: CellDesc, index: int, node: NodeDesc, weights: Tensor) -> NodeDesc:
        pairs: list[tuple[float, int, str]] = []
        for i, (edge, row) in enumerate(zip(node.edges, weights)):
            names = [c.name for c in edge.op_desc.children]
            if len(names) != row.numel():
                raise DescError(f"edge from {edge.input_ids}: {len(names)} candidates but {row.numel()} weights")
            pairs += [(float(row[k]), i, name) for k, name in enumerate(names) if name != NONE_OP]
        if not pairs:
            raise DescError(f"cell {cell.id} node {index}: every candidate is {NONE_OP!r}; nothing to keep")
        kept = sorted(pairs, key=lambda pair: -pair[0])[: self.max_final_edges]
        return NodeDesc([self.finalize_edge(node.edges[i], name) for _, i, name in kept], node.conv_params)


class GdasSearcher(Searcher):
    find_unused_parameters = True  # under DDP the candidates not sampled in a step have no gradient


@register_algorithm("gdas")
class GdasRunner(ExperimentRunner):
    default_finalizers = GdasFinalizers

    def model_desc_builder(self) -> ModelDescBuilder:
        return GdasBuilder()

    def trainer_class(self) -> Callable[..., ArchTrainer]:
        return partial(GdasTrainer, gdas=self.conf.nas.search.gdas)

    def searcher(self) -> Searcher:
        return GdasSearcher(self.model_desc_builder(), self.trainer_class(), self.finalizers(), force=self.force)
