"""Architecture descriptions as plain data: the desc tree, its safe YAML files, genotypes.

Nothing here builds or knows an op: descs are what a model is, not a model (`archnas.model`
builds them; the op registry checks their names there).
"""

from archnas.descs.dataset_info import DatasetInfo
from archnas.descs.desc_io import SCHEMA_VERSION, desc_from_yaml, desc_to_yaml, load_desc, save_desc
from archnas.descs.genotypes import (
    CellNodes, Genotype, desc_to_genotype, named_genotype, named_genotypes, parse_genotype, resolve_genotype,
)
from archnas.descs.model_desc import AuxTowerDesc, CellDesc, CellType, ConvMacroParams, EdgeDesc, ModelDesc, NodeDesc, OpDesc

__all__ = [
    "AuxTowerDesc", "CellDesc", "CellNodes", "CellType", "ConvMacroParams", "DatasetInfo", "EdgeDesc", "Genotype",
    "ModelDesc", "NodeDesc", "OpDesc", "SCHEMA_VERSION", "desc_from_yaml", "desc_to_genotype", "desc_to_yaml",
    "load_desc", "named_genotype", "named_genotypes", "parse_genotype", "resolve_genotype", "save_desc",
]
