"""Export a trained network (a model file of the experiment's final stage) in the formats asked
for, each checked against the trained network on real test images before anything is written.

    plan = prepare_export(model_file, conf, ["onnx", "py"], images=16, record={...})  # checked
    plan.exported[0].max_abs_diff          # the largest |exported logit - trained logit|
    plan.write(out_dir)                    # out_dir/onnx/{model.onnx,bundle.json}, out_dir/py/...

The parity check runs the first `images` images of the run's test split (`dataset` as configured,
normalized as the eval's loader normalizes them) through the trained network (PyTorch, eval mode,
CPU) and through each exported model loaded back as a user would load it (`formats.py`). A
difference above `TOLERANCE` in any format refuses the whole export (`ExportError`) before
anything is written. Each format then gets `out_dir/<format>/`: its files and `bundle.json`, last.
"""

from __future__ import annotations

import importlib.metadata
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from archnas.config import ExperimentConf
from archnas.config.validate import config_to_dict
from archnas.data import build_data
from archnas.descs.genotypes import desc_to_genotype
from archnas.errors import ConfigError, DescError, ExportError, UsageError
from archnas.export.formats import FORMAT_NAMES, Files, Format, format_named
from archnas.export.onnx import INPUT_NAME, OUTPUT_NAME
from archnas.model.model_file import TrainedModel, load_model_file, read_model_file
from archnas.stats import model_stats
from archnas.utils import atomic
from archnas.utils.versions import ARCHNAS_VERSION

TOLERANCE = 1e-4  # the largest |logit difference| an export may have against the trained network
BUNDLE_FILE = "bundle.json"


class Logits(nn.Module):
    """The network's class scores alone: a desc-built Model returns `(logits, aux_logits)`, and an
    exported graph has one output."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        out = self.model(x)
        return out[0] if isinstance(out, tuple) else out


@dataclass
class Exported:
    format: Format
    files: Files
    max_abs_diff: float


def parity_images(conf: ExperimentConf, n: int) -> Tensor:
    """The first `n` images of the run's test split (fewer if it has fewer), as the eval's loader
    hands them to the network: float, normalized, on the CPU."""
    data = build_data(conf.dataset, conf.nas.eval.loader, seed=conf.common.seed, device=torch.device("cpu"),
                      cache_dir=conf.common.cache_dir)
    batches, have = [], 0
    for images, _ in data.loader("test", training=False):
        batches.append(images)
        have += images.shape[0]
        if have >= n:
            break
    return torch.cat(batches)[:n].contiguous()


def images_text(n: int) -> str:
    """"16 test images", "1 test image": how many the parity check ran, for messages."""
    return f"{n} test image{'s' if n != 1 else ''}"


def _fail(fmt: Format, exc: Exception) -> ExportError:
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
    return ExportError(f"export --format {fmt.name}: the network cannot be exported ({type(exc).__name__}: {first})")


def check_parity(net: nn.Module, formats: Sequence[Format], images: Tensor, doc: str) -> list[Exported]:
    """Every format's files, each loaded back and run on `images` against `net`; an ExportError
    when one cannot be made or differs by more than TOLERANCE."""
    with torch.no_grad():
        reference = net(images)
    # The batch the exporters trace: at least 2 images, which torch.export keeps a dynamic size (it
    # specializes a size of 1).
    example = images if images.shape[0] >= 2 else images.expand(2, *images.shape[1:]).contiguous()
    exported = []
    for fmt in formats:
        try:
            files = fmt.write(net, example, doc)
            with torch.no_grad():
                logits = fmt.load(files)(images)
        except UsageError:
            raise
        except Exception as exc:  # noqa: BLE001  (an exporter's refusal of the user's network, in one line)
            raise _fail(fmt, exc) from None
        diff = float((logits.float() - reference).abs().max()) if logits.shape == reference.shape else float("inf")
        if not diff <= TOLERANCE:  # NaN too
            raise ExportError(f"export --format {fmt.name}: the exported model's logits differ from the trained "
                              f"network's by up to {diff:.3g} on {images_text(images.shape[0])} (over the "
                              f"{TOLERANCE:g} allowed; run with {fmt.runtime}); nothing was written")
        exported.append(Exported(fmt, files, diff))
    return exported


def architecture(model_file: Path, model: nn.Module) -> dict[str, Any]:
    """What the network is, as plain data: a module space's name, parameters and `{label: choice}`,
    or the genotype of DARTS cells (a desc that is no genotype: its fingerprint, `ModelDesc.fingerprint`)."""
    data = read_model_file(model_file)
    if "space" in data:
        return {"kind": "modules", **{k: v for k, v in data["space"].items() if k != "plugin"}}
    try:
        return {"kind": "cells", "genotype": str(desc_to_genotype(model.desc))}
    except DescError:
        return {"kind": "cells", "genotype": None, "desc_fingerprint": model.desc.fingerprint()}


def _versions(fmt: Format) -> dict[str, str]:
    versions = {"archnas": ARCHNAS_VERSION, "torch": torch.__version__, "python": platform.python_version()}
    if fmt.name == "onnx":
        for package in ("onnx", "onnxruntime", "onnxscript"):
            try:
                versions[package] = importlib.metadata.version(package)
            except importlib.metadata.PackageNotFoundError:
                pass
    return versions


def _doc(trained: TrainedModel, arch: dict[str, Any], source: str) -> str:
    spec = trained.required_spec()
    what = f"a network of the {arch.get('name') or arch.get('factory')} space" if arch["kind"] == "modules" \
        else f"DARTS cells {arch.get('genotype') or ''}".rstrip()
    return (f"{what},\ntrained by archnas ({source}) and exported by archnas {ARCHNAS_VERSION}: standalone PyTorch "
            "that needs only torch.\n\n"
            "    import model\n"
            "    net = model.load()              # weights.pt beside this file, eval mode\n"
            f"    logits = net(x)                 # x: float [N, {', '.join(map(str, spec.shape))}], pixels in [0, 1] "
            "normalized per channel\n"
            f"                                    # as (x - mean) / std: mean {list(spec.mean)}, std "
            f"{list(spec.std)}\n"
            f"\nlogits: [N, {len(trained.classes)}], classes in order: {list(trained.classes)}\n")


@dataclass
class ExportPlan:
    """Exports that passed their parity check, held in memory until `write`."""

    exported: list[Exported]
    bundle: dict[str, Any]  # what every format's bundle.json records besides its own format, files and parity
    images: int  # how many test images the parity check ran

    def write(self, out_dir: Path) -> dict[str, Path]:
        """Each format's files, then its `bundle.json`, into `out_dir/<format>/` (atomically, file by
        file); returns the folder of each format."""
        folders = {}
        for done in self.exported:
            folder = folders[done.format.name] = out_dir / done.format.name
            for name, data in done.files.items():
                atomic.write_bytes(folder / name, data)
            atomic.write_json(folder / BUNDLE_FILE, {
                "format": done.format.name,
                "files": list(done.files),
                "parity": {"max_abs_diff": done.max_abs_diff, "tolerance": TOLERANCE, "images": self.images,
                           "split": "test", "runtime": done.format.runtime},
                **self.bundle,
                "versions": _versions(done.format),
            })
        return folders


def prepare_export(model_file: Path, conf: ExperimentConf, formats: Sequence[str], *, images: int,
                   record: dict[str, Any], key: str = "--format") -> ExportPlan:
    """The network of `model_file` exported in `formats` and checked (nothing written yet). Its
    bundle records `record` (where the network comes from: experiment, stage, metrics, commits)
    plus the architecture, input, classes, cost counts and config. `key` names the setting the
    formats came from, for the message about an unknown one."""
    chosen = [format_named(name, key) for name in dict.fromkeys(formats)]
    if not chosen:
        raise ConfigError(f"{key}: no format given; expected some of {', '.join(FORMAT_NAMES)}")
    trained = load_model_file(model_file)
    net = Logits(trained.model).eval()
    spec = trained.required_spec()
    arch = architecture(model_file, trained.model)
    x = parity_images(conf, images)
    exported = check_parity(net, chosen, x, _doc(trained, arch, str(record.get("model_file", model_file))))
    stats = model_stats(trained.model, list(spec.shape))
    bundle = {
        **record,
        "architecture": arch,
        "input": {"name": INPUT_NAME, "dtype": "float32", **spec.to_dict(),
                  "normalization": "(pixel / 255 - mean) / std, per channel"},
        "output": {"name": OUTPUT_NAME, "shape": ["N", len(trained.classes)]},
        "classes": list(trained.classes),
        "dataset": trained.dataset,
        "model_info": trained.info,
        "cost": {k: stats[k] for k in ("params", "params_without_aux", "macs")},
        "config": config_to_dict(conf),
    }
    return ExportPlan(exported, bundle, int(x.shape[0]))
