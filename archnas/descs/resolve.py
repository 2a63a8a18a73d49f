"""What a user names as "the architecture" (`nas.eval.final_desc`, `archnas stats --genotype/--desc`)
-> a ModelDesc at a given macro."""

from __future__ import annotations

from pathlib import Path

from archnas.config.schema.model_desc import ModelDescConf
from archnas.descs.builder import ModelDescBuilder
from archnas.descs.dataset_info import DatasetInfo
from archnas.descs.desc_io import load_desc
from archnas.descs.genotypes import genotype_to_desc, resolve_genotype
from archnas.descs.model_desc import ModelDesc


def desc_from_spec(spec: str, conf: ModelDescConf, dataset_info: DatasetInfo,
                   builder: ModelDescBuilder | None = None) -> ModelDesc:
    """A desc file (its first regular and reduction cells are the template), a named genotype
    (DARTS_V2, ...) or a genotype string, built at `conf`'s macro."""
    builder = builder or ModelDescBuilder()
    if spec.endswith((".yaml", ".yml")) or Path(spec).is_file():
        return builder.build(conf, dataset_info, template=load_desc(spec))
    return genotype_to_desc(resolve_genotype(spec), conf, dataset_info, builder)
