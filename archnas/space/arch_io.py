"""Architectures as files and strings: a plain `{label: choice}` mapping.

    schema_version: 1
    space: nb201                      # what the labels belong to (a name, a factory, or darts_cells)
    space_fingerprint: 3f0c...        # SearchSpaceModel.labels_key(): loading into another space fails
    arch: {cell__0_1: conv_3x3, ...}

written as safe YAML (`arch.yaml`) and JSON (`arch.json`, what NNI users exchange), atomically.
`parse_arch(text)` reads a file path, an inline YAML/JSON mapping, or a space's own string
(NAS-Bench-201's, a named architecture such as proxylessnas's `proxyless-mobile`).

DARTS cells export the same form under NNI's DARTS labels: for node i (numbered after the two
cell inputs, 2..) and its k-th kept edge, `normal/op_<i>_<k>` is the op and `normal/input_<i>_<k>`
the input it reads (the same for `reduce`); `genotype_to_arch` and `arch_to_genotype` convert.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

import yaml

from archnas.config.yaml_files import safe_load_bounded
from archnas.descs.genotypes import Genotype
from archnas.errors import SpaceError
from archnas.utils import atomic, reads

SCHEMA_VERSION = 1
_CELLS = (("normal", "normal"), ("reduce", "reduce"))


def arch_document(arch: Mapping[str, Any], space: str, fingerprint: Optional[str]) -> dict[str, Any]:
    return {"schema_version": SCHEMA_VERSION, "space": space, "space_fingerprint": fingerprint,
            "arch": {str(k): _plain(v) for k, v in arch.items()}}


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def save_arch(folder: Path, arch: Mapping[str, Any], space: str, fingerprint: Optional[str],
              name: str = "arch") -> Path:
    """`<folder>/<name>.yaml` and `.json`; returns the YAML path."""
    doc = arch_document(arch, space, fingerprint)
    atomic.write_text(folder / f"{name}.json", json.dumps(doc, indent=2) + "\n")
    path = folder / f"{name}.yaml"
    atomic.write_text(path, yaml.safe_dump(doc, sort_keys=False))
    return path


def parse_arch(text: str, fingerprint: Optional[str] = None,
               parse_string: Optional[Callable[[str], dict]] = None,
               parse_mapping: Optional[Callable[[dict], dict]] = None) -> dict[str, Any]:
    """An architecture from a file (.yaml/.yml/.json), an inline mapping, or a string of the space's
    own (`parse_string`: NAS-Bench-201's `|op~0|+...`, a named architecture); a mapping of the
    space's own form is read by `parse_mapping` (NAS-Bench-101's spec); a file written for
    another space (its fingerprint differs from `fingerprint`) is refused."""
    source = text.strip()
    path = Path(source).expanduser()
    if source.endswith((".yaml", ".yml", ".json")) or _names_path(path):
        try:
            source = reads.read_text(path)
        except UnicodeDecodeError as exc:
            raise SpaceError(f"architecture file {text}: not UTF-8 text (byte {exc.object[exc.start]:#04x} at "
                             f"offset {exc.start})") from None
        except OSError as exc:
            raise SpaceError(f"architecture file {text}: {exc.strerror or exc}") from None
        where = str(path)
    else:
        where = "architecture"
    if source.startswith("|"):
        if parse_string is None:
            raise SpaceError(f"{where}: {source[:40]!r} is a NAS-Bench-201 string, but this space is not nb201")
        return parse_string(source)
    try:
        data = safe_load_bounded(source)
    except yaml.YAMLError as exc:
        raise SpaceError(f"{where}: neither a NAS-Bench-201 string nor YAML/JSON: {str(exc).splitlines()[0]}") from None
    except RecursionError:
        raise SpaceError(f"{where}: nested too deeply to be an architecture") from None
    if isinstance(data, str) and parse_string is not None:
        return parse_string(data)  # a space's own name of an architecture (proxylessnas: proxyless-mobile)
    if not isinstance(data, dict):
        raise SpaceError(f"{where}: expected a mapping {{label: choice}} or an architecture file, got {type(data).__name__}")
    if "arch" in data and "schema_version" in data:
        if data["schema_version"] != SCHEMA_VERSION:
            raise SpaceError(f"{where}: schema_version {data['schema_version']!r}; this archnas reads {SCHEMA_VERSION}")
        recorded = data.get("space_fingerprint")
        if fingerprint is not None and recorded is not None and recorded != fingerprint:
            raise SpaceError(f"{where}: written for another space ({data.get('space')}, fingerprint {recorded}); this "
                             f"space's fingerprint is {fingerprint}")
        data = data["arch"]
        if not isinstance(data, dict):
            raise SpaceError(f"{where}: arch must be a mapping {{label: choice}}")
    if parse_mapping is not None:
        data = parse_mapping(data)
    return {str(k): v for k, v in data.items()}


def _names_path(path: Path) -> bool:
    """Whether `path` names something on disk: a file, or a folder or device given by mistake
    (then refused as what it is, not parsed as an architecture string); False for text no file
    can be named by (too long for the file system: an inline mapping of many labels)."""
    try:
        return path.exists()
    except (OSError, ValueError):
        return False


def genotype_to_arch(genotype: Genotype) -> dict[str, Any]:
    """A DARTS genotype under NNI's DARTS labels."""
    arch: dict[str, Any] = {}
    for cell, field in _CELLS:
        gene = getattr(genotype, field)
        for n in range(0, len(gene), 2):
            for k, (op, inp) in enumerate(gene[n: n + 2]):
                arch[f"{cell}/op_{n // 2 + 2}_{k}"] = op
                arch[f"{cell}/input_{n // 2 + 2}_{k}"] = inp
    return arch


def arch_to_genotype(arch: Mapping[str, Any]) -> Genotype:
    """The inverse of `genotype_to_arch` (SpaceError naming a missing or malformed label)."""
    genes = {}
    for cell, field in _CELLS:
        pairs = []
        i = 2
        while f"{cell}/op_{i}_0" in arch:
            for k in range(2):
                op, inp = arch.get(f"{cell}/op_{i}_{k}"), arch.get(f"{cell}/input_{i}_{k}")
                if not isinstance(op, str) or not isinstance(inp, int) or isinstance(inp, bool) or not 0 <= inp < i:
                    raise SpaceError(f"DARTS architecture: {cell}/op_{i}_{k} and {cell}/input_{i}_{k} must be an op "
                                     f"name and an input in [0, {i}), got {op!r}, {inp!r}")
                pairs.append((op, inp))
            i += 1
        if not pairs:
            raise SpaceError(f"DARTS architecture: no {cell}/op_2_0; labels given: {', '.join(sorted(arch))}")
        genes[field] = tuple(pairs)
    known = set(genotype_to_arch(Genotype(genes["normal"], (), genes["reduce"], ())))
    unknown = sorted(set(arch) - known)
    if unknown:
        raise SpaceError(f"DARTS architecture: unknown labels {', '.join(unknown)}")
    concat = {f: tuple(range(2, 2 + len(g) // 2)) for f, g in genes.items()}
    return Genotype(genes["normal"], concat["normal"], genes["reduce"], concat["reduce"])
