"""The trust check of zero-cost proxies: does a proxy rank the anchors (`archnas.nas.anchors`:
random architectures trained briefly stand-alone) as their training does, and better than counting
their parameters or multiply-adds?

Proxies are known to be fragile: on several benchmarks none reliably beats the parameter count
(Ning et al., "Evaluating Efficient Performance Estimators of Neural Architectures", NeurIPS
2021; Krishnakumar et al., "NAS-Bench-Suite-Zero", NeurIPS 2022). So before a proxy ranks a
space, every compared proxy scores the anchors and is rank-correlated with their stand-alone val
top-1: Kendall's tau-b and Spearman's rho with their p-values (scipy.stats, as the ranking check).
With `fallback: auto` the proxy of the highest tau ranks the space, unless no proxy beats the
better baseline (`params`, `macs`), which then ranks it; with `fallback: none` the configured
proxy ranks it whatever the check says (a warning says when a baseline beat it).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Optional, Sequence

from archnas.nas.anchors import Anchors
from archnas.nas.ranking import rank_correlations
from archnas.nas.zero_cost import BASELINES, plain


def _tau(entry: dict[str, Any]) -> float:
    tau = entry["kendall_tau"]
    return -math.inf if tau is None else tau


def trust_check(anchors: Anchors, names: Sequence[str], score: Callable[[str, Any], float], fallback: str,
                configured: str) -> dict[str, Any]:
    """The report (`zero_cost.json`): every proxy of `names` (which hold the baselines) scored on
    every anchor (`score(name, row)`), its correlations with the anchors' accuracy, and the proxy
    chosen to rank the space with why."""
    scores = {name: [score(name, row) for row in anchors.rows] for name in names}
    correlations = {}
    for name, values in scores.items():
        finite = [v if not math.isnan(v) else -math.inf for v in values]  # NaN ranks last, as -inf does
        correlations[name] = rank_correlations(anchors.val_top1, finite)
    baselines = [n for n in names if n in BASELINES]
    proxies = [n for n in names if n not in BASELINES]
    best_baseline = max(baselines, key=lambda n: _tau(correlations[n]))
    best_proxy: Optional[str] = max(proxies, key=lambda n: _tau(correlations[n])) if proxies else None
    beats = best_proxy is not None and _tau(correlations[best_proxy]) > _tau(correlations[best_baseline])
    if fallback == "auto":
        chosen = best_proxy if beats else best_baseline
        reason = (f"{best_proxy} has the highest Kendall tau and beats the baselines" if beats else
                  f"no proxy beats {best_baseline}'s Kendall tau: falling back to it")
    else:
        chosen = configured
        reason = "fallback: none ranks with the configured proxy"
    return {
        "n_anchors": len(anchors.rows),
        "anchor_epochs": anchors.epochs,
        "anchor_train_time": anchors.train_time,
        "fallback": fallback,
        "chosen": chosen,
        "reason": reason,
        "best_proxy": best_proxy,
        "best_baseline": best_baseline,
        "proxy_beats_baselines": beats,
        "proxies": correlations,
        "anchors": [{"arch": a, "standalone_val_top1": v, "scores": {n: plain(scores[n][i]) for n in names}}
                    for i, (a, v) in enumerate(zip(anchors.archs, anchors.val_top1))],
    }


def trust_lines(report: dict[str, Any]) -> list[str]:
    """The log's table of the check: one line per proxy, then the choice."""
    def number(value: Optional[float]) -> str:
        return "  n/a" if value is None else f"{value:+.3f}"

    lines = [f"trust check over {report['n_anchors']} anchors trained {report['anchor_epochs']} epochs each "
             "(Kendall tau, Spearman rho against their stand-alone val top-1):"]
    for name, c in report["proxies"].items():
        lines.append(f"  {name:>10}: tau {number(c['kendall_tau'])}, rho {number(c['spearman_rho'])}")
    lines.append(f"zero-cost proxy: {report['chosen']} ({report['reason']})")
    return lines
