"""The schema of a resolved config: every key that exists, its type and its default.

A key that is not declared here is an error, wherever it was written. Sections live in one
module each; this module composes them into :class:`ExperimentConf`.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any

from archnas.config.schema.common import CheckpointConf, CommonConf, RayConf
from archnas.config.schema.dataset import DatasetConf
from archnas.config.schema.model_desc import (
    DARTS_PRIMITIVES,
    ModelDescConf,
    ModelStemsConf,
)
from archnas.config.schema.nas import (
    ArchTrainerConf,
    BilevelOrder,
    CostConf,
    DistillConf,
    EvalConf,
    EvalMode,
    FinalizerConf,
    FinalizerRank,
    HessianVectorProduct,
    NasConf,
    PostTrainConf,
    RankingCheckConf,
    SPACE_SECTIONS,
    SearchCombinationsConf,
    SearchConf,
    TimingConf,
)
from archnas.config.schema.training import (
    AmpConf,
    AmpDtype,
    LoaderConf,
    LossConf,
    LrScheduleConf,
    LrScheduleType,
    OptimizerConf,
    OptimizerType,
    TrainerConf,
    ValidationConf,
    WarmupConf,
)


@dataclass
class ExperimentConf:
    common: CommonConf = field(default_factory=CommonConf)
    dataset: DatasetConf = field(default_factory=DatasetConf)
    nas: NasConf = field(default_factory=NasConf)


# Algorithms' own sections, `nas.search.<name>`, and registered stages' sections, `nas.<name>`:
# filled when an algorithm or a stage registers (at import, like the op and dataset tables), read
# when a config is validated.
_SEARCH_SECTIONS: dict[str, type] = {}
_STAGE_SECTIONS: dict[str, type] = {}
_CLASSES: dict[tuple[tuple[tuple[str, type], ...], tuple[tuple[str, type], ...]], type] = {}


def _add_section(table: dict[str, type], parent: type, path: str, name: str, cls: type) -> None:
    """`<path>.<name>` becomes the dataclass `cls` in every config validated from now on."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"the config section {path}.{name} must be a dataclass, got {cls!r}")
    if name in table or name in {f.name for f in dataclasses.fields(parent)}:
        raise ValueError(f"config section {path}.{name} is registered twice")
    table[name] = cls


def register_search_section(name: str, cls: type) -> None:
    """Add `nas.search.<name>`, an algorithm's section, whose keys and defaults are the dataclass `cls`."""
    _add_section(_SEARCH_SECTIONS, SearchConf, "nas.search", name, cls)


def register_stage_section(name: str, cls: type) -> None:
    """Add `nas.<name>`, a registered stage's section, whose keys and defaults are the dataclass `cls`."""
    _add_section(_STAGE_SECTIONS, NasConf, "nas", name, cls)


def experiment_conf_class() -> type[ExperimentConf]:
    """`ExperimentConf` with every registered algorithm section in `nas.search` and every registered
    stage section in `nas` (a subclass made once per set of sections)."""
    algos, stages = tuple(sorted(_SEARCH_SECTIONS.items())), tuple(sorted(_STAGE_SECTIONS.items()))
    key = (algos, stages)
    if key not in _CLASSES:
        search = dataclasses.make_dataclass(
            "SearchConf", [(name, cls, field(default_factory=cls)) for name, cls in algos], bases=(SearchConf,))
        nas = dataclasses.make_dataclass(
            "NasConf", [("search", search, field(default_factory=search)),
                        *((name, cls, field(default_factory=cls)) for name, cls in stages)], bases=(NasConf,))
        _CLASSES[key] = dataclasses.make_dataclass("ExperimentConf", [("nas", nas, field(default_factory=nas))],
                                                   bases=(ExperimentConf,))
    return _CLASSES[key]


def field_kinds(cls: type | None = None, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], str]:
    """What overrides need to know beyond the current values: mappings that take arbitrary keys
    (Dict or Any fields: "free"), string fields (including nullable ones: "str") and number fields
    ("float": a file's `latency_target: 400000` must not make `=3.5` an error)."""
    cls = experiment_conf_class() if cls is None else cls
    kinds: dict[tuple[str, ...], str] = {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        inner = [a for a in typing.get_args(hint) if a is not type(None)]
        target = inner[0] if typing.get_origin(hint) is typing.Union and len(inner) == 1 else hint
        path = prefix + (f.name,)
        if dataclasses.is_dataclass(target):
            kinds.update(field_kinds(target, path))
        elif target is Any or typing.get_origin(target) is dict:
            kinds[path] = "free"
        elif target is str:
            kinds[path] = "str"
        elif target is float:
            kinds[path] = "float"
    return kinds


__all__ = [
    "AmpConf", "AmpDtype", "ArchTrainerConf", "BilevelOrder", "CheckpointConf", "CommonConf", "CostConf",
    "DARTS_PRIMITIVES", "DatasetConf", "DistillConf", "EvalConf", "EvalMode", "ExperimentConf", "FinalizerConf",
    "FinalizerRank",
    "HessianVectorProduct", "LoaderConf", "LossConf", "LrScheduleConf", "LrScheduleType", "ModelDescConf",
    "ModelStemsConf", "NasConf", "OptimizerConf", "OptimizerType", "PostTrainConf", "RankingCheckConf", "RayConf",
    "SPACE_SECTIONS", "SearchCombinationsConf", "SearchConf", "TimingConf", "TrainerConf",
    "ValidationConf", "WarmupConf", "experiment_conf_class", "field_kinds", "register_search_section", "register_stage_section",
]
