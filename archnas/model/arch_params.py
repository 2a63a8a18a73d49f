"""Architecture parameters and the strategy that turns them into edge weights.

All architecture parameters of a model live in one `ArchParams` module (`model.arch`), apart
from the weights, so no optimizer mixes them by accident. There is one alpha tensor per cell
type, `[n_edges, n_candidates]` with edges ordered node by node (the DARTS order), shared by all
cells of that type. Once per forward the model asks `cell_weights(cell_type)` and each cell hands
row i to edge i's mixed op.

The strategy is pluggable: a subclass registered with `register_edge_weights` and named in
`ModelDesc.edge_weights` changes how weights are computed (GDAS: a hard Gumbel-softmax sample
with straight-through gradients) or adds parameter sets (PC-DARTS: `betas` that scale each
node's input edges, returned as `CellWeights.edges`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from archnas.descs.model_desc import CellType
from archnas.errors import DescError


@dataclass
class CellWeights:
    """What one cell needs from the architecture parameters for one forward."""

    ops: Tensor  # [n_edges, n_candidates]: row i weighs the candidates of edge i
    edges: Tensor | None = None  # [n_edges]: a scale on edge i's output (edge normalization), None: 1
    # Host copy of the one candidate each edge's row selects, for strategies whose rows are one-hot
    # samples (GDAS): read back once per forward for all edges, not once per edge.
    chosen: list[int] | None = None


@dataclass(frozen=True)
class CellLayout:
    """The shape of a searchable cell: incoming edges of each node, candidates per edge."""

    edges_per_node: tuple[int, ...]
    n_candidates: int

    @property
    def n_edges(self) -> int:
        return sum(self.edges_per_node)


class ArchParams(nn.Module):
    """DARTS: each edge's weights are the softmax of its alpha row.

    Alphas start at 1e-3 * N(0, 1), as in the DARTS code, so every candidate starts equal.
    """

    def __init__(self, layouts: Mapping[CellType, CellLayout]):
        super().__init__()
        self.layouts = {t: layouts[t] for t in CellType if t in layouts}  # regular first, as DARTS
        self.alphas = nn.ParameterDict(
            [(str(t), nn.Parameter(1e-3 * torch.randn(lay.n_edges, lay.n_candidates))) for t, lay in self.layouts.items()]
        )

    def cell_weights(self, cell_type: CellType) -> CellWeights:
        return CellWeights(F.softmax(self.alphas[str(cell_type)], dim=-1))

    def all_cell_weights(self) -> dict[CellType, CellWeights]:
        """The weights of every cell type for one forward."""
        return {t: self.cell_weights(t) for t in self.layouts}


_STRATEGIES: dict[str, type[ArchParams]] = {}


def register_edge_weights(name: str, cls: type[ArchParams]) -> None:
    if name in _STRATEGIES:
        raise ValueError(f"edge-weights strategy {name!r} is registered twice")
    _STRATEGIES[name] = cls


def edge_weights_class(name: str) -> type[ArchParams]:
    if name not in _STRATEGIES:
        raise DescError(f"edge_weights: unknown strategy {name!r}; registered: {', '.join(sorted(_STRATEGIES))}")
    return _STRATEGIES[name]


register_edge_weights("softmax", ArchParams)
