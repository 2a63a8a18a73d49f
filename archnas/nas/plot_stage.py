"""The `plot` stage, and what it shares with `archnas plot`: the pictures of an experiment, drawn
from what its finished stages wrote (`archnas.plots` draws them).

Every recipe ends with it (`in_every_recipe`); `--skip plot` leaves it out of a run, `--stages
plot` draws a finished experiment again. It writes into `plot/` (and TensorBoard's `plot/tb/`,
images under `plots/<name>`, when `common.tensorboard` is on), its marker `plot/plots.json` last:

- `cell_normal.png`, `cell_reduce.png`: the final DARTS cells as diagrams (the search's final
  desc, else the eval's); `architecture.png`: a module space's final `{label: choice}` as a table
  with each choice's parameters and multiply-adds over its label's cheapest option (exact
  per-choice cost tables, `archnas.latency`), and the network's totals;
- `alphas_<group>.png` and `alphas_<group>_epochs.png` for each stage that records `alphas` per
  epoch in metrics.jsonl (search; `<stage>_` prefixed for another): the probabilities at the last
  epoch, and a grid over the epochs;
- `curves_<stage>.png`: every finished stage's metrics.jsonl (loss, top-1, learning rates; the
  alphas' entropy);
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
from archnas.errors import ConfigError, PlotError
from archnas.latency import CostTable, Limits, TimingProtocol, cost_model, exact_cost_models
from archnas.latency.table import arch_to_row
from archnas.nas.pareto import pareto_picture
from archnas.nas.phase import Phase
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


def architecture_table(conf: ExperimentConf, arch: Mapping[str, Any], space: ModuleSpace) -> Picture:
    """`{label: choice}` of a module space as a table: each choice with what it costs over its
    label's cheapest option (per-choice tables of every exact cost model, counted once per
    option), and the whole network's counts."""
    info = dataset_info(conf.dataset, conf.common.cache_dir)
    shape = [info.channels, *info.image_size]
    supernet = space.supernet(info)
    specs, arch = supernet.specs, supernet.check_arch(arch)
    names = exact_cost_models()
    counted: dict[str, dict[str, float]] = {}

    def count(a: Mapping[str, Any]) -> dict[str, float]:
        key = json.dumps(a, sort_keys=True, default=str)
        if key not in counted:
            net = space.network(dict(a), info)
            counted[key] = {n: cost_model(n).measure(net, shape, TimingProtocol()) for n in names}
        return counted[key]

    tables = {n: CostTable.build(n, specs, lambda a, n=n: count(a)[n]) for n in names}
    row = arch_to_row(specs, arch)
    rows = []
    for k, label in enumerate(specs):
        extra = [f"+{t.deltas[k][row[k]] - min(t.deltas[k]):,.0f}" for t in tables.values()]
        rows.append([label, str(arch[label]), *extra])
    total = count(arch)
    rows.append(["total", "", *[f"{total[n]:,.0f}" for n in names]])
    additive = all(abs(tables[n].predict_row(row) - total[n]) <= 1e-6 * max(1.0, abs(total[n])) for n in names)
    note = ("per choice: what it adds over its label's cheapest option; these sum to the total above the cheapest "
            "architecture" if additive else "per choice: what it changes alone (the space's choices are coupled, so "
            "these do not sum to the total exactly)")
    columns = ["label", "choice", *[f"{n} ({cost_model(n).unit})" for n in names]]
    return Picture("architecture", arch_table(f"final architecture ({conf.nas.algo}, {space.title})", rows, columns,
                                              note))


def architecture_pictures(exp_dir: Path, conf: ExperimentConf, finished: Sequence[str]) -> list[Picture]:
    """The final architecture: DARTS cells as diagrams, a module space's choices as a table."""
    for folder, name in (("search", "final_model_desc.yaml"), ("eval", "full_model_desc.yaml")):
        if folder in finished and (exp_dir / folder / name).is_file():
            pictures = cell_pictures(load_desc(exp_dir / folder / name), conf.nas.algo)
            if pictures:
                return pictures
    space = eval_space(conf)
    if not isinstance(space, ModuleSpace):
        return []
    for folder in ("search", "eval"):
        path = exp_dir / folder / "arch.json"
        if folder in finished and path.is_file():
            record = _read_json(path)
            arch = record.get("arch") if isinstance(record, dict) else None
            if isinstance(arch, dict):
                return [architecture_table(conf, arch, space)]
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
    pictures = architecture_pictures(exp_dir, conf, finished)
    for name in finished:
        path = exp_dir / name / "metrics.jsonl"
        records = read_records(path) if path.is_file() else []
        prefix = "" if name == "search" else f"{file_name(name)}_"
        for group in alpha_groups(records):
            stem = f"alphas_{prefix}{file_name(group.name)}"
            pictures += [Picture(stem, alphas_heatmap(group)),
                         Picture(f"{stem}_epochs", alphas_over_epochs(group, epochs_shown))]
    for name in finished:
        path = exp_dir / name / "metrics.jsonl"
        records = read_records(path) if path.is_file() else []
        if records:
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
        pictures = experiment_pictures(self.run.exp_dir, self.run.conf, self.stages(), ctx.conf.epochs_shown)
        ctx.commit()
        files: list[str] = []
        if ctx.is_main:
            files = write_pictures(pictures, ctx.dir, ctx.open_tensorboard())
            ctx.log.info(f"plot: {len(files)} pictures in {ctx.dir}: {', '.join(files)}")
        result = {"files": files}
        self.write_marker(ctx, result)
        return result

    def load(self, done: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in done.items() if k != "config"}

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
