"""Architecture descriptions: the desc tree, its safe YAML files, the builder and genotypes.

Submodules import each other by module path (not through this package), so `archnas.ops`, which
needs the desc tree, can be imported first without a cycle.
"""

from archnas.descs.builder import CellNodes, ModelDescBuilder, template_nodes
from archnas.descs.dataset_info import DatasetInfo
from archnas.descs.desc_io import SCHEMA_VERSION, desc_from_yaml, desc_to_yaml, load_desc, save_desc
from archnas.descs.genotypes import (
    Genotype, desc_to_genotype, genotype_to_desc, named_genotype, named_genotypes, parse_genotype, resolve_genotype,
)
from archnas.descs.model_desc import AuxTowerDesc, CellDesc, CellType, ConvMacroParams, EdgeDesc, ModelDesc, NodeDesc, OpDesc
from archnas.descs.resolve import desc_from_spec

__all__ = [
    "AuxTowerDesc", "CellDesc", "CellNodes", "CellType", "ConvMacroParams", "DatasetInfo", "EdgeDesc", "Genotype",
    "ModelDesc", "ModelDescBuilder", "NodeDesc", "OpDesc", "SCHEMA_VERSION", "desc_from_spec", "desc_from_yaml",
    "desc_to_genotype", "desc_to_yaml", "genotype_to_desc", "load_desc", "named_genotype", "named_genotypes",
    "parse_genotype", "resolve_genotype", "save_desc", "template_nodes",
]
