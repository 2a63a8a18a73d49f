"""The live ranking monitor of a weight-sharing search (`nas.search.ranking_monitor: {anchors: k,
every: n}`): does the supernet rank architectures as training them stand-alone does, while it
trains?

A weight-sharing supernet's ranking is often no better than random (Yu et al., ICLR 2020; reruns
on NAS-Bench-201 measure Kendall's tau around 0.5), and the ranking check (`archnas.nas.ranking`)
says so only after the whole run. The monitor says it during the run:
- before the supernet trains, `anchors` random architectures of the space are trained
  `epochs` epochs stand-alone, once (the trust check's anchors, `archnas.nas.anchors`, in the
  experiment's `ranking_monitor/anchor_<nnn>/`; a rerun reads them back). Cost: k stand-alone
  trainings of `epochs` epochs before the first supernet step (for confs/spos_nb201.yaml, 6
  anchors of 3 epochs take about as long as 18 epochs of one NB201 network: ~40 s on 2 cores);
- every `every` epochs, at the epoch's last step, each anchor is scored on the supernet's current
  weights (`archnas.nas.subnets.SubnetScorer`: its path run alone, BatchNorm statistics
  re-estimated on `bn_batches` train batches, val top-1 on the search val split), and Kendall's
  tau and Spearman's rho against the stand-alone accuracies, and Kendall's tau against the
  previous check (stability), go into the epoch's record (`ranking_tau`, `ranking_rho`,
  `ranking_tau_previous`: metrics.jsonl and TensorBoard scalars) and the log. Cost: k subnet
  evaluations per check;
- a warning when tau stays below `warn_below` for `patience` checks in a row;
- at the end of the training, `ranking_monitor.json` in the phase's folder holds every check.
Scoring leaves the training as it was: the supernet's buffers (BatchNorm statistics), its
weighting, its mode and the RNG states are restored after each check, so a run with the monitor
trains the weights a run without it trains. The checks so far are checkpointed with the trainer, so
a resumed run goes on with them. One process (not under torchrun), spaces over a module.
"""

from __future__ import annotations

from typing import Any, Optional

import torch

from archnas.context import PhaseContext
from archnas.data import DataBundle
from archnas.errors import ConfigError
from archnas.nas.anchors import Anchors, check_anchor_count, train_anchors
from archnas.nas.ranking import rank_correlations
from archnas.nas.spaces import Space
from archnas.nas.subnets import SubnetScorer, subnet_scorer
from archnas.space.store import Searchable
from archnas.training.checkpoint import capture_rng, restore_rng
from archnas.training.hooks import HookBase
from archnas.utils import atomic
from archnas.utils.seeding import derive_seed

FOLDER = "ranking_monitor"  # of the anchors, in the experiment folder
REPORT_FILE = "ranking_monitor.json"  # in the phase folder


def check_ranking_monitor(conf: Any, space: Space, trains_supernet: bool, algo: str) -> None:
    """Refuse a monitor that cannot run (the config's `nas.search`), before anything runs."""
    m = conf.ranking_monitor
    key = "nas.search.ranking_monitor"
    if not m.anchors:
        return
    if not trains_supernet:
        raise ConfigError(f"{key}.anchors: {algo} trains no weight-sharing supernet to monitor; leave it 0")
    if space.kind != "modules":
        raise ConfigError(f"{key}.anchors: the monitor's anchors are architectures of a space over a module "
                          "(nas.search.space); leave it 0 for DARTS cells")
    check_anchor_count(m.anchors, f"{key}.anchors")
    if m.every < 1 or m.epochs < 1 or m.patience < 1:
        raise ConfigError(f"{key}: every ({m.every}), epochs ({m.epochs}) and patience ({m.patience}) must be at least 1")
    if m.bn_batches < 0 or m.score_batches < 0:
        raise ConfigError(f"{key}: bn_batches ({m.bn_batches}) and score_batches ({m.score_batches}) must be at least 0")


class RankingMonitor(HookBase):
    """The trainer hook (see the module docstring); its checks are checkpoint state."""

    def __init__(self, ctx: PhaseContext, space: Space, info: Any, supernet: Searchable, scorer: SubnetScorer,
                 force: bool):
        self.ctx, self.space, self.info, self.supernet, self.scorer, self.force = ctx, space, info, supernet, scorer, force
        self.conf = ctx.conf.ranking_monitor
        self.anchors: Optional[Anchors] = None
        self.checks: list[dict[str, Any]] = []

    def before_fit(self) -> None:
        """Train the anchors (or read them back), leaving the training's RNG states as they were."""
        t = self.trainer
        rng = capture_rng(t.device)
        try:
            genome = self.space.genome(self.info)
            check_anchor_count(self.conf.anchors, "nas.search.ranking_monitor.anchors", genome.specs)
            self.anchors = train_anchors(self.ctx, FOLDER, genome, self.conf.anchors, self.conf.epochs,
                                         derive_seed(self.ctx.run.conf.common.seed, FOLDER, "anchors"), self.force)
        finally:
            restore_rng(rng, t.device)
        t.log.info(f"ranking monitor: {len(self.anchors.rows)} anchors trained {self.conf.epochs} epochs stand-alone, "
                   f"val top-1 {', '.join(f'{v:.2%}' for v in self.anchors.val_top1)}; their inherited ranking is "
                   f"checked every {self.conf.every} epochs")

    def after_step(self) -> None:
        t = self.trainer
        if t.epoch_step != t.steps_per_epoch or (t.epoch + 1) % self.conf.every:
            return
        scores = self.score()
        standalone = rank_correlations(self.anchors.val_top1, scores)
        previous = rank_correlations(self.checks[-1]["inherited_val_top1"], scores)["kendall_tau"] \
            if self.checks else None
        check = {"epoch": t.epoch + 1, "kendall_tau": standalone["kendall_tau"],
                 "spearman_rho": standalone["spearman_rho"], "kendall_tau_previous": previous,
                 "inherited_val_top1": scores}
        self.checks.append(check)
        t.epoch_info.update({k: v for k, v in (("ranking_tau", check["kendall_tau"]),
                                               ("ranking_rho", check["spearman_rho"]),
                                               ("ranking_tau_previous", previous)) if v is not None})
        t.log.info(f"ranking monitor, epoch {t.epoch + 1}: Kendall's tau {_fmt(check['kendall_tau'])} against the "
                   f"{len(scores)} anchors' stand-alone ranking (Spearman's rho {_fmt(check['spearman_rho'])}), "
                   f"{_fmt(previous)} against the previous check")
        self.warn_if_low(t)

    def warn_if_low(self, t: Any) -> None:
        recent = self.checks[-self.conf.patience:]
        low = len(recent) == self.conf.patience and all(
            c["kendall_tau"] is None or c["kendall_tau"] < self.conf.warn_below for c in recent)
        if low:
            t.log.warning(f"ranking monitor: Kendall's tau has stayed below {self.conf.warn_below} for "
                          f"{self.conf.patience} checks (the last {_fmt(recent[-1]['kendall_tau'])}): the supernet "
                          "ranks the anchors no better than that; its choice of architecture may mean little "
                          "(train longer, or check the space and the sampling)")

    def score(self) -> list[float]:
        """Each anchor's inherited val top-1; the supernet's buffers, weighting, mode and the RNG
        states are restored afterwards."""
        model, device = self.supernet, self.trainer.device
        buffers = {name: b.detach().clone() for name, b in model.named_buffers()}
        weighting, training = model.arch.weighting, model.training
        rng = capture_rng(device)
        try:
            return [self.scorer.score(arch) for arch in self.anchors.archs]
        finally:
            with torch.no_grad():
                for name, b in model.named_buffers():
                    b.copy_(buffers[name])
            model.arch.weighting = weighting
            model.train(training)
            restore_rng(rng, device)

    def after_fit(self) -> None:
        if self.ctx.is_main and self.anchors is not None:
            atomic.write_json(self.ctx.dir / REPORT_FILE, {
                "anchors": self.anchors.to_dict(), "every": self.conf.every, "warn_below": self.conf.warn_below,
                "checks": self.checks})

    def state_dict(self) -> dict[str, Any]:
        return {"checks": self.checks}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.checks = list(state["checks"])


def attach_ranking_monitor(trainer: Any, ctx: PhaseContext, space: Space, data: DataBundle, force: bool) -> None:
    """Add the monitor to a supernet's trainer when `nas.search.ranking_monitor.anchors` is set."""
    conf = ctx.conf.ranking_monitor
    if not conf.anchors:
        return
    if ctx.world_size > 1:
        raise ConfigError("nas.search.ranking_monitor.anchors: the monitor runs in one process, not under torchrun "
                          "(each rank would train the anchors); leave it 0 there")
    supernet = trainer.base_model
    scorer = subnet_scorer(space, supernet, data, ctx, conf.bn_batches, conf.score_batches)
    monitor = RankingMonitor(ctx, space, data.info, supernet, scorer, force)
    trainer.register_hooks([monitor])
    trainer.register_state("ranking_monitor", monitor)


def _fmt(value: Optional[float]) -> str:
    return "undefined" if value is None else f"{value:+.3f}"
