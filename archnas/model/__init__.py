"""Models built from descs: Model, Cell, DagEdge, AuxTower and the architecture parameters."""

from archnas import ops  # noqa: F401  (registers the built-in ops)
from archnas.model.arch_params import ArchParams, CellLayout, CellWeights, edge_weights_class, register_edge_weights
from archnas.model.aux_tower import AuxTower
from archnas.model.cell import Cell
from archnas.model.dag_edge import DagEdge
from archnas.model.model import Model

__all__ = [
    "ArchParams", "AuxTower", "Cell", "CellLayout", "CellWeights", "DagEdge", "Model", "edge_weights_class",
    "register_edge_weights",
]
