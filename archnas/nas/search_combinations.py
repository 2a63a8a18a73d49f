"""SearchCombinations: one search per macro (n_reductions, n_cells, n_nodes); keep the best.

Each combination is a complete search phase of its own under `search/combos/r<R>_c<C>_n<N>/`,
with its own checkpoint and completion marker, so a sweep that is interrupted resumes inside the
combination it stopped in and never redoes a finished one. The sweep is a selection of one batch
(`archnas.nas.selection`): the grid sampler over the three lists (in their order, the number of
nodes varying fastest), each combination scored stand-alone as a trial (`archnas.trials`): one
after another in this process, or as Ray tasks when `common.ray.enabled`.
After each combination the table of results so far is written to `search/combinations.json` and
`combinations.tsv`. The combination with the best validation accuracy of its supernet becomes the
search result (`search/final_model_desc.yaml`).
"""

from __future__ import annotations

import copy
import csv
import io
import itertools
import math
from dataclasses import replace
from typing import Any, Optional

from archnas.config.schema import SearchConf
from archnas.context import PhaseContext, RunContext
from archnas.descs.desc_io import load_desc
from archnas.errors import ConfigError
from archnas.nas.phase import Experiment
from archnas.nas.registry import algorithm_class
from archnas.nas.samplers import Grid, Row
from archnas.nas.searcher import Searcher, SearchResult
from archnas.nas.selection import Standalone, select
from archnas.trials import Trial
from archnas.utils import atomic

COLUMNS = ["n_reductions", "n_cells", "n_nodes", "best_val_top1", "search_time", "genotype", "final_desc"]


def combination_axes(conf: SearchConf) -> list[list[int]]:
    """The values swept of n_reductions, n_cells and n_nodes (the macro's own where none is given)."""
    c, md = conf.combinations, conf.model_desc
    axes = [list(c.n_reductions or [md.n_reductions]), list(c.n_cells or [md.n_cells]), list(c.n_nodes or [md.n_nodes])]
    bad = [g for g in itertools.product(*axes) if g[0] < 0 or g[1] < 1 or g[2] < 1]
    if bad:
        raise ConfigError(f"nas.search.combinations: every n_cells and n_nodes must be >= 1 and n_reductions >= 0, got {bad}")
    return axes


def search_combinations(phase: Searcher, ctx: PhaseContext) -> SearchResult:
    """The search phase `phase` as one search per combination, each a trial, then the best."""
    axes = combination_axes(ctx.conf)
    grid = Grid([len(a) for a in axes], per_generation=math.prod(len(a) for a in axes), allows=lambda row: True)
    ctx.commit()  # the combinations' folders are inside this phase's: it is written (or moved aside) first
    finished: dict[int, dict[str, Any]] = {}

    def macro(row: Row) -> tuple[int, int, int]:
        reductions, cells, nodes = (axis[k] for axis, k in zip(axes, row))
        return reductions, cells, nodes

    def record(i: int, row: Row, result: SearchResult) -> None:
        reductions, cells, nodes = macro(row)
        ctx.log.info(f"combination {i + 1}/{grid.size} ({reductions} reductions, {cells} cells, {nodes} nodes) "
                     f"finished")
        finished[i] = {
            "n_reductions": reductions, "n_cells": cells, "n_nodes": nodes,
            "best_val_top1": result.metrics.get("best_val_top1"), "search_time": result.metrics.get("search_time"),
            "genotype": result.genotype or "",
            "final_desc": str(result.final_desc_path.resolve().relative_to(ctx.dir.resolve())),
        }
        _write_table(ctx, [finished[k] for k in sorted(finished)])

    def trial(i: int, row: Row) -> Trial:
        reductions, cells, nodes = macro(row)
        name = f"r{reductions}_c{cells}_n{nodes}"
        return Trial(name, combination_run(ctx.run, reductions, cells, nodes), run_combination,
                     (f"{phase.folder}/combos/{name}", phase.force), finished_combination)

    def score(result: SearchResult) -> float:
        top1 = result.metrics.get("best_val_top1")
        return -1.0 if top1 is None else top1

    select(grid, Standalone(trial, score, ctx.common.ray, record), None, None, probe=ctx.probe)
    rows = [finished[i] for i in range(grid.size)]
    best = max(rows, key=lambda r: -1.0 if r["best_val_top1"] is None else r["best_val_top1"])
    ctx.log.info(f"best combination: {best['n_reductions']} reductions, {best['n_cells']} cells, "
                 f"{best['n_nodes']} nodes (val top-1 {best['best_val_top1']:.2%})")
    metrics = {"best_val_top1": best["best_val_top1"], "search_time": sum(r["search_time"] or 0.0 for r in rows),
               "combinations": rows, "best_combination": {k: best[k] for k in ("n_reductions", "n_cells", "n_nodes")}}
    return phase.save_result(ctx, load_desc(ctx.dir / best["final_desc"]), metrics)


def combination_run(run: RunContext, reductions: int, cells: int, nodes: int) -> RunContext:
    """The run with this combination's config: its checkpoints and completion marker are
    checked against exactly that, so the other combinations do not invalidate it."""
    conf = copy.deepcopy(run.conf)
    model_desc = conf.nas.search.model_desc
    model_desc.n_reductions, model_desc.n_cells, model_desc.n_nodes = reductions, cells, nodes
    conf.nas.search.combinations = type(conf.nas.search.combinations)()  # the sweep itself is not part of it
    return replace(run, conf=conf)


def _write_table(ctx: PhaseContext, rows: list[dict[str, Any]]) -> None:
    if not ctx.is_main:
        return
    atomic.write_json(ctx.dir / "combinations.json", rows)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, delimiter="\t")
    writer.writeheader()
    writer.writerows(rows)
    atomic.write_text(ctx.dir / "combinations.tsv", buf.getvalue())


def _searcher(run: RunContext, folder: str, force: bool) -> Searcher:
    return Searcher(Experiment(run, algorithm_class(run.conf.nas.algo)(run.conf), force), folder)


def run_combination(run: RunContext, folder: str, force: bool) -> SearchResult:
    """One combination as a trial (`archnas.trials`): a complete search phase in its own folder,
    skipped when finished, resumed when interrupted; built from the run alone, so the same call
    runs in this process or in a Ray worker."""
    return _searcher(run, folder, force).execute()


def finished_combination(run: RunContext, folder: str, force: bool) -> Optional[SearchResult]:
    """The combination's search result if it finished under this config, else None."""
    return _searcher(run, folder, force).load_finished()
