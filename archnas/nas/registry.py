"""The algorithm and stage registries (timm-style): a name -> the `Strategy` class that implements
an algorithm, or the `Phase` class of a stage that `nas.extra_stages` can append to any recipe.

An algorithm module registers its class when it is imported (`archnas.algos` imports the
built-in ones; a plugin module registers its own), together with its config section, which
becomes `nas.search.<name>` in every config validated afterwards; a stage's section becomes
`nas.<name>`. The tables are filled at import and never changed later.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

from archnas.config.schema import register_search_section, register_stage_section
from archnas.errors import ConfigError

if TYPE_CHECKING:
    from archnas.nas.phase import Phase
    from archnas.nas.strategy import Strategy

S = TypeVar("S", bound="type[Strategy]")
P = TypeVar("P", bound="type[Phase]")
_ALGORITHMS: dict[str, "type[Strategy]"] = {}
_STAGES: dict[str, "type[Phase]"] = {}
# Names a registered stage cannot take: result.json's own key, and the built-in stages'.
RESERVED_STAGE_NAMES = frozenset({"algorithm", "pretrain", "search", "ranking", "eval", "random_baseline"})


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


def register_stage(cls: P) -> P:
    """Class decorator: `cls.name` becomes a stage `nas.extra_stages` can name, `cls.config_class`
    (if any) its section `nas.<name>`. A stage without one reads the section its `section_key` names."""
    name = cls.name
    if not name or name in _STAGES or name in RESERVED_STAGE_NAMES:
        raise ValueError(f"stage {name!r} is registered twice, has no name or takes a built-in stage's name")
    if cls.config_class is not None:
        if cls.section_key not in ("", f"nas.{name}"):
            raise ValueError(f"stage {name!r}: a config_class is the section nas.{name}, not {cls.section_key!r}")
        register_stage_section(name, cls.config_class)
    elif not cls.section_key:
        raise ValueError(f"stage {name!r} has no config section: give it a config_class (nas.{name}) or a section_key")
    _STAGES[name] = cls
    return cls


def every_recipe_stages() -> list["type[Phase]"]:
    """The registered stages that end every recipe (`Phase.in_every_recipe`), in registration order."""
    return [cls for cls in _STAGES.values() if cls.in_every_recipe]


def stage_names() -> list[str]:
    return sorted(_STAGES)


def stage_class(name: str) -> "type[Phase]":
    if name not in _STAGES:
        registered = ", ".join(stage_names()) or "none (a plugin registers them: --import MODULE)"
        raise ConfigError(f"nas.extra_stages: unknown stage {name!r}; registered: {registered}")
    return _STAGES[name]
