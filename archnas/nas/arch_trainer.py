"""ArchTrainer: the Trainer of a supernet, whose architecture its architecture optimizer trains.

The weight optimizer trains `model.weights()`; the architecture is the business of the
`ArchOptimizer` (`archnas.nas.arch_optimizer`) the strategy names (or `nas.search.arch_optimizer`):
every step the trainer calls its `step` with the train batch and the val stream, then takes the
weight step, whose loss gets the optimizer's `loss_terms`. The DARTS bilevel step (`bilevel`:
DARTS, GDAS, PC-DARTS) and the SPOS pretrain's uniform paths (`uniform_paths`) are two such
optimizers. Its checkpoint entries (`states()`), the val stream's position (when it reads val
batches) and the architecture parameters (when it trains them) are registered here, so a search
resumes exactly like any training.

When the optimizer trains the architecture parameters (`trains_alphas`), each epoch's record
holds, per label of the architecture store (a DARTS cell type), the softmax of every edge's
alphas, their mean entropy and the share of `skip_connect` and `none` among the edges' current
argmax: skip-connect collapse, the best-known DARTS failure, shows up there (and in TensorBoard
under `alphas/`) long before the final architecture does. The log says how far the alphas moved:
every epoch the mean entropy per label against where it started (ln 8 = 2.0794 is uniform over
the 8 DARTS ops), and at the end the start and end values, which the search records
(`alpha_summary()`, in search_result.json). It also says, once, why the supernet's val accuracy
trails its train accuracy early, and warns when the strategy takes no architecture step in the
whole search (a warm-up longer than it).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from archnas.config.schema import ArchTrainerConf
from archnas.data.loader import Batch, BatchLoader
from archnas.nas import bilevel  # noqa: F401  (registers the built-in `bilevel` optimizer)
from archnas.nas.arch_optimizer import ArchOptimizer, build_arch_optimizer
from archnas.space.store import ArchStore, Searchable
from archnas.training.env import TrainingEnv
from archnas.training.hooks import HookBase
from archnas.training.trainer import Trainer

if TYPE_CHECKING:
    from archnas.nas.cost_search import CostGuide
    from archnas.nas.strategy import Strategy

WATCHED_OPS = ("skip_connect", "none")


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
    """The Trainer of a supernet: its weight optimizer trains `model.weights()`, its architecture
    optimizer (`arch_optimizer`, built from the strategy) the architecture; the strategy adds
    hooks and record fields of its own."""

    def __init__(self, conf: ArchTrainerConf, model: Searchable, env: TrainingEnv, *, strategy: "Strategy",
                 val_stream: Optional[BatchLoader] = None, cost: Optional["CostGuide"] = None, **kwargs):
        """`model` has its weighting bound already (`ArchOptimizer.weighting()`, by the phase that
        built it); `val_stream`: the search val batches, for an optimizer that reads them; `cost`:
        the search's limits and penalty (`archnas.nas.cost_search`), None for a plain search."""
        super().__init__(conf, model, env, params=model.weights(),
                         find_unused_parameters=strategy.find_unused_parameters, **kwargs)
        if not list(self.base_model.arch_params()):
            raise ValueError("ArchTrainer needs a model with architecture parameters (a supernet)")
        self.strategy = strategy
        self.arch_optimizer: ArchOptimizer = build_arch_optimizer(strategy)
        if self.arch_optimizer.needs_val and val_stream is None:
            raise ValueError(f"architecture optimizer {type(self.arch_optimizer).__name__} reads val batches: "
                             "pass a val_stream")
        self.val_stream = val_stream
        self.cost = cost
        self.arch_optimizer.cost = cost
        self.arch_optimizer.setup(self)
        hooks: list[HookBase] = [] if cost is None else cost.hooks()
        if self.arch_optimizer.trains_alphas:
            self.register_state("arch_params", ArchParamsState(self.base_model))
            self.alphas_at_start = alpha_report(self.base_model.arch)  # before resume: the seeded init of every run
            hooks += [AlphasToTensorBoard(), AlphaProgress()]
        if self.arch_optimizer.needs_val:
            self.register_state("val_stream", val_stream)
        self.register_hooks([*hooks, *self.arch_optimizer.hooks(), *strategy.trainer_hooks()])

    def fit(self, train_loader: BatchLoader, val_loader=None):
        self.arch_optimizer.begin(len(train_loader))
        for name, obj in self.arch_optimizer.states().items():
            self.register_state(name, obj)
        if self.cost is not None:
            self.register_state("cost_tables", self.cost)  # a resumed search keeps its measured tables
        return super().fit(train_loader, val_loader)

    def _replay_schedule(self) -> None:
        super()._replay_schedule()
        self.arch_optimizer.replay_schedule()

    def settings(self) -> dict[str, str]:
        return {**super().settings(), **self.arch_optimizer.settings()}

    def reconfigure(self, changed: set[str]) -> None:
        super().reconfigure(changed)
        self.arch_optimizer.reconfigure(changed)

    def run_step(self, batch: Batch) -> None:
        self.arch_optimizer.step(batch, self._next_val)
        self.weight_step(batch)

    def evaluate(self, loader: Any, prefix: str = "test") -> dict[str, float]:
        if prefix == "val":
            self.arch_optimizer.before_validation()
        return super().evaluate(loader, prefix)

    def _next_val(self) -> Batch:
        return self.val_stream.next()

    def loss_terms(self, outputs: Any, batch: Batch) -> Optional[Tensor]:
        return self.arch_optimizer.loss_terms(self.base_model, outputs, batch)

    def epoch_metrics(self) -> dict[str, Any]:
        record = self.arch_optimizer.epoch_metrics()
        if self.arch_optimizer.trains_alphas:
            record["alphas"] = alpha_report(self.base_model.arch)
            for label, report in record["alphas"].items():
                record[f"alpha_entropy_{label}"] = report["entropy"]
                for op in WATCHED_OPS:
                    if op in report["argmax_share"]:
                        record[f"argmax_{op}_{label}"] = report["argmax_share"][op]
        record.update(self.strategy.epoch_metrics(self.base_model))
        if self.cost is not None:
            record.update(self.cost.expected())
        return record

    def alpha_summary(self) -> dict[str, Any]:
        """How far the alphas moved, per label: mean edge entropy at the start and now, the
        uniform maximum, and each candidate's share of the edges' argmax now (empty when the
        architecture optimizer trains no alphas)."""
        if not self.arch_optimizer.trains_alphas:
            return {}
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
