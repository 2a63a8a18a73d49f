"""Checking a resolved tree against the schema, with errors that name the file and key."""

from __future__ import annotations

import dataclasses
from enum import Enum
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import (
    ConfigKeyError,
    InterpolationResolutionError,
    OmegaConfBaseException,
)

from archnas.config.copy_refs import is_value_ref
from archnas.config.ranges import RangeError, check_phase_trainers
from archnas.config.schema import ExperimentConf, experiment_conf_class, field_kinds
from archnas.config.tree import ConfigTree, did_you_mean, dotted, iter_paths
from archnas.errors import ConfigError


def schema_defaults() -> dict[str, Any]:
    """The schema's defaults as plain data: the bottom layer every config is merged over. Read off
    the dataclasses directly (what OmegaConf.structured would give, a hundred times faster: every
    config load and override check needs them)."""
    return config_to_dict(experiment_conf_class()())


def config_to_dict(conf: Any) -> Any:
    """Plain dicts, lists and scalars (enums as strings), ready for `yaml.safe_dump` or JSON."""
    if dataclasses.is_dataclass(conf):
        return {f.name: config_to_dict(getattr(conf, f.name)) for f in dataclasses.fields(conf)}
    if isinstance(conf, dict):
        return {k: config_to_dict(v) for k, v in conf.items()}
    if isinstance(conf, (list, tuple)):
        return [config_to_dict(v) for v in conf]
    if isinstance(conf, Enum):
        return conf.value
    return conf


# Seeds feed numpy's SeedSequence (non-negative only) and torch's manual_seed (64 bits).
MAX_SEED = 2**63


def validate(resolved: dict[str, Any], tree: ConfigTree) -> ExperimentConf:
    """Type-check `resolved` (copies already resolved), resolve `${...}` and build the dataclasses."""
    schema = OmegaConf.structured(experiment_conf_class())
    _check_containers(schema, resolved, (), tree)
    try:
        merged: DictConfig = OmegaConf.merge(schema, resolved)
        OmegaConf.resolve(merged)
        conf = OmegaConf.to_object(merged)
    except OmegaConfBaseException as exc:
        raise _explain(exc, tree) from None
    _check_common(conf, tree)
    try:
        check_phase_trainers(conf)
    except RangeError as exc:
        where = tree.source_of(tuple(exc.key.split("."))) or "config"
        raise ConfigError(f"{where}: {exc}") from None
    return conf


def _check_containers(schema: Any, data: Any, path: tuple[str, ...], tree: ConfigTree) -> None:
    """A mapping where the schema holds a list, or a list where it holds a section: OmegaConf's
    merge stops on these with a bare TypeError that names no key, so they are found first."""
    if isinstance(schema, (DictConfig, ListConfig)) and (schema._is_none() or schema._is_missing()):
        return  # a null default (Optional section) takes what it is given; the merge judges it
    if isinstance(schema, DictConfig) and isinstance(data, dict):
        for key, value in data.items():
            if isinstance(key, str) and key in schema and isinstance(value, (dict, list)):
                _check_containers(schema._get_node(key), value, (*path, key), tree)
        return
    if isinstance(schema, ListConfig) and isinstance(data, dict):
        expected, got = "a list", "a mapping"
    elif isinstance(schema, DictConfig) and isinstance(data, list):
        expected, got = "a mapping (a section of keys)", "a list"
    else:
        return
    where = tree.source_of(path) or "config"
    raise ConfigError(f"{where}: {dotted(path)}: expected {expected}, got {got}")


def _check_common(conf: ExperimentConf, tree: ConfigTree) -> None:
    """Values of `common` that every run reads at its start, where a bad one would end in a traceback."""
    seed = conf.common.seed
    if not 0 <= seed < MAX_SEED:
        where = tree.source_of(("common", "seed")) or "config"
        raise ConfigError(f"{where}: common.seed: {seed} is not a seed; expected an integer from 0 to {MAX_SEED - 1}")
    if conf.common.experiment_name:
        where = tree.source_of(("common", "experiment_name")) or "config"
        try:
            check_experiment_name(conf.common.experiment_name, "common.experiment_name")
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    levels = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
    if conf.common.log_level.upper() not in levels:
        where = tree.source_of(("common", "log_level")) or "config"
        raise ConfigError(f"{where}: common.log_level: {conf.common.log_level!r} is not one of {', '.join(levels)}")


def check_experiment_name(name: str, key: str) -> None:
    """An experiment name is a folder inside common.results_dir: relative, every part of it a real
    name (not empty, `.` or `..`, so the results never land in results_dir itself or outside it),
    printable (a newline or tab would make a folder nobody can type). `a/b` is allowed: --algos
    and --seeds keep one experiment per algorithm or seed under a common folder that way."""
    expected = ("a name inside common.results_dir is expected (a folder name, or parts separated by '/'; "
                "no absolute path, no empty, '.' or '..' part)")
    if not name.strip():
        raise ConfigError(f"{key} {name!r}: the name is empty; {expected}")
    if any(ord(c) < 32 or ord(c) == 127 for c in name) or name != name.strip():
        raise ConfigError(f"{key} {name!r}: the name has a control character or leading/trailing space; {expected}")
    parts = name.split("/")
    if name.startswith("/") or any(part in ("", ".", "..") for part in parts):
        raise ConfigError(f"{key} {name!r}: {expected}")


def check_sections(tree: ConfigTree) -> None:
    """Every schema section must stay a mapping (or a `_copy` of one). Checked before `_copy`
    references are resolved, so an emptied section (`trainer:` with nothing under it) is blamed
    where it was emptied, not in a copy of it elsewhere (`nas.eval.trainer.optimizer`'s `_copy`)."""
    kinds, defaults = field_kinds(), schema_defaults()
    for path in iter_paths(defaults):
        default, value = _at(defaults, path), _at(tree.data, path, missing=_MISSING)
        if not isinstance(default, dict) or kinds.get(path) == "free":
            continue
        if value is _MISSING or isinstance(value, dict) or is_value_ref(value):
            continue
        where = tree.source_of(path) or "config"
        phase = {("nas", "search"): "the search phase's ", ("nas", "eval"): "the eval phase's "}.get(path[:2], "")
        keys = ", ".join(list(default)[:4]) + (", ..." if len(default) > 4 else "")
        got = "empty (null)" if value is None else f"{value!r}"
        raise ConfigError(f"{where}: {dotted(path)} is {got}, but it is {phase}section {path[-1]!r}, a mapping of "
                          f"keys ({keys}); give keys under it or remove the line")


_MISSING = object()


def _at(node: Any, path: tuple[str, ...], missing: Any = None) -> Any:
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return missing
        node = node[key]
    return node


def _explain(exc: OmegaConfBaseException, tree: ConfigTree) -> ConfigError:
    key = getattr(exc, "full_key", None) or ""
    path = tuple(k for k in key.replace("[", ".").replace("]", "").split(".") if k)
    where = tree.source_of(path) or "config"
    first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if isinstance(exc, ConfigKeyError) and key:
        known = [dotted(p) for p in iter_paths(schema_defaults())]
        return ConfigError(f"{where}: unknown config key {key!r}{did_you_mean(key, known)}")
    if isinstance(exc, InterpolationResolutionError):
        return ConfigError(f"{where}: cannot resolve interpolation in {key!r}: {first_line}")
    if key:
        return ConfigError(f"{where}: invalid value for {key!r}: {first_line}")
    return ConfigError(f"{where}: invalid config: {first_line}")
