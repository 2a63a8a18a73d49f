"""The `plot` stage, and what it shares with `archnas plot`: the pictures of an experiment, drawn
from what its finished stages wrote (`archnas.plots` draws them).

Every recipe ends with it (`in_every_recipe`); `--skip plot` leaves it out of a run, `--stages
plot` draws a finished experiment again. It writes into `plot/` (and TensorBoard's `plot/tb/`,
images under `plots/<name>`, when `common.tensorboard` is on), its marker `plot/plots.json` last:

- `cell_normal.png`, `cell_reduce.png`: the final DARTS cells as diagrams (the search's final
  desc, else the eval's); `architecture.png`: a module space's final `{label: choice}` as a table,
  with what each choice costs over its label's cheapest option where the search built cost tables
  (`archnas.latency`: spos, enot, limits or a penalty), and the final network's parameters and
  multiply-adds;
- `alphas_<group>.png` and `alphas_<group>_epochs.png` for each stage that records `alphas` per
  epoch in metrics.jsonl (search; `<stage>_` prefixed for another): the probabilities at the last
  epoch, and a grid over the epochs (two or more);
- `curves_<stage>.png`: every finished stage's metrics.jsonl of two or more epochs (loss, top-1,
  learning rates; the alphas' entropy);
- `pareto.png`: a search that wrote `pareto.csv`, drawn as the search draws `search/pareto.png`.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from archnas.config import ExperimentConf
from archnas.context import PhaseContext
from archnas.descs.desc_io import load_desc
from archnas.descs.model_desc import CellType, ModelDesc
from archnas.errors import CheckpointError, ConfigError, PlotError
from archnas.latency import CostTable, Limits, cost_model
from archnas.latency.table import arch_to_row
from archnas.nas.pareto import pareto_picture
from archnas.nas.phase import Phase, final_network_stage
from archnas.nas.registry import algorithm_class, register_stage
from archnas.nas.runner import recipe
from archnas.nas.spaces import ModuleSpace, eval_space
from archnas.plots import (
    CellGraph,
    Picture,
    alpha_groups,
    alphas_heatmap,
    alphas_over_epochs,
    arch_table,
    cell_diagram,
    curves,
    file_name,
    write_pictures,
)
from archnas.stats import dataset_info
from archnas.training.checkpoint import read_checkpoint
from archnas.utils import reads

MARKER = "plots.json"
CELL_NAMES = {CellType.regular: "normal", CellType.reduction: "reduce"}  # as genotypes name them


@dataclass
class PlotConf:
    # the most epochs an alphas_<group>_epochs.png grid shows (evenly spaced, the first and last included)
    epochs_shown: int = 12


def read_records(path: Path) -> list[dict[str, Any]]:
    """The JSON objects of a metrics.jsonl (a line that is not one is left out: a results folder
    is read, not trusted)."""
    records = []
    for line in reads.read_text(path).splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def _read_json(path: Path) -> Any:
    try:
        return json.loads(reads.read_text(path))
    except (OSError, ValueError) as exc:
        raise PlotError(f"{path}: cannot read it ({getattr(exc, 'strerror', None) or exc})") from None


def finished_stages(exp_dir: Path, stages: Sequence[type[Phase]]) -> list[type[Phase]]:
    """The stages of the recipe (the plot stage aside) whose marker is in the experiment folder."""
    return [s for s in stages if s.name != Plot.name and (exp_dir / s.name / s.marker).is_file()]


def cell_pictures(desc: ModelDesc, algo: str) -> list[Picture]:
    """A diagram of the first cell of each type of a final desc (one op per edge)."""
    pictures = []
    for ctype, name in CELL_NAMES.items():
        cell = desc.first_cell(ctype)
        if cell is None or any(e.op_desc.children for node in cell.nodes for e in node.edges):
            continue
        pictures.append(Picture(f"cell_{name}", cell_diagram(CellGraph.from_cell(cell, f"{name} cell ({algo})"))))
    return pictures


def recorded_tables(folder: Path) -> dict[str, CostTable]:
    """The per-choice cost tables a search checkpointed (`cost_tables`: spos, enot, a gradient
    search with cost limits or a penalty), by cost model; none when it built none."""
    path = folder / "checkpoint_last.pt"
    if not path.is_file():
        return {}
    try:
        state = read_checkpoint(path).get("state", {}).get("cost_tables") or {}
        return {str(name): CostTable.from_dict(entry["table"]) for name, entry in state.items()}
    except (CheckpointError, AttributeError, KeyError, TypeError, ValueError):
        return {}


def cost_text(delta: float) -> str:
    """A choice's added cost: counts whole with thousands separators (+175,104), timings to three digits."""
    if abs(delta - round(delta)) < 1e-6:
        return f"+{round(delta):,}"
    return f"+{delta:,.3g}" if abs(delta) < 1000 else f"+{delta:,.0f}"


def architecture_table(exp_dir: Path, conf: ExperimentConf, arch: Mapping[str, Any], space: ModuleSpace,
                       totals: Mapping[str, Any]) -> Picture:
    """`{label: choice}` of a module space as a table: with the search's cost tables, what each
    choice costs over its label's cheapest option; the final network's counts last."""
    tables = recorded_tables(exp_dir / "search")
    names = list(tables)
    rows = [[str(label), str(choice)] for label, choice in arch.items()]
    if tables:
        supernet = space.supernet(dataset_info(conf.dataset, conf.common.cache_dir))
        specs = supernet.specs
        full = supernet.check_arch(arch)
        option = dict(zip(specs, arch_to_row(specs, full)))
        rows = []
        for label in specs:
            cells = []
            for table in tables.values():
                k = table.labels.index(label) if label in table.labels else None
                cells.append("-" if k is None else cost_text(table.deltas[k][option[label]] - min(table.deltas[k])))
            rows.append([label, str(full[label]), *cells])
    counts = [n for n in ("params", "macs") if isinstance(totals.get(n), (int, float))]
    for n in counts:
        rows.append([f"total {n}", f"{totals[n]:,}", *[""] * len(names)])
    columns = ["label", "choice", *[f"{n} ({cost_model(n).unit})" for n in names]]
    note = ("per choice: what it adds over its label's cheapest option (the search's cost tables)" if names else "")
    return Picture("architecture", arch_table(f"final architecture ({conf.nas.algo}, {space.title})", rows, columns,
                                              note))


def architecture_pictures(exp_dir: Path, conf: ExperimentConf, stages: Sequence[type[Phase]],
                          finished: Sequence[str]) -> list[Picture]:
    """The final architecture: DARTS cells as diagrams, a module space's choices as a table."""
    for folder, name in (("search", "final_model_desc.yaml"), ("eval", "full_model_desc.yaml")):
        if folder in finished and (exp_dir / folder / name).is_file():
            pictures = cell_pictures(load_desc(exp_dir / folder / name), conf.nas.algo)
            if pictures:
                return pictures
    space = eval_space(conf)
    if not isinstance(space, ModuleSpace):
        return []
    final = final_network_stage(stages)
    marker = exp_dir / final.name / final.marker if final is not None and final.name in finished else None
    totals = _read_json(marker) if marker is not None else {}
    for folder in ("search", "eval"):
        path = exp_dir / folder / "arch.json"
        if folder in finished and path.is_file():
            record = _read_json(path)
            arch = record.get("arch") if isinstance(record, dict) else None
            if isinstance(arch, dict):
                return [architecture_table(exp_dir, conf, arch, space, totals if isinstance(totals, dict) else {})]
    return []


def pareto_pictures(exp_dir: Path, conf: ExperimentConf) -> list[Picture]:
    """`pareto.csv` of the search, drawn again (the cost `nas.search.cost.pareto` names)."""
    path = exp_dir / "search" / "pareto.csv"
    if not path.is_file():
        return []
    cost = conf.nas.search.cost.pareto
    rows = list(csv.DictReader(io.StringIO(reads.read_text(path))))
    try:
        costs = [float(r[cost]) for r in rows]
        accuracies = [float(r["accuracy"]) for r in rows]
        front = [r["on_front"] == "1" for r in rows]
    except (KeyError, ValueError, TypeError):
        raise PlotError(f"{path}: not a pareto.csv with columns accuracy, {cost} and on_front") from None
    return [pareto_picture(costs, accuracies, front, cost, Limits.from_conf(conf.nas.search.cost).bounds)]


def experiment_pictures(exp_dir: Path, conf: ExperimentConf, stages: Sequence[type[Phase]],
                        epochs_shown: int) -> list[Picture]:
    """Every picture of the experiment in `exp_dir` (of recipe `stages`, run under `conf`), from
    its finished stages; a PlotError when none has finished."""
    finished = [s.name for s in finished_stages(exp_dir, stages)]
    if not finished:
        raise PlotError(f"{exp_dir}: no stage of {conf.nas.algo} ({', '.join(s.name for s in stages)}) has finished, "
                        "so there is nothing to draw; run the experiment first")
    pictures = architecture_pictures(exp_dir, conf, stages, finished)
    for name in finished:
        path = exp_dir / name / "metrics.jsonl"
        records = read_records(path) if path.is_file() else []
        prefix = "" if name == "search" else f"{file_name(name)}_"
        for group in alpha_groups(records):
            stem = f"alphas_{prefix}{file_name(group.name)}"
            pictures.append(Picture(stem, alphas_heatmap(group)))
            if len(group.epochs) >= 2:  # one epoch's grid would be the heatmap again
                pictures.append(Picture(f"{stem}_epochs", alphas_over_epochs(group, epochs_shown)))
    for name in finished:
        path = exp_dir / name / "metrics.jsonl"
        records = read_records(path) if path.is_file() else []
        if len(records) >= 2:  # a curve needs two epochs; one is in the stage's marker and log
            pictures.append(Picture(f"curves_{file_name(name)}", curves(name, records)))
    return pictures + pareto_pictures(exp_dir, conf)


def check_epochs_shown(value: int, key: str) -> None:
    if value < 2:
        raise ConfigError(f"{key}: {value}; the grid over epochs shows at least the first and the last (2 or more)")


@register_stage
class Plot(Phase):
    name = "plot"
    config_class = PlotConf
    marker = MARKER
    in_every_recipe = True

    @classmethod
    def check_config(cls, conf: ExperimentConf) -> None:
        check_epochs_shown(conf.nas.plot.epochs_shown, "nas.plot.epochs_shown")

    def stages(self) -> tuple[type[Phase], ...]:
        return tuple(s for s in recipe(self.strategy) if s.name != self.name)

    def inputs(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.stages())

    def work(self, ctx: PhaseContext) -> dict[str, Any]:
        # under torchrun only rank 0 draws (the others would draw the same and write nothing); a
        # results folder it cannot read is refused before the stage's folder is written
        pictures = (experiment_pictures(self.run.exp_dir, self.run.conf, self.stages(), ctx.conf.epochs_shown)
                    if ctx.is_main else [])
        ctx.commit()
        files: list[str] = []
        if ctx.is_main:
            files = write_pictures(pictures, ctx.dir, ctx.open_tensorboard())
            ctx.log.info(f"plot: {len(files)} pictures in {ctx.dir}: {', '.join(files)}")
        result = {"files": files}
        self.write_marker(ctx, result)
        return result

    def summary(self, result: dict[str, Any]) -> dict[str, Any]:
        return {**result, "peak_memory": self.peak_memory}

    def report(self, summary: dict[str, Any]) -> list[str]:
        return [f"  pictures: {len(summary.get('files', []))} in {self.dir}"]


def plot_into(exp_dir: Path, conf: ExperimentConf, out: Path, tb: Optional[Any] = None) -> list[str]:
    """`archnas plot` of one experiment: its pictures drawn again into `out` (and `tb`)."""
    stages = tuple(s for s in recipe(algorithm_class(conf.nas.algo)(conf)) if s.name != Plot.name)
    pictures = experiment_pictures(exp_dir, conf, stages, conf.nas.plot.epochs_shown)
    out.mkdir(parents=True, exist_ok=True)
    return write_pictures(pictures, out, tb)
