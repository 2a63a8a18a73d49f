"""What a user names as "the architecture" (`nas.eval.final_desc`, `archnas stats --genotype/--desc`)
-> a checked ModelDesc at a given macro: desc files and genotypes with their op names checked
against the op registry, built by the ModelDescBuilder."""

from __future__ import annotations

from pathlib import Path

from archnas.config.schema.model_desc import ModelDescConf
from archnas.descs.dataset_info import DatasetInfo
from archnas.descs.desc_io import load_desc
from archnas.descs.genotypes import Genotype, parse_genotype, resolve_genotype
from archnas.descs.model_desc import ModelDesc
from archnas.model.builder import ModelDescBuilder
from archnas.ops.registry import registered_ops


def load_checked_desc(path: str | Path) -> ModelDesc:
    """A desc file whose op names are all registered (else a DescError naming the file and op)."""
    return load_desc(path, known_ops=registered_ops())


def checked_genotype(spec: str) -> Genotype:
    """A named genotype or a genotype string/YAML whose ops are all registered."""
    return resolve_genotype(spec, known_ops=registered_ops())


def parse_checked_genotype(text: str, source: str = "genotype") -> Genotype:
    return parse_genotype(text, source, known_ops=registered_ops())


def genotype_to_desc(genotype: Genotype, conf: ModelDescConf, dataset_info: DatasetInfo,
                     builder: ModelDescBuilder | None = None) -> ModelDesc:
    """The network of `conf`'s macro with the genotype's cells (e.g. DARTS_V2 at 36 ch, 20 cells)."""
    return (builder or ModelDescBuilder()).build_with_nodes(conf, dataset_info, genotype.cell_nodes())


def desc_from_spec(spec: str, conf: ModelDescConf, dataset_info: DatasetInfo,
                   builder: ModelDescBuilder | None = None) -> ModelDesc:
    """A desc file (its first regular and reduction cells are the template), a named genotype
    (DARTS_V2, ...) or a genotype string, built at `conf`'s macro."""
    builder = builder or ModelDescBuilder()
    if spec.endswith((".yaml", ".yml")) or Path(spec).is_file():
        return builder.build(conf, dataset_info, template=load_checked_desc(spec))
    return genotype_to_desc(checked_genotype(spec), conf, dataset_info, builder)
