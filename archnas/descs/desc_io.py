"""Desc files: plain YAML with a schema version, and an optional `.pt` sidecar for trainables.

Archai pickles its descs as Python-object YAML: loading needs the unsafe loader (a desc file
could run code) and breaks whenever a class moves. Here a desc file is `yaml.safe_dump` of plain
data; anything with a Python tag is refused, as are unknown versions and missing, unknown or
ill-typed fields, each with the file and field named. Weights inherited through a desc are
written next to it (`<name>.pt`) and read back with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Collection

import torch
import yaml

from archnas.config.yaml_files import safe_load_bounded, yaml_problem
from archnas.descs.fields import Fields
from archnas.descs.genotypes import unknown_op_message
from archnas.descs.model_desc import ModelDesc, TrainablesRefs
from archnas.errors import DescError
from archnas.utils import atomic, reads

SCHEMA_VERSION = 2  # 2: no `edge_weights` (how a supernet weighs candidates is the algorithm's)


def desc_to_yaml(desc: ModelDesc, refs: TrainablesRefs | None = None, trainables_file: str | None = None) -> str:
    data: dict[str, Any] = {"schema_version": SCHEMA_VERSION}
    if trainables_file is not None:
        data["trainables_file"] = trainables_file
    data["model_desc"] = desc.to_dict(refs)
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=120)


def save_desc(desc: ModelDesc, path: str | Path) -> None:
    """Write `path` (and `path` with suffix .pt when the desc carries trainables), atomically."""
    path = Path(path)
    refs: TrainablesRefs = {}
    desc.to_dict(refs)
    sidecar = path.with_suffix(".pt") if refs else None
    if sidecar is not None:
        atomic.torch_save(sidecar, refs)
    atomic.write_text(path, desc_to_yaml(desc, refs, None if sidecar is None else sidecar.name))


def load_desc(path: str | Path, known_ops: Collection[str] | None = None) -> ModelDesc:
    """The desc in `path`; with `known_ops` (the op registry's names), unknown op names are
    refused here, naming the file and the op's place, instead of when a model is built."""
    path = Path(path)
    try:
        text = reads.read_text(path)
    except FileNotFoundError:
        raise DescError(f"desc file not found: {path}") from None
    except UnicodeDecodeError as exc:
        raise DescError(f"{path}: not a desc file: not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset "
                        f"{exc.start})") from None
    except OSError as exc:
        raise DescError(f"cannot read desc file {path}: {exc.strerror}") from None
    return desc_from_yaml(text, str(path), path.parent, known_ops)


def desc_from_yaml(text: str, where: str = "<yaml>", folder: Path | None = None,
                   known_ops: Collection[str] | None = None) -> ModelDesc:
    """Parse a desc file's text; `folder` is where its trainables sidecar is looked up."""
    try:
        data = safe_load_bounded(text)
    except yaml.constructor.ConstructorError as exc:
        raise DescError(f"{where}: refused: desc files are plain YAML without Python tags ({exc.problem})") from None
    except yaml.YAMLError as exc:
        raise DescError(f"{where}: invalid YAML: {yaml_problem(exc)}") from None
    except RecursionError:
        raise DescError(f"{where}: nested too deeply to be a desc file") from None
    f = Fields(data, where)
    version = f.get("schema_version", int)
    if version not in (1, SCHEMA_VERSION):
        raise f.error("schema_version", f"unknown version {version}; this archnas reads versions 1 and {SCHEMA_VERSION}")
    if version == 1 and isinstance(data.get("model_desc"), dict):
        data["model_desc"].pop("edge_weights", None)  # version 1 named the supernet's weighting; the strategy does now
    trainables = None
    sidecar = f.get("trainables_file", str, default=None, nullable=True)
    if sidecar is not None:
        trainables = _load_sidecar((folder or Path(".")) / sidecar, where)
    desc = ModelDesc.from_fields(f.sub("model_desc"), trainables)
    f.done()
    for path, op in desc.named_ops():
        if known_ops is not None and op.name not in known_ops:
            raise DescError(f"{where}: model_desc.{path}.name: {unknown_op_message(op.name, known_ops)}")
    return desc


def _load_sidecar(path: Path, where: str) -> TrainablesRefs:
    try:
        data = reads.torch_load_plain(path)
    except FileNotFoundError:
        raise DescError(f"{where}: trainables_file: {path} not found") from None
    except OSError as exc:
        raise DescError(f"{where}: trainables_file: {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise DescError(f"{where}: trainables_file: cannot load {path} as plain tensors: {exc}") from None
    ok = isinstance(data, dict) and all(
        isinstance(k, str) and isinstance(v, dict) and all(isinstance(t, torch.Tensor) for t in v.values())
        for k, v in data.items()
    )
    if not ok:
        raise DescError(f"{where}: trainables_file: {path} must map op paths to state dicts of tensors")
    return data
