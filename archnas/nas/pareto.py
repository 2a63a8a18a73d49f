"""The accuracy / cost trade-off of the candidates a subnet search scored.

A candidate is on the Pareto front when no other is at least as accurate and at most as costly
and strictly better in one of the two. `pareto.csv` lists every scored candidate with its costs
(one column per cost model the search reports) and whether it is on the front; `pareto.png`
plots accuracy against the chosen cost (`nas.search.cost.pareto`: any registered cost model)
with the front highlighted (drawn by `archnas.plots`; the plot stage draws it again from the CSV). Both are written atomically into the search folder.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any, Sequence

from archnas.latency import cost_model
from archnas.plots import Picture, pareto_figure, write_pictures
from archnas.utils import atomic


def pareto_front(points: Sequence[tuple[float, float]]) -> list[bool]:
    """For (cost, accuracy) points: which are on the front (lower cost and higher accuracy are
    better; of equal points, the first is kept)."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1], i))
    on = [False] * len(points)
    best = float("-inf")
    for i in order:
        if points[i][1] > best:
            on[i] = True
            best = points[i][1]
    return on


def write_pareto(folder: Path, candidates: Sequence[dict[str, Any]], cost: str, cost_names: Sequence[str],
                 limits: dict[str, float] | None = None, scored_as: str = "inherited") -> list[bool]:
    """`pareto.csv` and `pareto.png` of `candidates` (dicts with `arch`, `accuracy`,
    `generation` and one entry per cost model in `cost_names`, the columns in that order);
    returns which are on the front of `cost`. `scored_as` says what the accuracy is (the plot's
    axis): `inherited` weights of a supernet, or `stand-alone` trained trials."""
    front = pareto_front([(c[cost], c["accuracy"]) for c in candidates])
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["index", "generation", "accuracy", *cost_names, "on_front", "arch"])
    for i, (c, on) in enumerate(zip(candidates, front)):
        writer.writerow([i, c["generation"], f"{c['accuracy']:.6f}", *[c[n] for n in cost_names], int(on),
                         json.dumps(c["arch"], sort_keys=False, default=str)])
    atomic.write_text(folder / "pareto.csv", buffer.getvalue())
    write_pictures([pareto_picture([c[cost] for c in candidates], [c["accuracy"] for c in candidates], front, cost,
                                   limits or {}, scored_as)], folder)
    return front


def pareto_picture(costs: Sequence[float], accuracies: Sequence[float], front: Sequence[bool], cost: str,
                   limits: dict[str, float], scored_as: str = "inherited") -> Picture:
    """`pareto.png`: accuracy against `cost` with the front and the cost's limit, as the search and
    the plot stage both draw it; `scored_as` names the accuracy (`inherited` weights or `stand-alone`
    trials)."""
    return Picture("pareto", pareto_figure(costs, accuracies, front, f"{cost} ({cost_model(cost).unit})",
                                           limits.get(cost), accuracy_label=f"{scored_as} val top-1 (%)"))
