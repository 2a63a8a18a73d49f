"""`Model`: a ModelDesc turned into modules, for the search supernet and the final network alike.

Chained model stems feed the first cell (the last two stem outputs; one stem feeds both inputs);
each cell reads the two previous outputs; an aux tower may follow a cell (used in training only,
as in DARTS); a pool and a logits op finish. `affine` applies to the cells' BatchNorms (DARTS
searches with non-affine cells); model stems, the head and aux towers are always affine, as in
DARTS's search network. `droppath` gives every droppable edge op a drop-path, whose probability
`drop_path_prob(p)` sets.
"""

from __future__ import annotations

from typing import Iterator

from torch import Tensor, nn

from archnas.descs.model_desc import CellDesc, CellType, ModelDesc
from archnas.errors import DescError
from archnas.model.arch_params import ArchParams, CellLayout, edge_weights_class
from archnas.model.aux_tower import AuxTower
from archnas.model.cell import Cell
from archnas.ops.drop_path import DropPath
from archnas.ops.registry import Op


class Model(nn.Module):
    def __init__(self, desc: ModelDesc, droppath: bool, affine: bool):
        super().__init__()
        if not desc.model_stems:
            raise DescError("model desc: needs at least one model stem")
        self.desc = desc
        self.model_stems = nn.ModuleList(Op.create(s, affine=True) for s in desc.model_stems)
        self.cells = nn.ModuleList(self.make_cell(c, affine, droppath) for c in desc.cells)
        self.aux_towers = nn.ModuleDict({str(i): AuxTower(a) for i, a in enumerate(desc.aux_towers) if a is not None})
        self.pool_op = Op.create(desc.pool_op, affine=True)
        self.logits_op = Op.create(desc.logits_op, affine=True)
        layouts = self._searchable_layouts()
        self.arch: ArchParams | None = edge_weights_class(desc.edge_weights)(layouts) if layouts else None

    def make_cell(self, desc: CellDesc, affine: bool, droppath: bool) -> Cell:
        """Override to build cells another way (e.g. a fused search cell over the same modules)."""
        return Cell(desc, affine, droppath)

    def _searchable_layouts(self) -> dict[CellType, CellLayout]:
        """One layout per cell type with mixed-op edges; all cells of a type must agree and share."""
        layouts: dict[CellType, CellLayout] = {}
        owners: dict[CellType, int] = {}
        by_id = {c.id: c for c in self.desc.cells}
        for cell_desc, cell in zip(self.desc.cells, self.cells):
            edges = [e for node in cell.dag for e in node]
            searchable = [e.searchable for e in edges]
            if not any(searchable):
                continue
            where = f"cell {cell_desc.id}"
            if not all(searchable):
                raise DescError(f"{where}: mixes mixed-op and fixed edges; a searchable cell needs mixed ops on all edges")
            n_candidates = {len(e.op.ops) for e in edges}
            if len(n_candidates) != 1:
                raise DescError(f"{where}: edges have different numbers of candidates {sorted(n_candidates)}")
            layout = CellLayout(tuple(len(node) for node in cell.dag), n_candidates.pop())
            source = by_id.get(cell_desc.trainables_from)
            if source is None or source.cell_type != cell_desc.cell_type:
                raise DescError(f"{where}: trainables_from={cell_desc.trainables_from} must name a cell of the same type")
            ctype = cell_desc.cell_type
            if ctype in layouts and (layouts[ctype] != layout or owners[ctype] != source.id):
                raise DescError(
                    f"{where}: all {ctype} cells must share one set of architecture parameters "
                    f"(same layout, same trainables_from as cell {owners[ctype]})"
                )
            layouts[ctype], owners[ctype] = layout, source.id
        return layouts

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        outs = []
        for stem in self.model_stems:
            x = stem(x)
            outs.append(x)
        s0, s1 = outs[-2] if len(outs) > 1 else outs[-1], outs[-1]
        weights = {} if self.arch is None else self.arch.all_cell_weights()
        aux_logits = None
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, weights.get(cell.cell_type))
            if self.training and str(i) in self.aux_towers:
                aux_logits = self.aux_towers[str(i)](s1)
        return self.logits_op(self.pool_op(s1)), aux_logits

    def alphas(self, cell_type: CellType | str) -> nn.Parameter:
        if self.arch is None or str(cell_type) not in self.arch.alphas:
            raise KeyError(f"this model has no architecture parameters for {cell_type!s} cells")
        return self.arch.alphas[str(cell_type)]

    def named_arch_params(self) -> Iterator[tuple[str, nn.Parameter]]:
        if self.arch is not None:
            yield from self.arch.named_parameters(prefix="arch")

    def arch_params(self) -> Iterator[nn.Parameter]:
        for _, p in self.named_arch_params():
            yield p

    def named_weights(self) -> Iterator[tuple[str, nn.Parameter]]:
        arch = {id(p) for p in self.arch_params()}
        for name, p in self.named_parameters():
            if id(p) not in arch:
                yield name, p

    def weights(self) -> Iterator[nn.Parameter]:
        for _, p in self.named_weights():
            yield p

    def drop_path_prob(self, p: float) -> None:
        for m in self.modules():
            if isinstance(m, DropPath):
                m.prob = p
