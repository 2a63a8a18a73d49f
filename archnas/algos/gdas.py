"""GDAS (Dong, Yang: "Searching for A Robust Neural Architecture in Four GPU Hours", CVPR 2019).

DARTS runs every candidate op of every edge and mixes them with softmax(alpha). GDAS samples one
op per edge and forward from the Gumbel-softmax of alpha and runs only that op, which is where
its saving in time and memory comes from. How it maps onto the shared machinery:

- Edge weights (`GumbelWeighting`): per edge, with Gumbel noise g,
  p = softmax((log_softmax(alpha) + g) / tau); the forward value is one_hot(argmax p) and the
  gradient is that of p (straight-through: one_hot - p.detach() + p), as in the GDAS code. Eval
  mode samples too, as the GDAS code does: the search phase's val accuracy is that of networks
  drawn from the current distribution. (Its mode would be no better a measure: before the alphas
  settle, the argmax of many edges is `none`, which no final cell keeps.)
- Only the sampled op runs (`archnas.ops.mixed_op.GdasMixedOp`, op `gdas_mixed_op` on every
  supernet edge): the edge outputs candidate(k) * w[k] for the sampled k, so alpha still gets its
  gradient through w[k] (w[k] is 1 in value; the other candidates' terms are omitted, as in the
  GDAS code's `forward_gdas`). An edge that samples `none` outputs zeros and so passes no
  gradient to its alphas in that step; that is GDAS's estimator, not a detached graph. Over a
  module space's LayerChoices (NAS-Bench-201) the output also adds the other candidates' weights,
  which are exactly 0 in value, so all of the label's alphas get a gradient, as the GDAS code's
  NAS-Bench-201 cell does (`archnas.space.choice.sampled_output`).
- An InputChoice of n_chosen = k > 1 inputs draws k distinct inputs at once (`hard_gumbel_top_k`):
  the k largest of log_softmax(alpha) + Gumbel noise, an exact sample without replacement from
  softmax(alpha); its gradient is that of the relaxed k-hot of k successive tempered softmaxes,
  each damping what the ones before it took (Xie and Ermon, "Reparameterizable Subset Sampling
  via Continuous Relaxations", 2019), which for k = 1 is GDAS's own. An input choice of any number
  (n_chosen None) has no fixed k to draw: GDAS refuses it (DARTS and SPOS search it).
- Temperature (`GumbelTemperature` hook): tau_max - (tau_max - tau_min) * epoch / (epochs - 1),
  set before every epoch; a function of the epoch only, so a resumed run uses the same tau.
- Architecture step: first order. The GDAS loop takes a weight step on a train batch, then an
  alpha step on a val batch, each forward drawing its own sample; the ArchTrainer takes the
  alpha step first, then the weight step. Over a run that is the same alternation shifted by
  half a step. A second-order (unrolled) step is refused: its several forwards would each draw
  a different architecture, so the finite differences would compare different networks.
- DDP: the candidates not sampled in a step get no gradient, which DDP must be told
  (`find_unused_parameters`).
- Finalizer (`GdasFinalizers`): GDAS's genotype code ranks, per node, every (input, op) pair
  other than `none` by softmax(alpha) and keeps the top two pairs, so both kept ops may read the
  same input; the DARTS rule keeps one op on each of the two strongest inputs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from archnas.descs.model_desc import CellDesc, ConvMacroParams, NodeDesc, OpDesc
from archnas.errors import ConfigError, DescError, SpaceError
from archnas.nas.finalizers import NONE_OP, Finalizers
from archnas.nas.registry import register_algorithm
from archnas.nas.strategy import Strategy
from archnas.space.store import ArchStore, ArchWeights, Weighting
from archnas.training.hooks import HookBase


@dataclass
class GdasConf:
    """`nas.search.gdas`: the Gumbel-softmax temperature, annealed linearly over the search
    epochs, tau_max - (tau_max - tau_min) * epoch / (epochs - 1), as the GDAS code does."""

    tau_max: float = 10.0  # at the first epoch
    tau_min: float = 0.1  # at the last epoch


def _gumbel_scores(alphas: Tensor) -> Tensor:
    """log_softmax(alpha) + Gumbel noise. An exponential draw of exactly 0 (noise of +inf, which the
    GDAS code redraws) is raised to the smallest normal float instead: no host sync, and every
    other draw is what it was."""
    draws = torch.empty_like(alphas).exponential_().clamp_min_(torch.finfo(alphas.dtype).tiny)
    return F.log_softmax(alphas, dim=-1) - draws.log()


def hard_gumbel_softmax(alphas: Tensor, tau: float) -> Tensor:
    """One-hot samples of each row's categorical softmax(alpha), with the gradient of the
    tempered Gumbel-softmax (straight-through).

    The argmax of log_softmax(alpha) + Gumbel noise is an exact sample of softmax(alpha) at any
    tau; tau only shapes the gradient.
    """
    probs = F.softmax(_gumbel_scores(alphas) / tau, dim=-1)
    one_hot = torch.zeros_like(probs).scatter_(-1, probs.argmax(-1, keepdim=True), 1.0)
    return one_hot - probs.detach() + probs


def hard_gumbel_top_k(alphas: Tensor, k: int, tau: float) -> tuple[Tensor, Tensor]:
    """A k-hot sample of k distinct candidates of the vector softmax(alpha), drawn without
    replacement, with the gradient of its relaxation (straight-through), and the k indices.

    The k largest Gumbel-perturbed log-probabilities are an exact sample without replacement at
    any tau. The relaxation adds k tempered softmaxes of the perturbed scores, each after damping
    the scores by log(1 - what the previous softmax took), so its k-hot limit as tau -> 0 is the
    sample, and every alpha reaches every chosen weight.
    """
    scores = _gumbel_scores(alphas)
    indices = scores.topk(k, dim=-1).indices
    hard = torch.zeros_like(scores).scatter_(-1, indices, 1.0)
    relaxed = torch.zeros_like(scores)
    taken = torch.zeros_like(scores)
    tiny = torch.finfo(scores.dtype).tiny
    for _ in range(k):
        scores = scores + torch.log((1.0 - taken).clamp_min(tiny))
        taken = F.softmax(scores / tau, dim=-1)
        relaxed = relaxed + taken
    return hard - relaxed.detach() + relaxed, indices


class GumbelWeighting(Weighting):
    """DARTS's alphas, turned into one hard sample per edge and forward (k distinct inputs for an
    input choice of k); `tau` is set by the `GumbelTemperature` hook before every epoch (until
    then it is tau_max)."""

    def __init__(self, tau: float):
        self.tau = tau

    def attach(self, store: ArchStore) -> None:
        """Refuses input choices of any number of inputs, which a draw of k cannot search."""
        anything = [label for label, spec in store.specs.items() if spec.n_chosen is None]
        if anything:
            raise SpaceError(f"gdas cannot search the InputChoice {anything[0]!r} of n_chosen=None (any number of "
                             "inputs): its Gumbel sample draws a fixed number of candidates; give the InputChoice an "
                             "n_chosen, or search it with darts (weights every input) or spos (samples subsets)")

    def weights(self, store: ArchStore) -> dict[str, ArchWeights]:
        """The chosen candidates of every edge are read back to the host in one transfer for the
        whole forward (the mixed ops branch on them)."""
        samples, picks = {}, []
        for label, spec in store.specs.items():
            alpha = store.alpha(label)
            if spec.n_chosen is not None and spec.n_chosen > 1:
                samples[label], indices = hard_gumbel_top_k(alpha, spec.n_chosen, self.tau)
            else:
                samples[label] = hard_gumbel_softmax(alpha, self.tau)
                indices = samples[label].detach().argmax(-1)
            picks.append(indices.flatten())
        chosen = torch.cat(picks).tolist()
        out, start = {}, 0
        for label, spec in store.specs.items():
            sample = samples[label]
            if spec.n_chosen is not None and spec.n_chosen > 1:
                out[label] = ArchWeights(sample, chosen=[tuple(sorted(chosen[start: start + spec.n_chosen]))])
                start += spec.n_chosen
            else:
                rows = sample.shape[0] if sample.dim() > 1 else 1
                out[label] = ArchWeights(sample, chosen=chosen[start: start + rows])
                start += rows
        return out


def gdas_tau(conf: GdasConf, epoch: int, epochs: int) -> float:
    """The temperature of `epoch` (0-based) out of `epochs`: tau_max at the first, tau_min at the last."""
    return conf.tau_max - (conf.tau_max - conf.tau_min) * epoch / max(epochs - 1, 1)


class GumbelTemperature(HookBase):
    """Sets the weighting's Gumbel-softmax temperature for the epoch and records it as `gdas_tau`."""

    def __init__(self, conf: GdasConf):
        self.conf = conf

    def before_epoch(self) -> None:
        t = self.trainer
        tau = gdas_tau(self.conf, t.epoch, t.conf.epochs)
        t.base_model.arch.weighting.tau = tau
        t.epoch_info["gdas_tau"] = tau


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


@register_algorithm
class Gdas(Strategy):
    name = "gdas"
    cost_aware = True  # nas.search.cost limits and penalty over a module space (on the softmax of the alphas)
    config_class = GdasConf
    first_order_only = "every forward draws another architecture, so an unrolled step would compare different networks"
    find_unused_parameters = True
    default_finalizers = GdasFinalizers

    def check(self) -> None:
        super().check()
        if not 0 < self.section.tau_min <= self.section.tau_max:
            raise ConfigError(f"nas.search.gdas: need 0 < tau_min <= tau_max, got tau_min={self.section.tau_min}, "
                              f"tau_max={self.section.tau_max}")

    def mixed_op(self, primitives: list[str], conv: ConvMacroParams, stride: int) -> OpDesc:
        op = super().mixed_op(primitives, conv, stride)
        op.name = "gdas_mixed_op"
        return op

    def weighting(self) -> GumbelWeighting:
        return GumbelWeighting(self.section.tau_max)

    def trainer_hooks(self) -> list[HookBase]:
        return [GumbelTemperature(self.section)]
