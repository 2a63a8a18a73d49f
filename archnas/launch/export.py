"""`archnas export RESULTS_DIR --format onnx|torchscript|pt|py [--out DIR]`: the final network of a
finished experiment (the export stage's work, `archnas.nas.export_stage`, run on its own).

The experiment's config comes from its stage folders (`<stage>/config.yaml`, written by the run):
the algorithm's recipe says which stage trained the final network, and that stage's own config
says which data its parity check reads. Nothing is written unless every format asked for passes
its check; then `DIR/<format>/` (default `RESULTS_DIR/export/<format>/`) gets the files and
`bundle.json`, under the experiment's lock when DIR is inside the experiment.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from archnas.config import ExperimentConf, load_config
from archnas.errors import ExportError
from archnas.export.formats import FORMAT_NAMES
from archnas.nas.export_stage import check_export_settings, plan_export, summary_lines
from archnas.nas.phase import final_network_stage, recorded_config
from archnas.nas.registry import algorithm_class
from archnas.nas.runner import recipe
from archnas.utils.lock import ExperimentLock
from archnas.utils.usage_parser import UsageParser


def build_export_parser() -> argparse.ArgumentParser:
    parser = UsageParser(
        prog="archnas export",
        description="Export the final network of a finished experiment (model_last.pt of its eval, or of the "
        "last stage of its recipe that trains a network) and check it: the largest absolute difference between "
        "the exported model's logits and the trained network's, on real images of the run's test split, must be "
        "at most 1e-4 (else nothing is written and the exit code is 2). Each format goes to DIR/<format>/ with a "
        "bundle.json (architecture, config, metrics, parameter and multiply-add counts, versions, git commit, the "
        "parity number). Formats: onnx (model.onnx, checked in onnxruntime), torchscript (model.torchscript), "
        "pt (model.pt2, a torch.export program: torch.export.load(path).module(), no archnas needed), "
        "py (model.py and weights.pt: standalone PyTorch source, no archnas needed).",
        allow_abbrev=False,
    )
    parser.add_argument("results_dir", metavar="RESULTS_DIR", help="an experiment folder (results/<experiment>)")
    parser.add_argument("--format", "-f", dest="formats", action="append", required=True, metavar="F",
                        help=f"{' | '.join(FORMAT_NAMES)}; repeat the flag or separate with commas for several")
    parser.add_argument("--out", metavar="DIR", help="where the formats' folders go (default RESULTS_DIR/export)")
    parser.add_argument("--images", type=int, default=16, metavar="N",
                        help="test images the parity check runs (default 16)")
    parser.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                        help="import a module first: the plugin whose algorithm, stages, ops or space the "
                        "experiment used (repeatable)")
    return parser


def experiment_config(exp_dir: Path) -> ExperimentConf:
    """The config of an experiment folder, from its first stage folder (in name order) holding one."""
    conf = recorded_config(exp_dir)
    if conf is None:
        raise ExportError(f"{exp_dir}: not an experiment folder, or nothing of it has run (no stage folder such as "
                          "eval/ holds a config.yaml)")
    return conf


def export_from_cli(args: argparse.Namespace) -> int:
    exp = Path(args.results_dir)
    if not exp.is_dir():
        raise ExportError(f"{exp}: no such experiment folder")
    formats = [name.strip() for item in args.formats for name in item.split(",") if name.strip()]
    check_export_settings(formats, args.images, "--format", "--images")
    conf = experiment_config(exp)
    stages = recipe(algorithm_class(conf.nas.algo)(conf))
    final = final_network_stage(stages)
    own = exp / final.name / "config.yaml" if final is not None else None
    trained_under = load_config([str(own)], []) if own is not None and own.is_file() else conf
    stage, plan = plan_export(exp, trained_under, stages, formats, args.images, "--format")
    out = Path(args.out) if args.out else exp / "export"
    if out.resolve().is_relative_to(exp.resolve()):
        with ExperimentLock(exp, sys.argv):
            folders = plan.write(out)
    else:
        folders = plan.write(out)
    print(f"archnas export: {stage.name}/{stage.network_file} of {exp}")
    for line in summary_lines(plan, folders):
        print(line)
    return 0

