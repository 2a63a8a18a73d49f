"""ProxylessNAS's binary gates as an architecture optimizer (`binary_gates`; the `proxyless`
algorithm runs it): Cai, Zhu, Han, "ProxylessNAS: Direct Neural Architecture Search on Target
Task and Hardware", ICLR 2019.

Every label (a LayerChoice) holds architecture parameters alpha and gate probabilities
p = softmax(alpha). Each forward opens one gate per label, k ~ p (`BinaryGates`), and runs only
that candidate, so a step holds the graph of one path:

- the weight step (the trainer's, on a train batch) trains the sampled path; its gates are
  constants, and the candidates not drawn are never run;
- the architecture step (`BinaryGateStep.step`, first order, on a val batch) draws a path too,
  but its gates carry the gradient of p (one-hot in value), and every LayerChoice's output goes
  through `archnas.space.choice.gated_output`: the backward gives gate j
  dL/dg_j = <dL/dy, o_j>, rerunning the candidates not drawn on the same input under
  `torch.no_grad` (one output at a time, dropped after its inner product), and autograd through
  p gives the full binary-gate gradient dL/dalpha_i = sum_j dL/dg_j p_j (delta_ij - p_i), over
  every candidate (the paper's two-path variant, which renormalizes over two drawn candidates,
  is not implemented). Its memory is that of one path plus one candidate's output;
  `scripts/bench_algos.py` measures it against DARTS first order.

The estimator is ProxylessNAS's: at the drawn path it is the gradient of the first-order
(Taylor) expansion of the loss in the gates, so it equals the gradient of the expected loss
sum_paths P(path) L(path) in expectation wherever the loss is linear in each label's output
given the others (`tests/test_proxyless.py` checks that against finite differences), and
approximates it otherwise. Candidates rerun in the backward run in the mode of the forward: in
training mode their BatchNorm layers use and update batch statistics, as the paper's code does.

The latency loss (`nas.search.proxyless`): the expected latency E[lat] under the gate
probabilities from the cost-model registry (`CostModel.expected` over the search's cost tables,
`archnas.nas.cost_search.CostGuide`, a per-choice table of any registered model: `cpu_ms` by
default), against a target T:

- `multiplicative` (the default): `alpha * loss * (E[lat] / T) ** beta`, the form of FBNet (Wu et
  al., CVPR 2019: alpha 0.2, beta 0.6 on log latency) and of ProxylessNAS's later code (`mul#log`,
  beta 0.3 on log latency), here on the latency ratio itself, as MnasNet's reward is: scale-free,
  beta is the relative change of the loss per relative change of latency whatever the loss's
  scale, so one beta carries over between datasets and cost models. On log latency an exponent b
  is an elasticity of b / ln(lat), so FBNet's 0.6 is about 0.2 at 20 ms and ProxylessNAS's 0.3
  about 0.07 at 80 ms, MnasNet's own; the default 0.15 lies between. FBNet's 0.6 put on the ratio
  itself (this code's first default) is several times theirs: on digits it drove the search to
  the space's cheapest networks whatever the target, below the mean of random ones;
- `additive`: `loss + weight * E[lat] / T` (ProxylessNAS's `add#linear`, lambda 0.1), whose pull
  against the loss depends on the loss's scale.

The final architecture meets the hard limits of `nas.search.cost` (`max_latency_ms`, `limits`,
...) through `Limits.best_within` (the most probable architecture within them), as darts and
gdas do over a module space.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from archnas.config.schema import BilevelOrder
from archnas.data.loader import Batch
from archnas.errors import ConfigError, SpaceError
from archnas.latency.registry import check_cost_model
from archnas.nas.arch_optimizer import AlphaArchOptimizer, RunningMean, register_arch_optimizer, sync_grads
from archnas.nas.cost_search import label_probabilities
from archnas.space.store import ArchStore, ArchWeights, Weighting
from archnas.training.checkpoint import Stateful
from archnas.training.hooks import HookBase

FORMS = ("multiplicative", "additive")


@dataclass
class ProxylessConf:
    """`nas.search.proxyless`: the latency loss of the architecture step (see
    archnas/nas/binary_gates.py). The final architecture's hard limits are `nas.search.cost`'s."""

    latency_target: Optional[float] = None  # T, in the latency model's unit; null: no latency loss
    # a registered cost model with a per-choice table (cpu_ms, ort_ms, macs, ...); null: nas.search.cost.latency
    latency_model: Optional[str] = None
    form: str = "multiplicative"  # multiplicative: alpha * loss * (E[lat]/T)**beta | additive: loss + weight * E[lat]/T
    alpha: float = 0.2  # multiplicative: the scale of the product (FBNet's 0.2)
    # multiplicative: the exponent, the loss's elasticity in latency; FBNet's 0.6 is on log latency (an
    # elasticity of 0.6 / ln(lat): about 0.2 at 20 ms), MnasNet's on the ratio is 0.07
    beta: float = 0.15
    weight: float = 0.1  # additive: lambda (ProxylessNAS's add#linear: 0.1)


def latency_model_name(conf: Any) -> str:
    """The latency loss's cost model (`conf`: `nas.search`)."""
    return conf.proxyless.latency_model or conf.cost.latency


def check_proxyless_conf(conf: Any) -> None:
    """`conf`: `nas.search`. Values judged when the config loads."""
    s = conf.proxyless
    if s.form not in FORMS:
        raise ConfigError(f"nas.search.proxyless.form: {s.form!r}; expected one of {', '.join(FORMS)}")
    if s.latency_target is not None and not s.latency_target > 0:
        raise ConfigError(f"nas.search.proxyless.latency_target: {s.latency_target!r}; expected a positive number in "
                          "the latency model's unit, or null (no latency loss)")
    if not (s.alpha > 0 and s.beta >= 0 and s.weight >= 0):
        raise ConfigError(f"nas.search.proxyless: alpha ({s.alpha}) must be positive, beta ({s.beta}) and weight "
                          f"({s.weight}) at least 0")
    check_cost_model(latency_model_name(conf), "nas.search.proxyless.latency_model")


class BinaryGates(Weighting):
    """One gate opened per label and forward, drawn from softmax(alpha) with the global torch RNG
    (checkpointed with the run, so a resumed search draws the same paths). `gradient` is set by
    the architecture step around its forward: the gates then carry the gradient of the
    probabilities and every candidate's gate gets its gradient (`ArchWeights.rerun`)."""

    def __init__(self) -> None:
        self.gradient = False

    def attach(self, store: ArchStore) -> None:
        """Refuses labels that are not one pick out of a LayerChoice's candidates."""
        for label, spec in store.specs.items():
            if not spec.categorical:
                what = "a cell's matrix of edges" if spec.rows else f"a {spec.kind} choice"
                raise SpaceError(f"proxyless gates one candidate of a LayerChoice per label; {label!r} is {what}; "
                                 "search this space with darts, gdas or spos")

    def weights(self, store: ArchStore) -> dict[str, ArchWeights]:
        """The drawn candidates are read back to the host once for the whole forward."""
        with torch.set_grad_enabled(self.gradient and torch.is_grad_enabled()):
            probs = {label: F.softmax(store.alpha(label), dim=-1) for label in store.specs}
        drawn = torch.cat([torch.multinomial(p.detach(), 1) for p in probs.values()]).tolist()
        out = {}
        for (label, p), k in zip(probs.items(), drawn):
            hot = torch.zeros_like(p.detach())
            hot[k] = 1.0
            if p.requires_grad:
                out[label] = ArchWeights(hot - p.detach() + p, chosen=[k], rerun=True)
            else:
                out[label] = ArchWeights(hot, chosen=[k])
        return out


class BinaryGateStep(AlphaArchOptimizer):
    """The architecture step of ProxylessNAS (first order, full binary-gate gradient) with its
    latency loss, on the alpha optimizer of `nas.search.trainer`. Records the epoch's mean
    arch-step val loss (`arch_val_loss`, before the latency factor) and the alpha lr."""

    takes_cost_term = True  # nas.search.cost.penalty adds its gradient too

    def weighting(self) -> BinaryGates:
        return BinaryGates()

    def check(self) -> None:
        search = self.strategy.conf.nas.search
        if BilevelOrder(search.trainer.bilevel_order) != BilevelOrder.first:
            order = BilevelOrder(search.trainer.bilevel_order).value
            raise ConfigError(f"nas.search.trainer.bilevel_order: {order!r}; "
                              "binary gates train the architecture first order (each forward draws another path, so an "
                              "unrolled step would compare different networks). Set it to first")
        check_proxyless_conf(search)
        model = latency_model_name(search)
        if search.proxyless.latency_target is not None and model not in self.strategy.cost_models():
            raise ConfigError(f"nas.search.proxyless.latency_target: {self.strategy.name} builds no cost table of "
                              f"{model!r} for the latency loss; use nas.algo=proxyless, or leave it null")

    def setup(self, trainer: Any) -> None:
        super().setup(trainer)
        self.arch_loss = RunningMean()

    def step(self, train: Batch, next_val: Callable[[], Batch]) -> None:
        if self.strategy.takes_arch_step(self.trainer.epoch):
            self.arch_step(next_val())
        self.alphas.step_schedule()

    def arch_step(self, val: Batch) -> None:
        """One gradient step of the alphas on a val batch (what `scripts/bench_algos.py` times)."""
        t = self.trainer
        model = t.base_model
        gates = model.arch.weighting
        gates.gradient = True
        try:
            loss = t.loss_fn(model(t.precision.prepare_input(val[0])), val[1])
        finally:
            gates.gradient = False
        total = self.latency_loss(loss)
        term = None if self.cost is None else self.cost.term()
        if term is not None:
            total = total + term
        params = list(model.arch_params())
        self.alpha_optimizer.zero_grad(set_to_none=True)
        for p, g in zip(params, torch.autograd.grad(total, params, allow_unused=True)):
            p.grad = torch.zeros_like(p) if g is None else g
        sync_grads(params)
        self.alpha_optimizer.step()
        self.arch_loss.add(loss.detach())

    def latency_loss(self, loss: Tensor) -> Tensor:
        """The architecture loss with the latency term of `nas.search.proxyless` (the loss itself
        without a target)."""
        search = self.strategy.conf.nas.search
        s = search.proxyless
        if s.latency_target is None or self.cost is None:
            return loss
        probs = label_probabilities(self.cost.store, self.cost.labels)
        expected = self.cost.costs.model(latency_model_name(search)).expected(probs).to(loss.dtype)
        ratio = expected / s.latency_target
        if s.form == "multiplicative":
            return s.alpha * loss * ratio ** s.beta
        return loss + s.weight * ratio

    def hooks(self) -> list[HookBase]:
        return [LatencyCheck(self)]

    def epoch_metrics(self) -> dict[str, Any]:
        record: dict[str, Any] = {}
        arch_loss = self.arch_loss.pop()
        if arch_loss is not None:
            record["arch_val_loss"] = arch_loss
        record["alpha_lr"] = self.alphas.lr
        return record

    def states(self) -> dict[str, Stateful]:
        return {**super().states(), "arch_loss": self.arch_loss}


class LatencyCheck(HookBase):
    """Before the first step (after the cost tables are built or restored): the multiplicative
    form raises the latency ratio to a power, which needs a positive expected latency for every
    distribution, so the table's cheapest architecture must be predicted above 0. A measured
    table fitted to noisy timings (a busy machine) can predict less; that is refused, naming the
    fit's error, rather than trained on."""

    def __init__(self, step: BinaryGateStep):
        self.step = step

    def before_fit(self) -> None:
        search = self.step.strategy.conf.nas.search
        s = search.proxyless
        if s.latency_target is None or self.step.cost is None or s.form != "multiplicative":
            return
        name = latency_model_name(search)
        stats = self.step.cost.costs.statistics(name)
        if not stats["min"] > 0:
            model = self.step.cost.costs.model(name)
            raise ConfigError(f"nas.search.proxyless.form: multiplicative needs a positive latency, but {name}'s table "
                              f"predicts {stats['min']:.4g} for the space's cheapest architecture ({model.method}); "
                              "time on a quieter machine or with more nas.search.cost.timing.repeats, or use "
                              "form=additive")


register_arch_optimizer("binary_gates", BinaryGateStep)
