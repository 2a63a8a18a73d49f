"""`archnas plot RESULTS_DIR [--out DIR]`: the pictures of a finished experiment drawn again (what
its `plot` stage draws, `archnas.nas.plot_stage`), or of an `--algos` / `--seeds` folder: the
comparison of its runs (`comparison.png`, also written when such a command ends) and each run's
pictures.

An experiment's pictures go to `DIR` (default `RESULTS_DIR/plot/`) and, as TensorBoard images,
to `DIR/tb/`; a summary folder's comparison to `DIR` (default the folder itself) and each run's
pictures to `DIR/<run>/` (default `<run>/plot/`). Writes inside an experiment take its lock.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import sys
from pathlib import Path
from typing import Any, Iterator, Optional

from archnas.config import ExperimentConf
from archnas.errors import PlotError
from archnas.nas.phase import recorded_config
from archnas.nas.plot_stage import plot_into, read_records
from archnas.plots import Picture, RunGroup, comparison, write_pictures
from archnas.utils import reads
from archnas.utils.lock import ExperimentLock
from archnas.utils.usage_parser import UsageParser

SUMMARY_FILES = ("summary.csv", "seeds.json")  # what --algos / --seeds leave in their folder
FINAL_FOLDERS = ("eval", "tune")  # where a run's final network trained: its curve in the comparison


def build_plot_parser() -> argparse.ArgumentParser:
    parser = UsageParser(
        prog="archnas plot",
        description="Draw the pictures of a finished experiment again: the final cells or architecture, the "
        "architecture weights (last epoch and over epochs), every stage's training curves, the Pareto front; as "
        "PNG files in DIR (default RESULTS_DIR/plot) and TensorBoard images in DIR/tb. For an --algos or --seeds "
        "folder: comparison.png of its runs (test top-1 mean and spread, val top-1 curves), and each run's pictures.",
        allow_abbrev=False,
    )
    parser.add_argument("results_dir", metavar="RESULTS_DIR", help="an experiment folder (results/<experiment>), or "
                        "the folder of an --algos or --seeds command")
    parser.add_argument("--out", metavar="DIR", help="where the pictures go (default RESULTS_DIR/plot; for an --algos "
                        "or --seeds folder, the folder itself for comparison.png and <run>/plot for each run)")
    parser.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                        help="import a module first: the plugin whose algorithm, stages, ops or space the "
                        "experiment used (repeatable)")
    return parser


def experiment_conf(exp_dir: Path) -> ExperimentConf:
    """The config an experiment folder ran under (its first stage folder with a config.yaml)."""
    conf = recorded_config(exp_dir)
    if conf is None:
        raise PlotError(f"{exp_dir}: not an archnas experiment, or nothing of it has run: no stage folder (search/, "
                        f"eval/, ...) holds a config.yaml, and there is no {' or '.join(SUMMARY_FILES)}")
    return conf


def final_curve(run_dir: Path) -> tuple[list[int], list[float]]:
    """A run's val top-1 by epoch where its final network trained (empty when it has none)."""
    for name in FINAL_FOLDERS:
        path = run_dir / name / "metrics.jsonl"
        if path.is_file():
            points = [(r["epoch"], float(r["val_top1"])) for r in read_records(path)
                      if isinstance(r.get("epoch"), int) and isinstance(r.get("val_top1"), (int, float))]
            return [p[0] for p in points], [p[1] for p in points]
    return [], []


def summary_runs(folder: Path) -> tuple[str, list[RunGroup], list[Path]]:
    """(title, the groups compared, the run folders) of an --algos or --seeds folder."""
    if (folder / "summary.csv").is_file():
        rows = list(csv.DictReader(io.StringIO(reads.read_text(folder / "summary.csv"))))
        groups, runs = [], []
        for row in rows:
            name = row.get("algorithm") or ""
            if not name or Path(name).name != name:
                raise PlotError(f"{folder / 'summary.csv'}: a row names no algorithm, or not a folder of it")
            group = RunGroup(name, curves=[final_curve(folder / name)])
            if row.get("test_top1"):
                try:
                    group.test_top1.append(float(row["test_top1"]))
                except ValueError:
                    raise PlotError(f"{folder / 'summary.csv'}: test_top1 {row['test_top1']!r} of {name} is not a "
                                    "number") from None
            groups.append(group)
            runs.append(folder / name)
        return f"--algos: {folder.name}", groups, runs
    try:
        seeds = json.loads(reads.read_text(folder / "seeds.json")).get("seeds")
    except (OSError, ValueError, AttributeError) as exc:
        raise PlotError(f"{folder / 'seeds.json'}: cannot read it ({exc})") from None
    if not isinstance(seeds, dict):
        raise PlotError(f"{folder / 'seeds.json'}: no seeds recorded")
    group, runs = RunGroup(folder.name), []
    for seed, stages in seeds.items():
        if not str(seed).isdigit() or not isinstance(stages, dict):
            raise PlotError(f"{folder / 'seeds.json'}: seed {seed!r} is not a seed's record archnas writes")
        run = folder / f"seed_{int(seed)}"
        final = next((s for s in reversed(list(stages.values())) if isinstance(s, dict) and "test_top1" in s), None)
        if final is not None and isinstance(final["test_top1"], (int, float)):
            group.test_top1.append(float(final["test_top1"]))
        group.curves.append(final_curve(run))
        runs.append(run)
    return f"--seeds: {folder.name} ({len(runs)} seeds)", [group], runs


def comparison_picture(folder: Path) -> Picture:
    """`comparison.png` of an --algos or --seeds folder."""
    title, groups, _ = summary_runs(folder)
    return Picture("comparison", comparison(title, groups))


@contextlib.contextmanager
def _locked(folder: Path, out: Path) -> Iterator[None]:
    """The experiment's lock while writing inside it."""
    if out.resolve().is_relative_to(folder.resolve()):
        with ExperimentLock(folder, sys.argv):
            yield
    else:
        yield


def _tensorboard(out: Path) -> Any:
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(out / "tb"))


def plot_experiment(exp_dir: Path, out: Path) -> list[str]:
    conf = experiment_conf(exp_dir)
    with _locked(exp_dir, out):
        tb = _tensorboard(out) if conf.common.tensorboard else None
        try:
            return plot_into(exp_dir, conf, out, tb)
        finally:
            if tb is not None:
                tb.close()


def plot_from_cli(args: argparse.Namespace) -> int:
    folder = Path(args.results_dir)
    if not folder.is_dir():
        raise PlotError(f"{folder}: no such results folder")
    out: Optional[Path] = Path(args.out) if args.out else None
    if any((folder / name).is_file() for name in SUMMARY_FILES):
        _, _, runs = summary_runs(folder)
        target = out or folder
        with _locked(folder, target):
            target.mkdir(parents=True, exist_ok=True)
            files = write_pictures([comparison_picture(folder)], target)
        print(f"archnas plot: {target / files[0]}")
        for run in runs:
            if run.is_dir():
                run_out = (out / run.name) if out else run / "plot"
                print(f"archnas plot: {len(plot_experiment(run, run_out))} pictures of {run} in {run_out}")
        return 0
    target = out or folder / "plot"
    files = plot_experiment(folder, target)
    print(f"archnas plot: {len(files)} pictures of {folder} in {target}: {', '.join(files)}")
    return 0
