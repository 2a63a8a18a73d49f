"""The `export` stage, and what it shares with `archnas export`: the experiment's final network (the
model file of the last stage of the recipe that declares a `network_file`, `final_network_stage`:
the eval, or a stage after it that trains on) exported in the formats of `nas.export.formats`,
each checked against the trained network on real test images (`archnas.export`).

Off unless a config names it: `nas.extra_stages: [export]` appends it to any recipe; `--skip export`
leaves it out of one run, `--stages export` runs it alone on a finished experiment. It writes
`export/<format>/` (the files and `bundle.json`) and, last, its marker `export/export.json`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from archnas.config import ExperimentConf
from archnas.context import PhaseContext, git_commit
from archnas.errors import ConfigError, ExportError
from archnas.export.formats import FORMAT_NAMES, format_named
from archnas.export.network import ExportPlan, images_text, prepare_export
from archnas.nas.phase import Phase, final_network_stage
from archnas.nas.registry import register_stage
from archnas.nas.runner import recipe
from archnas.utils import reads

MARKER = "export.json"


@dataclass
class ExportConf:
    # what to write, one folder each under export/: onnx (model.onnx) | torchscript (model.torchscript)
    # | pt (model.pt2, torch.export) | py (model.py and weights.pt, standalone source); see README "Export"
    formats: list[str] = field(default_factory=lambda: ["onnx"])
    images: int = 16  # test images the parity check runs through the trained and every exported network


def check_export_settings(formats: Sequence[str], images: int, formats_key: str, images_key: str) -> None:
    """Formats that exist, and a positive image count (a ConfigError naming the key)."""
    for name in formats:
        format_named(name, formats_key)
    if not formats:
        raise ConfigError(f"{formats_key}: no format given; expected some of {', '.join(FORMAT_NAMES)}")
    if images < 1:
        raise ConfigError(f"{images_key}: {images}; the parity check needs at least 1 test image")


def _record(path: Path, what: str) -> dict[str, Any]:
    """A JSON object archnas wrote in a results folder, or an ExportError saying it is not readable."""
    try:
        data = json.loads(reads.read_text(path))
    except (OSError, ValueError) as exc:
        raise ExportError(f"{path}: cannot read the {what} ({getattr(exc, 'strerror', None) or exc})") from None
    if not isinstance(data, dict):
        raise ExportError(f"{path}: the {what} is not a JSON object")
    return data


def final_network(exp_dir: Path, stages: Sequence[type[Phase]], whose: str) -> tuple[type[Phase], Path]:
    """The stage that trains the final network of an experiment of `stages` (the recipe of
    `whose`), and its model file; an ExportError when that stage has not finished."""
    stage = final_network_stage(stages)
    if stage is None:
        raise ExportError(f"no stage of {whose} ({', '.join(s.name for s in stages)}) trains a network, so there is "
                          "nothing to export")
    marker, path = exp_dir / stage.name / stage.marker, exp_dir / stage.name / stage.network_file
    if not marker.is_file() or not path.is_file():
        raise ExportError(f"{exp_dir}: no final network to export: its {stage.name} stage has not finished "
                          f"({marker if not marker.is_file() else path} does not exist); run it first")
    return stage, path


def plan_export(exp_dir: Path, conf: ExperimentConf, stages: Sequence[type[Phase]], formats: Sequence[str],
                images: int, key: str) -> tuple[type[Phase], ExportPlan]:
    """The final network of the experiment in `exp_dir` exported and checked (nothing written):
    what the export stage and `archnas export` both do. `conf` is the config it was trained under."""
    stage, path = final_network(exp_dir, stages, conf.nas.algo)
    folder = exp_dir / stage.name
    metrics = {k: v for k, v in _record(folder / stage.marker, "stage's marker").items() if k != "config"}
    run = _record(folder / "run.json", "record of the run that trained it") if (folder / "run.json").is_file() else {}
    record = {
        "experiment": str(exp_dir),
        "algorithm": conf.nas.algo,
        "stage": stage.name,
        "model_file": f"{stage.name}/{stage.network_file}",
        "metrics": metrics,
        "trained_by": {"git_commit": run.get("git_commit"), "versions": run.get("versions")},
        "git_commit": git_commit(),  # of the archnas that exported it
    }
    return stage, prepare_export(path, conf, formats, images=images, record=record, key=key)


def summary_lines(plan: ExportPlan, folders: dict[str, Path]) -> list[str]:
    """One line per format: where it went and its parity."""
    return [f"{done.format.name}: {folders[done.format.name]} (max |logit difference| {done.max_abs_diff:.3g} over "
            f"{images_text(plan.images)}, {done.format.runtime})" for done in plan.exported]


@register_stage
class Export(Phase):
    name = "export"
    config_class = ExportConf
    marker = MARKER

    @classmethod
    def check_config(cls, conf: ExperimentConf) -> None:
        check_export_settings(conf.nas.export.formats, conf.nas.export.images, "nas.export.formats",
                              "nas.export.images")

    def final(self) -> Optional[type[Phase]]:
        return final_network_stage(recipe(self.strategy))

    def inputs(self) -> tuple[str, ...]:
        final = self.final()
        return (final.name,) if final is not None else ()

    def work(self, ctx: PhaseContext) -> dict[str, Any]:
        conf = ctx.conf
        final = self.final()
        if final is not None and final.name not in self.experiment.results:
            raise ExportError(f"export: there is no finished {final.name} in {self.run.exp_dir / final.name} whose "
                              "network it would export; run it first")
        stage, plan = plan_export(self.run.exp_dir, self.run.conf, recipe(self.strategy), conf.formats, conf.images,
                                  "nas.export.formats")
        ctx.commit()
        if ctx.is_main:
            for line in summary_lines(plan, plan.write(ctx.dir)):
                ctx.log.info(f"export: {line}")
        result = {"network": f"{stage.name}/{stage.network_file}", "images": plan.images,
                  "formats": {d.format.name: {"files": list(d.files), "max_abs_diff": d.max_abs_diff}
                              for d in plan.exported}}
        self.write_marker(ctx, result)
        return result

    def summary(self, result: dict[str, Any]) -> dict[str, Any]:
        return {**result, "peak_memory": self.peak_memory}

    def report(self, summary: dict[str, Any]) -> list[str]:
        return [f"  export of {summary['network']}: " + ", ".join(
            f"{name} (max |logit difference| {f['max_abs_diff']:.3g})" for name, f in summary["formats"].items())]
