"""Zero-cost NAS: rank a space's architectures by a zero-cost proxy at initialization
(`archnas.nas.zero_cost`: params, macs, synflow, snip, grad_norm, naswot, jacob_cov, a plugin's),
after a trust check says which proxy to believe, then retrain the best.

    python scripts/main.py --config confs/zero_cost_nb201.yaml

Stages: `search`, then `eval` (the best architecture retrained from scratch). The search:
1. trust check (`archnas.nas.trust_check`): `trust.anchors` random architectures (at least 5)
   trained `trust.epochs` epochs stand-alone as trials (`archnas.nas.anchors`, into
   `search/anchor_<nnn>/`), every proxy of `proxies` scored on them, Kendall's tau and Spearman's
   rho against their val top-1; with `fallback: auto` the best proxy ranks the space, or
   `params` / `macs` when no proxy beats them (`fallback: none`: `proxy` does, whatever the check
   says). Report: `search/zero_cost.json`, the log, the search's summary.
2. selection (`archnas.nas.selection`): the sampler `strategy` (random, grid, evolution, ... with
   its settings under its name, as spos's) proposes genomes; each one's network is built with an
   initialization seeded by (common.seed, genome), scored by the chosen proxy on the same
   `batches` unaugmented train batches of `batch_size` images, and dropped, so memory holds one
   network whatever the number scored (a grid over NAS-Bench-201's 15,625). A checkpoint after
   every batch of the sampler; a rerun ends where an uninterrupted one does.
The best-scored architecture (ties: the first scored) is `search/arch.yaml`, retrained by the eval.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, List, Optional

import torch

from archnas.context import PhaseContext
from archnas.errors import ConfigError
from archnas.nas.anchors import check_anchor_count, train_anchors
from archnas.nas.evaluater import Evaluater
from archnas.nas.registry import register_algorithm
from archnas.nas.samplers import (
    EvolutionSettings,
    Genomes,
    GridSettings,
    RandomSettings,
    Row,
    TpeSettings,
    build_sampler,
    sampler_class,
)
from archnas.nas.searcher import SearchPhase, SearchResult, load_data
from archnas.nas.selection import select
from archnas.nas.spaces import CellSpace, Space, space_of
from archnas.nas.strategy import Strategy
from archnas.nas.trust_check import trust_check, trust_lines
from archnas.nas.zero_cost import BASELINES, ProxyInputs, ProxyScores, arch_seed, proxy, proxy_names, score_network
from archnas.utils import atomic
from archnas.utils.seeding import derive_seed

REPORT_FILE = "zero_cost.json"
FALLBACKS = ("auto", "none")


@dataclass
class TrustConf:
    anchors: int = 10  # random architectures trained stand-alone (at least 5; 0: no check, with fallback none)
    epochs: int = 3  # each anchor's epochs of nas.search.trainer


@dataclass
class ZeroCostConf:
    """`nas.search.zero_cost`."""

    # auto: the trust check's best proxy ranks the space, params or macs when none beats them;
    # none: `proxy` ranks it (the check, when anchors > 0, only reports)
    fallback: str = "auto"
    proxy: str = "synflow"  # with fallback none: the proxy that ranks (any registered one)
    proxies: List[str] = field(default_factory=list)  # compared by the trust check; empty: every registered proxy
    trust: TrustConf = field(default_factory=TrustConf)
    batches: int = 1  # train batches (unaugmented, the same for every network) each proxy sees
    batch_size: int = 64  # images per batch
    strategy: str = "random"  # the sampler: random | grid | evolution | optuna_tpe (archnas.nas.samplers)
    random: RandomSettings = field(default_factory=RandomSettings)
    grid: GridSettings = field(default_factory=lambda: GridSettings(max_archs=20000))  # NB201's 15,625 fit
    evolution: EvolutionSettings = field(default_factory=EvolutionSettings)
    optuna_tpe: TpeSettings = field(default_factory=TpeSettings)


def compared(section: ZeroCostConf) -> list[str]:
    """The proxies the trust check compares: the configured (or every registered), baselines included."""
    names = list(section.proxies) or list(proxy_names())
    return names + [b for b in BASELINES if b not in names]


def proxy_batches(data: Any, batches: int, batch_size: int) -> list:
    """`batches` batches of `batch_size` unaugmented train images, in the split's order."""
    images, labels, have = [], [], 0
    for x, y in data.loader("train", training=False):
        images.append(x)
        labels.append(y)
        have += len(y)
        if have >= batches * batch_size:
            break
    x, y = torch.cat(images), torch.cat(labels)
    if len(y) < batches * batch_size:
        raise ConfigError(f"nas.search.zero_cost: {batches} batches of {batch_size} images need "
                          f"{batches * batch_size} train images; the search split has {len(y)}")
    return [(x[i * batch_size:(i + 1) * batch_size], y[i * batch_size:(i + 1) * batch_size]) for i in range(batches)]


class ZeroCostSearch(SearchPhase):
    """`search` of zero_cost: the trust check, then the space ranked by the chosen proxy."""

    def work(self, ctx: PhaseContext) -> SearchResult:
        conf, section = ctx.conf, self.strategy.section
        ctx.commit()  # the anchors' folders are inside this phase's: it is written (or moved aside) first
        space = space_of(conf)
        data = load_data(ctx, conf.loader)
        genome = space.genome(data.info)
        sampler_class(section.strategy).check_space(getattr(section, section.strategy, None), list(genome.counts),
                                                    f"nas.search.zero_cost.{section.strategy}")
        inputs = ProxyInputs(proxy_batches(data, section.batches, section.batch_size),
                             [data.info.channels, *data.info.image_size])

        def network_of(row: Row) -> torch.nn.Module:
            return space.network(genome.decode(row), data.info)

        chosen, report = section.proxy, None
        if section.trust.anchors:
            check_anchor_count(section.trust.anchors, "nas.search.zero_cost.trust.anchors", genome.specs)
            anchors = train_anchors(ctx, self.folder, genome, section.trust.anchors, section.trust.epochs,
                                    derive_seed(ctx.run.conf.common.seed, "zero_cost", "anchors"), self.force,
                                    lambda i, r: ctx.log.info(f"anchor {i + 1}/{section.trust.anchors}: stand-alone "
                                                              f"val top-1 {r['val_top1']:.2%}"))
            report = trust_check(anchors, compared(section),
                                 lambda name, row: score_network(name, lambda: network_of(row), inputs, ctx.device,
                                                                 arch_seed(ctx.seed, row)),
                                 section.fallback, section.proxy)
            chosen = report["chosen"]
            for line in trust_lines(report):
                ctx.log.info(line)
            if section.fallback == "none" and not report["proxy_beats_baselines"]:
                ctx.log.warning(f"the trust check found no proxy beating {report['best_baseline']}; {chosen} ranks "
                                "the space anyway (fallback: none)")
            if ctx.is_main:
                atomic.write_json(ctx.dir / REPORT_FILE, report)
        search = build_sampler(section.strategy, getattr(section, section.strategy, None),
                               Genomes(genome.counts, lambda row: True), derive_seed(ctx.seed, self.name, "sampler"))
        checkpointer = self.checkpointer(ctx, space.fingerprint())
        checkpointer.register("search", search)
        resumed = checkpointer.resume() if ctx.resume else None
        if resumed is not None:
            ctx.log.info(f"resumed the search from {resumed.path} after {len(search.scored)} architectures")
        scores = ProxyScores(chosen, network_of, inputs, ctx.device, ctx.seed)

        def evaluate(rows: list[Row], start: int) -> list[float]:
            values = scores(rows, start)
            ctx.log.info(f"{start + len(rows)} architectures scored by {chosen} (batch {search.generation + 1}/"
                         f"{search.batches})")
            return values

        select(search, evaluate, checkpointer, None, probe=ctx.probe)
        if not search.scored:
            raise ConfigError("nas.search.zero_cost: the sampler proposed no architecture")
        best = search.best(1)[0]
        arch = genome.decode(best.row)
        ctx.log.info(f"best of {len(search.scored)} architectures by {chosen}: score {best.score:.6g}")
        metrics = {
            "proxy": chosen,
            "best_score": best.score,
            "candidates_scored": len(search.scored),
            "scoring_time": search.seconds,
            "search_time": search.seconds + (0.0 if report is None else report["anchor_train_time"]),
            "trust": None if report is None else {
                "n_anchors": report["n_anchors"], "best_proxy": report["best_proxy"],
                "best_baseline": report["best_baseline"], "proxy_beats_baselines": report["proxy_beats_baselines"],
                "kendall_tau": {n: c["kendall_tau"] for n, c in report["proxies"].items()},
                "spearman_rho": {n: c["spearman_rho"] for n, c in report["proxies"].items()}},
        }
        return self.save_result(ctx, arch, metrics, data.info)

    def report(self, summary: dict[str, Any]) -> list[str]:
        trust = summary.get("trust")
        tau = "" if not trust else (f" (Kendall tau {_number(trust['kendall_tau'].get(summary['proxy']))} over "
                                    f"{trust['n_anchors']} anchors)")
        return super().report(summary) + [f"  ranked {summary.get('candidates_scored')} architectures by "
                                          f"{summary.get('proxy')}{tau}"]


def _number(value: Optional[float]) -> str:
    return "undefined" if value is None else f"{value:.3f}"


@register_algorithm
class ZeroCost(Strategy):
    name = "zero_cost"
    config_class = ZeroCostConf
    phases = (ZeroCostSearch, Evaluater)

    def supports(self, space: Space) -> Optional[str]:
        if isinstance(space, CellSpace):
            return ("its trust check trains anchors of a space over a module (their architectures are recorded as "
                    "{label: choice}); search nb201, mobilenet or your own space (nas.search.space)")
        return None

    def check(self) -> None:
        super().check()
        s = self.section
        key = "nas.search.zero_cost"
        if s.fallback not in FALLBACKS:
            raise ConfigError(f"{key}.fallback: {s.fallback!r}; expected one of {', '.join(FALLBACKS)}")
        proxy(s.proxy, f"{key}.proxy")
        for name in s.proxies:
            proxy(name, f"{key}.proxies")
        if s.trust.anchors or s.fallback == "auto":
            check_anchor_count(s.trust.anchors, f"{key}.trust.anchors")
        if s.trust.epochs < 1:
            raise ConfigError(f"{key}.trust.epochs: {s.trust.epochs}; each anchor trains at least 1 epoch")
        if s.batches < 1 or s.batch_size < 1:
            raise ConfigError(f"{key}: batches ({s.batches}) and batch_size ({s.batch_size}) must be at least 1")
        cls = sampler_class(s.strategy, f"{key}.strategy")
        if cls.multi_objective:
            raise ConfigError(f"{key}.strategy: {s.strategy} trades accuracy against a cost; a proxy is one score: "
                              "use random, grid or evolution")
        settings = getattr(s, s.strategy, None) if s.strategy in {f.name for f in dataclasses.fields(s)} else None
        cls.check_settings(settings, f"{key}.{s.strategy}")

