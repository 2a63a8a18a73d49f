"""The DARTS bilevel step for architecture parameters, first and second order.

First order: alphas follow the gradient of the validation loss at the current weights.

Second order (Liu et al., 2019, eq. 7-8): alphas follow the gradient of the validation loss
after one virtual SGD step of the weights, w' = w - lr * (momentum * buf + dL_train/dw + wd * w).
Its implicit term, a Hessian-vector product, is approximated by central finite differences:

    grad_alpha = dL_val(w', a)/da - [dL_train(w+, a)/da - dL_train(w-, a)/da] / (2 eps)
    w+- = w +- eps * v,  v = lr * dL_val(w', a)/dw',  eps = 0.01 / ||v||

(with one lr this is the paper's formula with lr factored out; with several parameter groups
each weight's own lr is used). The weight optimizer's state supplies momentum buffers, weight
decay and lr per parameter group; for Adam/AdamW weight optimizers the virtual step is plain
SGD with the group's lr and weight decay.

`hessian_vector_product: exact` replaces the finite differences by a double backward,
d/da [dL_train(w, a)/dw . v], which is exact (up to float rounding) and costs about one more
backward pass. The finite differences stay the default, as in DARTS; they run at full float32
precision (`ieee_float32`): their shift eps * v is about 1e-5 per weight at the paper's shape,
which TF32 (cuDNN's default for float32 convolutions on Ampere and newer GPUs, 10 mantissa bits)
would round away. The whole step runs outside autocast, in float32.

Nothing in the step reads a value back to the host (eps and the loss stay tensors), so it does
not wait for the GPU.

The public DARTS code deep-copies the whole network for w'. Here every virtual forward runs the
same module through `torch.func.functional_call` with substituted weight tensors and cloned
buffers, so nothing is copied and BatchNorm running statistics are not touched by virtual steps.

Under DDP the bilevel step runs on the plain module, never on the DDP wrapper (whose forward
would all-reduce weight gradients it does not need and expects a backward through it). Each rank
sees its shard of the train and val batches, so every weight-space quantity is averaged over the
ranks before it is used: dL_train/dw before the virtual step (w' must be the same on every rank)
and v = lr * dL_val/dw' before the finite differences (eps depends on ||v||). The alpha gradient
itself is averaged by the caller (`sync_grads`). With equal shards this is the gradient of the
global batch's mean loss, up to BatchNorm, which normalizes each shard with its own statistics.

`BilevelStep` is the architecture optimizer (`archnas.nas.arch_optimizer`, registered as
`bilevel`) that DARTS, GDAS and PC-DARTS train with: each training step, when the strategy says
so (`Strategy.takes_arch_step`: PC-DARTS warms up without), one step of the alpha optimizer on
the next val batch, first or second order (`nas.search.trainer.bilevel_order`). GDAS and PC-DARTS
differ only by their weighting and hooks, which the strategy gives.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor, nn
from torch.func import functional_call

from archnas.config.schema import BilevelOrder, HessianVectorProduct
from archnas.distributed import all_reduce_mean
from archnas.errors import ConfigError
from archnas.nas.arch_optimizer import AlphaArchOptimizer, RunningMean, register_arch_optimizer, sync_grads
from archnas.training.checkpoint import Stateful
from archnas.training.precision import ieee_float32

LossFn = Callable[[object, Tensor], Tensor]  # (model outputs, targets) -> scalar loss
Batch = tuple[Tensor, Tensor]


@dataclass
class ArchStepResult:
    val_loss: Tensor  # 0-dim, on the device: reading it would wait for the step to finish


class BilevelOptimizer:
    """Computes the architecture gradient and steps the alpha optimizer.

    `model` must be the plain module (not a DDP wrapper): virtual steps call it functionally.
    Under DDP the caller averages the arch-parameter gradients across ranks (`sync_grads` of
    `step`); the second-order step averages its weight-space gradients itself.
    """

    def __init__(
        self,
        model: nn.Module,
        weight_optimizer: torch.optim.Optimizer,
        alpha_optimizer: torch.optim.Optimizer,
        loss_fn: LossFn,
        order: BilevelOrder,
        finite_diff_scale: float = 0.01,  # eps = scale / ||v||, 0.01 as in the DARTS paper and code
        hessian_vector_product: HessianVectorProduct = HessianVectorProduct.finite_difference,
    ):
        self.finite_diff_scale = finite_diff_scale
        self.hvp = HessianVectorProduct(hessian_vector_product)
        self.model = model
        self.weight_optimizer = weight_optimizer
        self.alpha_optimizer = alpha_optimizer
        self.loss_fn = loss_fn
        self.order = BilevelOrder(order)
        self.arch_params = list(model.arch_params())
        arch_ids = {id(p) for p in self.arch_params}
        named = [(n, p) for n, p in model.named_parameters() if id(p) not in arch_ids and p.requires_grad]
        self.weight_names = [n for n, _ in named]
        self.weights = [p for _, p in named]
        # Group indices, not the group dicts: Optimizer.load_state_dict (a resume) replaces the dicts.
        group_of = {id(p): i for i, g in enumerate(weight_optimizer.param_groups) for p in g["params"]}
        missing = [n for n, p in named if id(p) not in group_of]
        if missing:
            raise ValueError(f"weights missing from the weight optimizer: {missing[:5]}")
        self._group_index = [group_of[id(p)] for p in self.weights]

    def _groups(self) -> list[dict]:
        groups = self.weight_optimizer.param_groups
        return [groups[i] for i in self._group_index]

    def compute_grads(self, train: Batch, val: Batch) -> ArchStepResult:
        """Set `.grad` of every arch parameter; does not step."""
        if self.order is BilevelOrder.first:
            loss = self.loss_fn(self.model(val[0]), val[1])
            grads = torch.autograd.grad(loss, self.arch_params, allow_unused=True)
            self._set_arch_grads(grads)
            return ArchStepResult(loss.detach())
        return self._second_order(train, val)

    def step(self, train: Batch, val: Batch, sync_grads: Callable[[list[Tensor]], None] | None = None,
             extra: Callable[[], Tensor | None] | None = None) -> ArchStepResult:
        """`extra`: a term of the architecture loss that depends on the alphas alone (the soft cost
        term), its gradient added to the val loss's."""
        self.alpha_optimizer.zero_grad(set_to_none=True)
        result = self.compute_grads(train, val)
        term = None if extra is None else extra()
        if term is not None:
            for p, g in zip(self.arch_params, torch.autograd.grad(term, self.arch_params, allow_unused=True)):
                if g is not None:
                    p.grad = g.detach() if p.grad is None else p.grad + g.detach()
        if sync_grads is not None:
            sync_grads(self.arch_params)
        self.alpha_optimizer.step()
        return result

    # -- second order ------------------------------------------------------------------------

    def _second_order(self, train: Batch, val: Batch) -> ArchStepResult:
        buffers = dict(self.model.named_buffers())

        # w' = w - lr * (momentum * buf + dL_train/dw + wd * w), with each weight's own group settings.
        train_loss = self.loss_fn(self._call({}, buffers, train[0]), train[1])
        dw = [torch.zeros_like(w) if g is None else g
              for w, g in zip(self.weights, torch.autograd.grad(train_loss, self.weights, allow_unused=True))]
        all_reduce_mean(dw)  # DDP: every rank takes the same virtual step, that of the global batch
        unrolled = {}
        with torch.no_grad():
            for name, w, g, group in zip(self.weight_names, self.weights, dw, self._groups()):
                unrolled[name] = (w - group["lr"] * self._sgd_direction(w, g, group)).requires_grad_()

        # dL_val(w', a)/da and dL_val(w', a)/dw'
        val_loss = self.loss_fn(self._call(unrolled, buffers, val[0]), val[1])
        grads = torch.autograd.grad(val_loss, self.arch_params + list(unrolled.values()), allow_unused=True)
        d_alpha = grads[: len(self.arch_params)]
        vector = [
            torch.zeros_like(w) if g is None else g * group["lr"]
            for w, g, group in zip(self.weights, grads[len(self.arch_params):], self._groups())
        ]
        all_reduce_mean(vector)  # DDP: the same finite-difference direction (and eps) on every rank

        if self.hvp is HessianVectorProduct.exact:
            implicit = self._exact_hessian_vector_product(vector, train, buffers)
        else:
            implicit = self._hessian_vector_product(vector, train, buffers)
        final = [
            None if da is None and hv is None else (_zero_if_none(da, a) - _zero_if_none(hv, a))
            for da, hv, a in zip(d_alpha, implicit, self.arch_params)
        ]
        self._set_arch_grads(final)
        return ArchStepResult(val_loss.detach())

    def _hessian_vector_product(self, vector: list[Tensor], train: Batch, buffers: dict[str, Tensor]) -> list[Tensor | None]:
        """d^2 L_train / (da dw) . vector, by central differences around the current weights, at
        full float32 precision."""
        norm = torch.sqrt(sum((v.double() ** 2).sum() for v in vector))
        eps = (self.finite_diff_scale / norm.clamp_min(1e-12)).to(vector[0].dtype)  # a tensor: no host sync
        plus_minus = []
        for sign in (1.0, -1.0):
            with torch.no_grad():
                shifted = {n: w + sign * eps * v for n, w, v in zip(self.weight_names, self.weights, vector)}
            with ieee_float32():
                loss = self.loss_fn(self._call(shifted, buffers, train[0]), train[1])
                plus_minus.append(torch.autograd.grad(loss, self.arch_params, allow_unused=True))
        return [
            None if gp is None else (gp - gm) / (2 * eps)
            for gp, gm in zip(*plus_minus)
        ]

    def _exact_hessian_vector_product(self, vector: list[Tensor], train: Batch,
                                      buffers: dict[str, Tensor]) -> list[Tensor | None]:
        """d/da [dL_train(w, a)/dw . vector] by double backward at the current weights."""
        current = {n: w for n, w in zip(self.weight_names, self.weights)}
        loss = self.loss_fn(self._call(current, buffers, train[0]), train[1])
        grads = torch.autograd.grad(loss, self.weights, create_graph=True, allow_unused=True)
        dot = sum((g * v).sum() for g, v in zip(grads, vector) if g is not None)
        return list(torch.autograd.grad(dot, self.arch_params, allow_unused=True))

    @torch.no_grad()
    def _sgd_direction(self, w: Tensor, g: Tensor, group: dict) -> Tensor:
        direction = g.clone()
        wd = group.get("weight_decay", 0.0)
        if wd:
            direction.add_(w, alpha=wd)
        momentum = group.get("momentum", 0.0)
        buf = self.weight_optimizer.state.get(w, {}).get("momentum_buffer")
        if momentum and buf is not None:
            direction.add_(buf, alpha=momentum)
        return direction

    def _call(self, weights: dict[str, Tensor], buffers: dict[str, Tensor], x: Tensor):
        """A forward with substituted weights; buffers are cloned so running stats stay untouched."""
        clones = {n: b.clone() for n, b in buffers.items()}
        return functional_call(self.model, {**weights, **clones}, (x,), strict=False)

    def _set_arch_grads(self, grads) -> None:
        for p, g in zip(self.arch_params, grads):
            p.grad = None if g is None else g.detach()


def _zero_if_none(t: Tensor | None, like: Tensor) -> Tensor:
    return torch.zeros_like(like) if t is None else t


class BilevelStep(AlphaArchOptimizer):
    """The DARTS architecture step as an architecture optimizer: the alpha optimizer over
    `model.arch_params()` steps on the val loss (plus the soft cost term, when the search has one),
    first or second order, whenever the strategy takes an architecture step; the alpha lr schedule
    runs on every step. Records the epoch's mean arch-step val loss (`arch_val_loss`) and the alpha
    lr at the epoch's end (`alpha_lr`)."""

    takes_cost_term = True

    def check(self) -> None:
        strategy, order = self.strategy, self.strategy.conf.nas.search.trainer.bilevel_order
        if strategy.first_order_only and order != BilevelOrder.first:
            raise ConfigError(
                f"nas.search.trainer.bilevel_order: {strategy.name} trains its architecture weights first order, got "
                f"{BilevelOrder(order).value!r}; {strategy.first_order_only}. Set it to first"
            )

    def setup(self, trainer) -> None:
        super().setup(trainer)
        conf = trainer.conf
        self.bilevel = BilevelOptimizer(trainer.base_model, trainer.optimizer, self.alpha_optimizer, trainer.loss_fn,
                                        conf.bilevel_order, hessian_vector_product=conf.hessian_vector_product)
        self.arch_loss = RunningMean()

    def step(self, train: Batch, next_val: Callable[[], Batch]) -> None:
        if self.strategy.takes_arch_step(self.trainer.epoch):
            self.arch_step(train, next_val())
        self.alphas.step_schedule()

    def arch_step(self, train: Batch, val: Batch) -> None:
        """One bilevel step on a val batch, with the train batch for the unrolled step (what
        `scripts/bench_supernet.py` times)."""
        prepare = self.trainer.precision.prepare_input
        result = self.bilevel.step((prepare(train[0]), train[1]), (prepare(val[0]), val[1]), sync_grads=sync_grads,
                                   extra=None if self.cost is None else self.cost.term)
        self.arch_loss.add(result.val_loss)

    def epoch_metrics(self) -> dict[str, Any]:
        record: dict[str, Any] = {}
        arch_loss = self.arch_loss.pop()
        if arch_loss is not None:
            record["arch_val_loss"] = arch_loss
        record["alpha_lr"] = self.alphas.lr  # at the epoch's end
        return record

    def states(self) -> dict[str, Stateful]:
        return {**super().states(), "arch_loss": self.arch_loss}


register_arch_optimizer("bilevel", BilevelStep)
