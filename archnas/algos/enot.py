"""ENOT's workflow (ENOT.ai's NAS: pretrain, latency-constrained search, tune) as a recipe of
stages on the one trainer, checkpoints and resume, over a space over a module (`nas.search.space`:
a registered space, a factory, or `autogen` from a plain model).

- `pretrain` (`archnas.nas.pretrain`, shared with spos): the supernet trained one uniformly drawn
  path per step (`nas.search.trainer`). Its record leaves out `nas.search.cost` and
  `nas.search.enot`, so changing a limit, the penalty weight or a search setting reuses it.
- `search` (`EnotSearch`): only the architecture logits train (the weights are frozen), on the
  search val split, with Adam or RAdam. Each step (`archnas.enot.core.SearchCore`, the same rule
  the Python API's search optimizers run): draw one architecture from the current distribution
  (a straight-through Gumbel sample, noise seeded by the seed and the global step), re-estimate
  its BatchNorm statistics on `bn_tune_batches` train batches, take the loss on a val batch in
  eval mode plus the soft cost term `nas.search.cost.penalty` (`weight * E[cost] / max cost`),
  and step the logits. Before each validation and at the end the architecture is the most
  probable one within every limit of `nas.search.cost` (exact: `Limits.best_within`; the argmax
  without limits), BN-tuned on `bn_validation_tune_batches` train batches and scored on val.
  Each epoch records val top-1, the expected cost of every cost model with a per-choice table
  and the chosen architecture and its costs (`search/metrics.jsonl`); the final architecture is
  `search/arch.yaml`, each cost's min, max, mean and median over the space
  `search/latency_stats.json` (as spos writes it). A finished search whose only changes are under
  `nas.search.cost` or `nas.search.enot` runs again (its old folder kept), on the finished pretrain.
- `tune` (`EnotTune`, folder `tune/`): the eval phase under another name: the found network cut
  out of the pretrained supernet and fine-tuned (`nas.eval.mode: tune`, at a small lr: ENOT's
  tutorial uses 2e-4) or retrained from scratch (`retrain`); `tune/model_last.pt` is what
  `archnas export` exports.

`nas.search.enot` keys:

    optimizer: adam               # adam | radam: the architecture logits' optimizer
    lr: 0.01                      # its learning rate (constant)
    epochs: 1                     # passes over the search val split
    tau: 1.0                      # Gumbel-softmax temperature of the straight-through gradient
    bn_tune_batches: 10           # train batches re-estimating BN statistics each step (0: off)
    bn_validation_tune_batches: 50  # train batches before each validation and at the end (0: off)
"""

from __future__ import annotations

import fnmatch
import json
from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch

from archnas.config.compat import config_changes, is_safe_key
from archnas.config.schema.training import LrScheduleConf, LrScheduleType, OptimizerConf, OptimizerType, TrainerConf
from archnas.context import PhaseContext
from archnas.data.loader import Batch, BatchLoader
from archnas.enot.core import SearchCore, unsearchable_label
from archnas.errors import ConfigError, SpaceError
from archnas.latency import Limits, cost_model
from archnas.latency.penalty import CostPenalty
from archnas.nas.evaluater import Evaluater
from archnas.nas.pretrain import Pretrain
from archnas.nas.registry import register_algorithm
from archnas.nas.searcher import SearchPhase, SearchResult, load_data
from archnas.nas.spaces import CellSpace, Space, space_of
from archnas.nas.strategy import Strategy
from archnas.nas.subnet_search import LATENCY_STATS_FILE, CostTables, space_costs
from archnas.nas.subnets import inherited_supernet
from archnas.training.env import TrainingEnv
from archnas.training.hooks import HookBase
from archnas.training.trainer import Trainer
from archnas.utils import atomic, reads
from archnas.utils.seeding import derive_seed

OPTIMIZERS = ("adam", "radam")
RERUN_KEYS = ("nas.search.cost.*", "nas.search.enot.*")  # a finished search changed only here runs again


@dataclass
class EnotConf:
    optimizer: str = "adam"  # adam | radam
    lr: float = 0.01
    epochs: int = 1
    tau: float = 1.0
    bn_tune_batches: int = 10
    bn_validation_tune_batches: int = 50


def first_batches(loader: BatchLoader, n: int) -> list[Batch]:
    """The first `n` batches of a pass in epoch 0's order: the same for every validation and rerun."""
    out: list[Batch] = []
    for batch in loader:
        if len(out) >= n:
            break
        out.append(batch)
    return out


class BuildPenalty(HookBase):
    """The soft cost term, built after the trainer resumed (the cost tables are then the checkpoint's)."""

    def __init__(self, build: Callable[[], Optional[CostPenalty]]):
        self.build = build

    def before_fit(self) -> None:
        self.trainer.penalty = self.build()  # type: ignore[attr-defined]


class EnotSearchTrainer(Trainer):
    """The Trainer whose parameters are the architecture logits: each step samples, BN-tunes and
    takes the loss of one architecture (`SearchCore`); each validation scores the constrained argmax."""

    def __init__(self, conf: TrainerConf, core: SearchCore, env: TrainingEnv, *, section: EnotConf,
                 bn_stream: BatchLoader, validation_batches: list[Batch], report: list[str], seed: int, **kwargs):
        super().__init__(conf, core.model, env, params=list(core.model.arch_params()), **kwargs)
        self.core, self.section, self.seed = core, section, seed
        self.bn_stream, self.validation_batches, self.report = bn_stream, validation_batches, report
        self.penalty: Optional[CostPenalty] = None
        self.val_arch: Optional[dict[str, Any]] = None
        self.register_state("bn_stream", bn_stream)

    def run_step(self, batch: Batch) -> None:
        self.core.sample(torch.Generator().manual_seed(derive_seed(self.seed, "enot_search", self.global_step)))
        if self.section.bn_tune_batches:
            self.core.tune_bn([self.bn_stream.next() for _ in range(self.section.bn_tune_batches)])
        self.base_model.eval()  # the loss of the sampled network with its tuned statistics
        try:
            self.weight_step(batch)
        finally:
            self.base_model.train()

    def loss_terms(self, outputs: Any, batch: Batch) -> Optional[torch.Tensor]:
        return None if self.penalty is None else self.penalty(self.core.probabilities())

    def evaluate(self, loader: Any, prefix: str = "test") -> dict[str, float]:
        """Validation scores the architecture the search would end with now."""
        if prefix == "val":
            self.val_arch = self.core.best_arch()
            self.core.use(self.val_arch)
            self.core.tune_bn(self.validation_batches)
        return super().evaluate(loader, prefix)

    def epoch_metrics(self) -> dict[str, Any]:
        costs = self.core.costs
        record: dict[str, Any] = {f"expected_{n}": self.core.expected(n) for n in self.report
                                  if costs.model(n).uses_table}
        if self.val_arch is not None:
            record["arch"] = dict(self.val_arch)
            record["arch_costs"] = {n: costs.model(n).cost(self.val_arch) for n in self.report}
            self.log.info(f"search epoch {self.epoch + 1}: {self.val_arch}; "
                          + ", ".join(f"{n} {v:,.6g}" for n, v in record["arch_costs"].items())
                          + "; expected " + ", ".join(f"{k[9:]} {v:,.6g}" for k, v in record.items()
                                                      if k.startswith("expected_")))
        return record


def search_trainer_conf(conf: Any, section: EnotConf) -> TrainerConf:
    """The search's trainer: the logits' optimizer at a constant lr, no clipping, the pretrain's loss."""
    return TrainerConf(epochs=section.epochs, batch_chunks=1, grad_clip=0.0, lossfn=conf.trainer.lossfn,
                       optimizer=OptimizerConf(type=OptimizerType(section.optimizer), lr=section.lr, decay=0.0),
                       lr_schedule=LrScheduleConf(type=LrScheduleType.constant), amp=conf.trainer.amp)


class EnotSearch(SearchPhase):
    """`search` of enot (see the module docstring)."""

    picks_subnets = True  # takes cost limits; preflight judges them before the pretrain
    takes_cost_penalty = True  # adds nas.search.cost.penalty to its own loss (Strategy.check lets it through)

    def inputs(self) -> tuple[str, ...]:
        return (self.strategy.supernet_phase(),)

    def finished(self) -> Optional[dict[str, Any]]:
        """A finished search whose only changes are its own settings (limits, penalty, search
        settings) runs again, keeping its old folder; the pretrain it reads is reused."""
        marker = self.dir / self.marker
        if not self.restart and marker.is_file() and self.run.conf.common.resume:
            try:
                saved = json.loads(reads.read_text(marker)).get("config")
            except (OSError, ValueError, AttributeError):
                saved = None
            if isinstance(saved, dict):
                diff = [k for k in config_changes(saved, self.config_record()) if not is_safe_key(k)]
                if diff and all(any(fnmatch.fnmatchcase(k, p) for p in RERUN_KEYS) for k in diff):
                    self.run.log.info(f"{self.folder}: {', '.join(diff)} changed since it finished: the search "
                                      f"runs again on the finished {self.strategy.supernet_phase()} (the old folder is "
                                      "kept)")
                    self.restart = True
                    return None
        return super().finished()

    def work(self, ctx: PhaseContext) -> SearchResult:
        conf, section = ctx.conf, self.strategy.section
        space = space_of(conf)
        data = load_data(ctx, conf.loader)
        supernet = inherited_supernet(space, ctx, data.info, self.strategy.supernet_phase(), self.strategy)
        for p in supernet.weights():
            p.requires_grad_(False)  # only the architecture trains
        genome = space.genome(data.info)
        costs = space_costs(conf.cost, space, genome, data.info, ctx.seed)
        limits = Limits.from_conf(conf.cost)
        why = unsearchable_label(supernet.specs)
        if why is not None:
            raise SpaceError(f"{space.key}: {why}")
        limits.check_reachable(costs)
        core = SearchCore(supernet, costs, limits, section.tau)
        names = limits.reported(conf.cost.pareto)
        if conf.cost.penalty.weight > 0 and conf.cost.penalty.model not in names:
            names.append(conf.cost.penalty.model)
        report = {"space": space.description(), **costs.report(names)}
        ctx.write(lambda: atomic.write_json(ctx.dir / LATENCY_STATS_FILE, report))  # held until the phase commits
        validation = first_batches(data.loader("train", training=True), section.bn_validation_tune_batches)
        trainer = EnotSearchTrainer(
            search_trainer_conf(conf, section), core, ctx, section=section,
            bn_stream=data.loader("train", training=True), validation_batches=validation, report=names,
            seed=ctx.seed, checkpointer=self.checkpointer(ctx, space.supernet_fingerprint(supernet)),
            hooks=[BuildPenalty(lambda: CostPenalty.from_conf(conf.cost, costs))])
        trainer.register_state("cost_tables", CostTables(costs))
        ctx.log.info(f"search: {space.describe_supernet(supernet)}; {section.optimizer} lr {section.lr}, "
                     f"{section.epochs} epoch(s) over {len(data.parts['val'])} val images; BN tuning "
                     f"{section.bn_tune_batches} / {section.bn_validation_tune_batches} batches; limits "
                     f"{limits.describe() or 'none'}; penalty {conf.cost.penalty.model} x {conf.cost.penalty.weight}")
        history = trainer.fit(data.loader("val", training=True), data.loader("val", training=False))
        arch = trainer.val_arch if trainer.val_arch is not None else core.best_arch()
        last = history.last or {}
        metrics = {
            "search_time": sum(r.get("epoch_time", 0.0) for r in history.records),
            "epochs": len(history.records),
            "best_val_top1": history.best_value,
            "final_val_top1": last.get("val_top1"),
            "best_costs": {n: costs.model(n).cost(arch) for n in names},
            "expected_costs": {k[9:]: v for k, v in last.items() if k.startswith("expected_")},
            "limits": limits.describe(),
            "penalty": {"model": conf.cost.penalty.model, "weight": conf.cost.penalty.weight},
            "best_within_limits": [{"limit": limits.setting(m), "bound": b, "cost_model": m,
                                    "cost": costs.model(m).cost(arch)} for m, b in limits.bounds.items()],
            "supernet_fingerprint": space.supernet_fingerprint(supernet),
        }
        return self.save_result(ctx, arch, metrics, data.info)

    def report(self, summary: dict[str, Any]) -> list[str]:
        return super().report(summary) + [
            f"  within {row['limit']} {row['bound']:,.10g}: {row['cost_model']} {row['cost']:,.10g} "
            f"{cost_model(row['cost_model']).unit}" for row in summary.get("best_within_limits") or ()]


class EnotTune(Evaluater):
    """`tune` of enot: the eval phase under ENOT's name and folder (`tune/`), reading `nas.eval`."""

    name = "tune"

    def _no_architecture(self) -> ConfigError:
        return ConfigError(f"tune fine-tunes the architecture of a finished search, and {self.run.exp_dir / 'search'} "
                           "holds none: run the pretrain and search stages first (leave out --stages, or "
                           "--stages pretrain,search,tune), or set nas.eval.final_desc to an architecture")


@register_algorithm
class Enot(Strategy):
    name = "enot"
    config_class = EnotConf
    find_unused_parameters = True
    phases = (Pretrain, EnotSearch, EnotTune)

    def arch_optimizer(self) -> str:
        return "uniform_paths"  # the pretrain's; the search runs its own rule (EnotSearch)

    def supports(self, space: Space) -> Optional[str]:
        if isinstance(space, CellSpace):
            return "the ENOT search draws one candidate per label of a space over a module; set nas.search.space"
        return None

    def check(self) -> None:
        super().check()
        s = self.section
        if s.optimizer not in OPTIMIZERS:
            raise ConfigError(f"nas.search.enot.optimizer: {s.optimizer!r}; expected one of {', '.join(OPTIMIZERS)}")
        if not s.lr > 0 or not s.tau > 0 or s.epochs < 1:
            raise ConfigError(f"nas.search.enot: lr ({s.lr}) and tau ({s.tau}) must be positive and epochs "
                              f"({s.epochs}) at least 1")
        if s.bn_tune_batches < 0 or s.bn_validation_tune_batches < 0:
            raise ConfigError(f"nas.search.enot: bn_tune_batches ({s.bn_tune_batches}) and bn_validation_tune_batches "
                              f"({s.bn_validation_tune_batches}) must be at least 0 (0: off)")
