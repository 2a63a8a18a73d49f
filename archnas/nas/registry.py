"""The algorithm registry (timm-style): a name -> the `Strategy` class that implements it.

An algorithm module registers its class when it is imported (`archnas.algos` imports the
built-in ones; a plugin module registers its own), together with its config section, which
becomes `nas.search.<name>` in every config validated afterwards. The table is filled at import
and never changed later.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

from archnas.config.schema import register_search_section
from archnas.errors import ConfigError

if TYPE_CHECKING:
    from archnas.nas.strategy import Strategy

S = TypeVar("S", bound="type[Strategy]")
_ALGORITHMS: dict[str, "type[Strategy]"] = {}


def register_algorithm(cls: S) -> S:
    """Class decorator: `cls.name` becomes a value of `nas.algo`, `cls.config_class` (if any)
    the section `nas.search.<name>`."""
    name = cls.name
    if not name or name in _ALGORITHMS:
        raise ValueError(f"algorithm {name!r} is registered twice or has no name")
    if cls.config_class is not None:
        register_search_section(name, cls.config_class)
    _ALGORITHMS[name] = cls
    return cls


def algorithm_names() -> list[str]:
    return sorted(_ALGORITHMS)


def algorithm_class(name: str) -> "type[Strategy]":
    if name not in _ALGORITHMS:
        raise ConfigError(f"nas.algo: unknown algorithm {name!r}; registered: {', '.join(algorithm_names())}")
    return _ALGORITHMS[name]
