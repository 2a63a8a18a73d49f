"""ArchTrainer: the search-phase Trainer, which also trains the architecture parameters.

Every step first takes an architecture step on the next batch of the search val split (the
DARTS bilevel step, first or second order; when the strategy says so: PC-DARTS warms up without),
then the usual weight step on the train batch. The alpha optimizer and the val stream's position
are checkpointed with everything else, so a search resumes exactly like any training.

Each epoch's record holds, per label of the architecture store (a DARTS cell type), the softmax of every edge's alphas, their mean entropy
and the share of `skip_connect` and `none` among the edges' current argmax: skip-connect collapse,
the best-known DARTS failure, shows up there (and in TensorBoard under `alphas/`) long before the
final architecture does. The log says how far the alphas moved: every epoch the mean entropy per
label against where it started (ln 8 = 2.0794 is uniform over the 8 DARTS ops), and at the end
the start and end values, which the search records (`alpha_summary()`, in search_result.json).
It also says, once, why the supernet's val accuracy trails its train accuracy early, and warns
when the strategy takes no architecture step in the whole search (a warm-up longer than it).
"""

from __future__ import annotations

import math
import warnings
from typing import TYPE_CHECKING, Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from archnas.config import config_hash
from archnas.config.schema import ArchTrainerConf
from archnas.data.loader import Batch, BatchLoader
from archnas.distributed import all_reduce_mean, is_distributed
from archnas.nas.bilevel import BilevelOptimizer
from archnas.space.store import ArchStore, Searchable
from archnas.training.env import TrainingEnv
from archnas.training.hooks import HookBase
from archnas.training.optim import apply_hyperparameters, build_optimizer
from archnas.training.schedules import build_scheduler
from archnas.training.trainer import Trainer

if TYPE_CHECKING:
    from archnas.nas.strategy import Strategy

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


class ArchParamsState:
    """Architecture parameters as their own checkpoint entry, readable without building the model."""

    def __init__(self, model: Searchable):
        self.model = model

    def state_dict(self) -> dict[str, Tensor]:
        return {name: p.detach().cpu().clone() for name, p in self.model.named_arch_params()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        with torch.no_grad():
            for name, p in self.model.named_arch_params():
                p.copy_(state[name])


class ArchTrainer(Trainer):
    """The Trainer of a supernet: its weight optimizer trains `model.weights()`, the alpha
    optimizer `model.arch_params()`, and the strategy says when an architecture step is taken,
    which hooks run and what each epoch records."""

    def __init__(self, conf: ArchTrainerConf, model: Searchable, env: TrainingEnv, *, strategy: "Strategy",
                 val_stream: BatchLoader, **kwargs):
        super().__init__(conf, model, env, params=model.weights(),
                         find_unused_parameters=strategy.find_unused_parameters, **kwargs)
        arch_params = list(self.base_model.arch_params())
        if not arch_params:
            raise ValueError("ArchTrainer needs a model with architecture parameters (a supernet)")
        self.strategy = strategy
        self.val_stream = val_stream
        self.alpha_optimizer = build_optimizer(conf.alpha_optimizer, arch_params, key="nas.search.trainer.alpha_optimizer")
        self.bilevel = BilevelOptimizer(self.base_model, self.optimizer, self.alpha_optimizer, self.loss_fn,
                                        conf.bilevel_order, hessian_vector_product=conf.hessian_vector_product)
        self.alpha_scheduler: Any = None  # built by fit(), which knows the steps per epoch
        self.arch_loss = RunningMean()
        self.register_state("arch_params", ArchParamsState(self.base_model))
        self.register_state("alpha_optimizer", self.alpha_optimizer)
        self.register_state("val_stream", val_stream)
        self.register_state("arch_loss", self.arch_loss)
        self.alphas_at_start = alpha_report(self.base_model.arch)  # before resume: the seeded init of every run
        self.register_hooks([AlphasToTensorBoard(), AlphaProgress(), *strategy.trainer_hooks()])

    def fit(self, train_loader: BatchLoader, val_loader=None):
        self.alpha_scheduler = self._new_alpha_scheduler(len(train_loader))
        self.register_state("alpha_scheduler", self.alpha_scheduler)
        return super().fit(train_loader, val_loader)

    def _new_alpha_scheduler(self, steps_per_epoch: int) -> Any:
        return build_scheduler(self.conf.alpha_lr_schedule, self.alpha_optimizer, max(self.conf.epochs, 1),
                               max(steps_per_epoch, 1))

    def _replay_schedule(self) -> None:
        """A new search length changes the alpha lr schedule too: rebuilt and stepped to now."""
        super()._replay_schedule()
        self._replay_alpha_schedule()

    def _replay_alpha_schedule(self) -> None:
        for group in self.alpha_optimizer.param_groups:
            group["lr"] = self.conf.alpha_optimizer.lr
            group.pop("initial_lr", None)
        scheduler = self._new_alpha_scheduler(self.steps_per_epoch)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "scheduler.step() before optimizer.step()": intended here
            for _ in range(self.global_step):
                scheduler.step()
        self.alpha_scheduler.load_state_dict(scheduler.state_dict())

    def settings(self) -> dict[str, str]:
        return {**super().settings(), "alpha_optimizer": config_hash(self.conf.alpha_optimizer),
                "alpha_lr_schedule": config_hash(self.conf.alpha_lr_schedule)}

    def reconfigure(self, changed: set[str]) -> None:
        super().reconfigure(changed)
        if changed & {"alpha_optimizer", "alpha_lr_schedule"}:  # from the config, and the schedule from it
            apply_hyperparameters(self.alpha_optimizer, self.conf.alpha_optimizer, self.base_model.arch_params(),
                                  self._key("alpha_optimizer"), keep_lr=False)
            self._replay_alpha_schedule()

    def run_step(self, batch: Batch) -> None:
        if self.strategy.takes_arch_step(self.epoch):
            self.arch_step(batch, self.val_stream.next())
        self.weight_step(batch)
        if self.alpha_scheduler is not None:  # None: a step taken outside fit() (a benchmark, a test)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # warm-up steps take no alpha step, yet the schedule runs on
                self.alpha_scheduler.step()

    def arch_step(self, train: Batch, val: Batch) -> None:
        """One step of the architecture parameters (the DARTS bilevel step, first or second
        order) on a val batch, with the train batch for the unrolled step."""
        train = (self.precision.prepare_input(train[0]), train[1])
        val = (self.precision.prepare_input(val[0]), val[1])
        result = self.bilevel.step(train, val, sync_grads=self.sync_arch_grads)
        self.arch_loss.add(result.val_loss)

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
        record["alpha_lr"] = self.alpha_optimizer.param_groups[0]["lr"]  # at the epoch's end
        record["alphas"] = alpha_report(self.base_model.arch)
        for label, report in record["alphas"].items():
            record[f"alpha_entropy_{label}"] = report["entropy"]
            for op in WATCHED_OPS:
                if op in report["argmax_share"]:
                    record[f"argmax_{op}_{label}"] = report["argmax_share"][op]
        record.update(self.strategy.epoch_metrics(self.base_model))
        return record

    def alpha_summary(self) -> dict[str, Any]:
        """How far the alphas moved, per label: mean edge entropy at the start and now, the
        uniform maximum, and each candidate's share of the edges' argmax now."""
        now = alpha_report(self.base_model.arch)
        return {label: {"entropy_start": self.alphas_at_start[label]["entropy"], "entropy_end": report["entropy"],
                        "max_entropy": report["max_entropy"], "argmax_share_end": report["argmax_share"]}
                for label, report in now.items()}


def alpha_report(store: ArchStore) -> dict[str, dict[str, Any]]:
    """Per label: each row's softmax weights (named by the row: a DARTS edge's node and input),
    their mean entropy and each candidate's share of the rows' argmax."""
    out: dict[str, dict[str, Any]] = {}
    for label, spec in store.specs.items():
        probs = F.softmax(store.alpha(label).detach().float().cpu(), dim=-1).reshape(-1, len(spec.candidates))
        rows = spec.rows or (label,)
        entropy = -(probs * probs.clamp_min(1e-12).log()).sum(-1)
        winners = probs.argmax(-1)
        out[label] = {
            "ops": list(spec.candidates),
            "softmax": {row: [round(float(v), 6) for v in p] for row, p in zip(rows, probs)},
            "entropy": float(entropy.mean()),
            "max_entropy": math.log(len(spec.candidates)),
            "argmax_share": {name: float((winners == k).float().mean()) for k, name in enumerate(spec.candidates)},
        }
    return out


def entropy_line(trainer: ArchTrainer, report: dict[str, dict[str, Any]]) -> str:
    """`regular 2.0794 -> 1.7012, reduction ...` (the mean over all labels when there are many)."""
    start = trainer.alphas_at_start
    if len(report) <= 4:
        return ", ".join(f"{label} {start[label]['entropy']:.4f} -> {r['entropy']:.4f}" for label, r in report.items())
    mean = lambda rs: sum(r["entropy"] for r in rs.values()) / len(rs)  # noqa: E731
    return f"mean over {len(report)} labels {mean(start):.4f} -> {mean(report):.4f}"


class AlphaProgress(HookBase):
    """What the log says about the architecture parameters: the notes before the search, the
    entropy every epoch, and how far they moved at the end."""

    def before_fit(self) -> None:
        t: ArchTrainer = self.trainer  # type: ignore[assignment]
        epochs = t.conf.epochs
        if epochs and not any(t.strategy.takes_arch_step(e) for e in range(epochs)):
            warmup = getattr(t.strategy.section, "arch_warmup_epochs", None)
            why = "" if warmup is None else (f" (nas.search.{t.strategy.name}.arch_warmup_epochs = {warmup} covers all "
                                             f"{epochs} epochs of nas.search.trainer.epochs)")
            t.log.warning(f"no architecture step in any of the {epochs} search epochs{why}: the alphas keep their "
                          "random initialization and the final architecture says nothing; search longer or shorten "
                          "the warm-up")
        has_plain_bn = any(isinstance(m, torch.nn.BatchNorm2d) and not m.affine and m.track_running_stats
                           for m in t.base_model.modules())
        if t.epochs_done == 0 and t.epoch_step == 0 and has_plain_bn:
            bn = next(m for m in t.base_model.modules() if isinstance(m, torch.nn.BatchNorm2d) and not m.affine)
            t.log.info(
                "note: the supernet's val accuracy is measured in eval mode, where its BatchNorm layers (non-affine, "
                "as in DARTS) normalize with running statistics; these trail the fast-changing weights and alphas "
                f"(each training forward moves them only a fraction {bn.momentum} of the way, and an epoch here has "
                f"{t.steps_per_epoch} steps), so val top-1 lags train top-1 in the first epochs. Training and the "
                "architecture steps use batch statistics and are not affected."
            )

    def after_epoch(self) -> None:
        t: ArchTrainer = self.trainer  # type: ignore[assignment]
        record = t.history.last or {}
        if "alphas" in record:
            uniform = {round(r["max_entropy"], 4) for r in record["alphas"].values()}
            t.log.info(f"alphas: mean edge entropy {entropy_line(t, record['alphas'])} "
                       f"(uniform: {', '.join(f'{u:.4f}' for u in sorted(uniform))})")

    def after_fit(self) -> None:
        t: ArchTrainer = self.trainer  # type: ignore[assignment]
        now = alpha_report(t.base_model.arch)
        shares = "; ".join(f"{label} " + ", ".join(f"{op} {r['argmax_share'][op]:.0%}" for op in WATCHED_OPS
                                                    if op in r["argmax_share"])
                           for label, r in now.items() if any(op in r["argmax_share"] for op in WATCHED_OPS))
        t.log.info(f"alphas moved over the search: mean edge entropy {entropy_line(t, now)}"
                   + (f"; argmax share {shares}" if shares else ""))


class AlphasToTensorBoard(HookBase):
    """The softmax of every edge's alphas as TensorBoard scalars, `alphas/<cell type>/<edge>/<op>`."""

    def after_epoch(self) -> None:
        t = self.trainer
        tb = t.env.open_tensorboard()
        record = t.history.last
        if tb is None or not record or "alphas" not in record:
            return
        for ctype, report in record["alphas"].items():
            for edge, row in report["softmax"].items():
                for op, value in zip(report["ops"], row):
                    tb.add_scalar(f"alphas/{ctype}/{edge}/{op}", value, record["global_step"])
        tb.flush()
