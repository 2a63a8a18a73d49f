"""Layered YAML configs: files, includes, `_copy` references and command-line overrides.

Order of resolution, lowest to highest precedence:

1. the schema defaults (:mod:`archnas.config.schema`);
2. each `--config` file, left to right, each after the files it `__include__`s;
3. command-line overrides, in the order given;
4. then `_copy` references are resolved, then `${...}` interpolations, then everything is
   type-checked against the schema and returned as :class:`ExperimentConf` dataclasses.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Sequence

import yaml

from archnas.config.copy_refs import resolve_copies
from archnas.config.overrides import Override, apply_overrides, parse_override_tokens
from archnas.config.schema import SPACE_SECTIONS, ExperimentConf, field_kinds
from archnas.config.tree import ConfigTree
from archnas.config.validate import check_sections, config_to_dict, schema_defaults, validate
from archnas.config.yaml_files import load_config_file
from archnas.errors import ConfigError

BUNDLED_CONFS = Path(__file__).resolve().parents[2] / "confs"


def find_config_file(name: str) -> Path:
    """A path as given, or the name of a bundled config (`darts` -> confs/darts.yaml)."""
    path = Path(name).expanduser()
    if path.is_file():
        return path
    bundled = BUNDLED_CONFS / (name if name.endswith(".yaml") else f"{name}.yaml")
    if "/" not in name and bundled.is_file():
        return bundled
    raise ConfigError(f"config file not found: {name}")


def load_config(config_files: Sequence[str | Path], overrides: Sequence[Override] = ()) -> ExperimentConf:
    """Merge files and overrides into a validated config (see the module docstring for the order)."""
    tree = ConfigTree(keyed=SPACE_SECTIONS)
    tree.merge(schema_defaults(), "<defaults>")
    for name in config_files:
        tree.merge_tree(load_config_file(find_config_file(str(name)), keyed=SPACE_SECTIONS))
    apply_overrides(tree, list(overrides), field_kinds(), check=check_sections)
    check_sections(tree)
    return validate(resolve_copies(tree.data), tree)


def config_to_yaml(conf: Any) -> str:
    return yaml.safe_dump(config_to_dict(conf), sort_keys=False, default_flow_style=False)


def config_hash(conf: Any) -> str:
    """A stable hash of a config section (key order does not matter)."""
    blob = json.dumps(config_to_dict(conf), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def config_diff(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two configs (plain dicts or dataclasses)."""
    old, new = config_to_dict(old), config_to_dict(new)
    if isinstance(old, dict) and isinstance(new, dict):
        keys = list(dict.fromkeys(list(old) + list(new)))
        out: list[str] = []
        for k in keys:
            out += config_diff(old.get(k), new.get(k), f"{prefix}{k}.")
        return out
    return [] if old == new else [prefix.rstrip(".")]


__all__ = [
    "ExperimentConf", "Override", "config_diff", "config_hash", "config_to_dict", "config_to_yaml",
    "find_config_file", "load_config", "parse_override_tokens",
]
