"""Checking a resolved tree against the schema, with errors that name the file and key."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import (
    ConfigKeyError,
    InterpolationResolutionError,
    OmegaConfBaseException,
)

from archnas.config.schema import ExperimentConf, experiment_conf_class
from archnas.config.tree import ConfigTree, did_you_mean, dotted, iter_paths
from archnas.errors import ConfigError


def schema_defaults() -> dict[str, Any]:
    """The schema's defaults as plain data: the bottom layer every config is merged over."""
    return OmegaConf.to_container(OmegaConf.structured(experiment_conf_class()), enum_to_str=True)


def validate(resolved: dict[str, Any], tree: ConfigTree) -> ExperimentConf:
    """Type-check `resolved` (copies already resolved), resolve `${...}` and build the dataclasses."""
    try:
        merged: DictConfig = OmegaConf.merge(OmegaConf.structured(experiment_conf_class()), resolved)
        OmegaConf.resolve(merged)
        return OmegaConf.to_object(merged)
    except OmegaConfBaseException as exc:
        raise _explain(exc, tree) from None


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
