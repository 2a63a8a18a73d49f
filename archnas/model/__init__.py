"""Models built from descs: the ModelDescBuilder, Model, Cell, DagEdge, AuxTower, and the
conversions from what a user names (desc files, genotypes) to checked descs."""

import archnas.ops  # noqa: F401  (registers the built-in ops)
from archnas.model.aux_tower import AuxTower
from archnas.model.builder import ModelDescBuilder, template_nodes
from archnas.model.cell import Cell
from archnas.model.dag_edge import DagEdge
from archnas.model.model import Model
from archnas.model.resolve import (
           checked_genotype,
           desc_from_spec,
           genotype_to_desc,
           load_checked_desc,
)

__all__ = ["AuxTower", "Cell", "DagEdge", "Model", "ModelDescBuilder", "checked_genotype", "desc_from_spec",
           "genotype_to_desc", "load_checked_desc", "template_nodes"]
