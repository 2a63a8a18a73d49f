"""ArchTrainer: the search-phase Trainer, which also trains the architecture parameters.

Every step first takes an architecture step on the next batch of the search val split (the
DARTS bilevel step, first or second order), then the usual weight step on the train batch. The
alpha optimizer and the val stream's position are checkpointed with everything else, so a
search resumes exactly like any training.

Each epoch's record holds, per cell type, the softmax of every edge's alphas, their mean entropy
and the share of `skip_connect` and `none` among the edges' current argmax: skip-connect collapse,
the best-known DARTS failure, shows up there (and in TensorBoard under `alphas/`) long before the
final architecture does.
"""

from __future__ import annotations

import math
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from archnas.config.schema import ArchTrainerConf, BilevelOrder
from archnas.context import PhaseContext
from archnas.data.loader import Batch, BatchLoader
from archnas.distributed import all_reduce_mean, is_distributed
from archnas.errors import ConfigError
from archnas.descs.model_desc import CellType
from archnas.nas.bilevel import BilevelOptimizer
from archnas.training.hooks import HookBase
from archnas.training.optim import build_optimizer
from archnas.training.trainer import Trainer

WATCHED_OPS = ("skip_connect", "none")


class RunningMean:
    """A sum and a count that survive checkpoints (the arch-step loss of a half-done epoch).

    Values are added as device tensors and read back once, when the mean is taken, so adding one
    every step never waits for the device."""

    def __init__(self) -> None:
        self.total: Tensor | float = 0.0
        self.count = 0

    def add(self, value: Tensor | float) -> None:
        self.total = self.total + value
        self.count += 1

    def pop(self) -> Optional[float]:
        mean = float(self.total) / self.count if self.count else None
        self.total, self.count = 0.0, 0
        return mean

    def state_dict(self) -> dict[str, Any]:
        return {"total": float(self.total), "count": self.count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.total, self.count = float(state["total"]), int(state["count"])


def require_first_order(conf: ArchTrainerConf, algo: str, why: str) -> None:
    """Refuse a second-order config for an algorithm whose alpha step is first order by design,
    rather than quietly running something other than what the config says."""
    if conf.bilevel_order != BilevelOrder.first:
        raise ConfigError(
            f"nas.search.trainer.bilevel_order: {algo} trains its architecture weights first order, got "
            f"{conf.bilevel_order!r}; {why}. Set it to first"
        )


class ArchTrainer(Trainer):
    def __init__(self, conf: ArchTrainerConf, model: nn.Module, ctx: PhaseContext, *, val_stream: BatchLoader, **kwargs):
        super().__init__(conf, model, ctx, **kwargs)
        arch_params = list(self.base_model.arch_params())
        if not arch_params:
            raise ValueError("ArchTrainer needs a model with architecture parameters (a supernet)")
        self.val_stream = val_stream
        self.alpha_optimizer = build_optimizer(conf.alpha_optimizer, arch_params, key="nas.search.trainer.alpha_optimizer")
        self.bilevel = self.make_bilevel()
        self.arch_loss = RunningMean()
        self.register_state("alpha_optimizer", self.alpha_optimizer)
        self.register_state("val_stream", val_stream)
        self.register_state("arch_loss", self.arch_loss)
        self.register_hooks([AlphasToTensorBoard()])

    def make_bilevel(self) -> BilevelOptimizer:
        """The architecture step; override for algorithms that train alphas differently."""
        return BilevelOptimizer(self.base_model, self.optimizer, self.alpha_optimizer, self.loss_fn, self.conf.bilevel_order,
                                hessian_vector_product=self.conf.hessian_vector_product)

    def run_step(self, batch: Batch) -> None:
        x_val, y_val = self.val_stream.next()
        x, y = batch
        train = (self.precision.prepare_input(x), y)
        val = (self.precision.prepare_input(x_val), y_val)
        result = self.bilevel.step(train, val, sync_grads=self.sync_arch_grads)
        self.arch_loss.add(result.val_loss)
        super().run_step(batch)

    def sync_arch_grads(self, params: list[Tensor]) -> None:
        """Under DDP every rank must hold the same alphas: average their gradients."""
        if is_distributed():
            for p in params:
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
            all_reduce_mean([p.grad for p in params])

    def epoch_metrics(self) -> dict[str, Any]:
        record: dict[str, Any] = {}
        arch_loss = self.arch_loss.pop()
        if arch_loss is not None:
            record["arch_val_loss"] = arch_loss
        record["alphas"] = alpha_report(self.base_model)
        for ctype, report in record["alphas"].items():
            record[f"alpha_entropy_{ctype}"] = report["entropy"]
            for op in WATCHED_OPS:
                if op in report["argmax_share"]:
                    record[f"argmax_{op}_{ctype}"] = report["argmax_share"][op]
        return record


def alpha_report(model: nn.Module) -> dict[str, dict[str, Any]]:
    """Per cell type: each edge's softmax weights (named by node and input), their mean entropy
    and each candidate's share of the edges' argmax."""
    out: dict[str, dict[str, Any]] = {}
    for ctype in model.arch.layouts:
        cell = next(c for c in model.desc.cells if c.cell_type == CellType(ctype))
        names = [child.name for child in cell.nodes[0].edges[0].op_desc.children]
        probs = F.softmax(model.alphas(ctype).detach().float().cpu(), dim=-1)
        edges = [f"n{j}_in{e.input_ids[0]}" for j, node in enumerate(cell.nodes) for e in node.edges]
        entropy = -(probs * probs.clamp_min(1e-12).log()).sum(-1)
        winners = probs.argmax(-1)
        out[str(ctype)] = {
            "ops": names,
            "softmax": {edge: [round(float(v), 6) for v in row] for edge, row in zip(edges, probs)},
            "entropy": float(entropy.mean()),
            "max_entropy": math.log(len(names)),
            "argmax_share": {name: float((winners == k).float().mean()) for k, name in enumerate(names)},
        }
    return out


class AlphasToTensorBoard(HookBase):
    """The softmax of every edge's alphas as TensorBoard scalars, `alphas/<cell type>/<edge>/<op>`."""

    def after_epoch(self) -> None:
        t = self.trainer
        tb = t.ctx.open_tensorboard()
        record = t.history.last
        if tb is None or not record or "alphas" not in record:
            return
        for ctype, report in record["alphas"].items():
            for edge, row in report["softmax"].items():
                for op, value in zip(report["ops"], row):
                    tb.add_scalar(f"alphas/{ctype}/{edge}/{op}", value, record["epoch"])
        tb.flush()
