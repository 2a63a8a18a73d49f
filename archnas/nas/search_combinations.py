"""SearchCombinations: one search per macro (n_reductions, n_cells, n_nodes); keep the best.

Each combination is a complete search phase of its own under `search/combos/r<R>_c<C>_n<N>/`,
with its own checkpoint and completion marker, so a sweep that is interrupted resumes inside the
combination it stopped in and never redoes a finished one. After each combination the table of
results so far is written to `search/combinations.json` and `combinations.tsv`. The combination
with the best validation accuracy of its supernet becomes the search result
(`search/final_model_desc.yaml`).
"""

from __future__ import annotations

import copy
import csv
import io
import itertools
from dataclasses import replace
from typing import Any

from archnas.config.schema import SearchConf
from archnas.context import PhaseContext
from archnas.descs.desc_io import load_desc
from archnas.errors import ConfigError
from archnas.nas.searcher import RESULT_FILE, Searcher, SearchResult, check_completed
from archnas.utils import atomic

COLUMNS = ["n_reductions", "n_cells", "n_nodes", "best_val_top1", "search_time", "genotype", "final_desc"]


class SearchCombinations:
    def __init__(self, searcher: Searcher):
        self.searcher = searcher

    def combinations(self, conf: SearchConf) -> list[tuple[int, int, int]]:
        c, md = conf.combinations, conf.model_desc
        grid = list(itertools.product(c.n_reductions or [md.n_reductions], c.n_cells or [md.n_cells], c.n_nodes or [md.n_nodes]))
        bad = [g for g in grid if g[0] < 0 or g[1] < 1 or g[2] < 1]
        if bad:
            raise ConfigError(f"nas.search.combinations: every n_cells and n_nodes must be >= 1 and n_reductions >= 0, got {bad}")
        return grid

    def search(self, ctx: PhaseContext) -> SearchResult:
        done = check_completed(ctx, ctx.dir / RESULT_FILE, self.searcher.force)
        if done is not None:
            ctx.log.info(f"search combinations already finished ({ctx.dir / RESULT_FILE}); skipping them")
            return Searcher.load_result(ctx.dir, done)
        rows: list[dict[str, Any]] = []
        grid = self.combinations(ctx.conf)
        for i, (reductions, cells, nodes) in enumerate(grid, 1):
            name = f"r{reductions}_c{cells}_n{nodes}"
            ctx.log.info(f"combination {i}/{len(grid)}: {reductions} reductions, {cells} cells, {nodes} nodes")
            sub = self._sub_phase(ctx, name, reductions, cells, nodes)
            try:
                result = self.searcher.search(sub, sub.run.phase)
            finally:
                sub.close()
            rows.append({
                "n_reductions": reductions, "n_cells": cells, "n_nodes": nodes,
                "best_val_top1": result.metrics.get("best_val_top1"), "search_time": result.metrics.get("search_time"),
                "genotype": result.genotype or "", "final_desc": str(result.final_desc_path.relative_to(ctx.dir)),
            })
            self._write_table(ctx, rows)
        best = max(rows, key=lambda r: -1.0 if r["best_val_top1"] is None else r["best_val_top1"])
        ctx.log.info(f"best combination: {best['n_reductions']} reductions, {best['n_cells']} cells, "
                     f"{best['n_nodes']} nodes (val top-1 {best['best_val_top1']:.2%})")
        metrics = {"best_val_top1": best["best_val_top1"], "search_time": sum(r["search_time"] or 0.0 for r in rows),
                   "combinations": rows, "best_combination": {k: best[k] for k in ("n_reductions", "n_cells", "n_nodes")}}
        return self.searcher.save_result(ctx, load_desc(ctx.dir / best["final_desc"]), metrics)

    @staticmethod
    def _sub_phase(ctx: PhaseContext, name: str, reductions: int, cells: int, nodes: int) -> PhaseContext:
        """A search phase whose config is this combination's: its checkpoints and completion marker
        are checked against exactly that, so the other combinations do not invalidate it."""
        conf = copy.deepcopy(ctx.run.conf)
        model_desc = conf.nas.search.model_desc
        model_desc.n_reductions, model_desc.n_cells, model_desc.n_nodes = reductions, cells, nodes
        conf.nas.search.combinations = type(conf.nas.search.combinations)()  # the sweep itself is not part of it
        run = replace(ctx.run, conf=conf)
        return run.phase(f"{ctx.name}/combos/{name}", conf.nas.search)

    @staticmethod
    def _write_table(ctx: PhaseContext, rows: list[dict[str, Any]]) -> None:
        if not ctx.run.is_main:
            return
        atomic.write_json(ctx.dir / "combinations.json", rows)
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=COLUMNS, delimiter="\t")
        writer.writeheader()
        writer.writerows(rows)
        atomic.write_text(ctx.dir / "combinations.tsv", buf.getvalue())
