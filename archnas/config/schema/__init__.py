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
from archnas.config.schema.model_desc import DARTS_PRIMITIVES, ModelDescConf, ModelStemsConf
from archnas.config.schema.nas import (
    ArchTrainerConf,
    BilevelOrder,
    EvalConf,
    FinalizerConf,
    FinalizerRank,
    GdasConf,
    HessianVectorProduct,
    NasConf,
    PcDartsConf,
    PostTrainConf,
    RandomSearchConf,
    SearchCombinationsConf,
    SearchConf,
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


def field_kinds(cls: type = ExperimentConf, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], str]:
    """What overrides need to know beyond the current values: mappings that take arbitrary keys
    (Dict or Any fields: "free") and string fields (including nullable ones: "str")."""
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
    return kinds


__all__ = [
    "AmpConf", "AmpDtype", "ArchTrainerConf", "BilevelOrder", "CheckpointConf", "CommonConf",
    "DARTS_PRIMITIVES", "DatasetConf", "EvalConf", "ExperimentConf", "FinalizerConf", "FinalizerRank",
    "GdasConf", "HessianVectorProduct", "LoaderConf", "LossConf", "LrScheduleConf", "LrScheduleType", "ModelDescConf",
    "ModelStemsConf", "NasConf", "OptimizerConf", "OptimizerType", "PcDartsConf", "PostTrainConf",
    "RandomSearchConf", "RayConf", "SearchCombinationsConf", "SearchConf", "TrainerConf",
    "ValidationConf", "WarmupConf", "field_kinds",
]
