"""`Model`: a ModelDesc turned into modules, for the search supernet and the final network alike.

Chained model stems feed the first cell (the last two stem outputs; one stem feeds both inputs);
each cell reads the two previous outputs; an aux tower may follow a cell (used in training only,
as in DARTS); a pool and a logits op finish. `affine` applies to the cells' BatchNorms (DARTS
searches with non-affine cells); model stems, the head and aux towers are always affine, as in
DARTS's search network. `droppath` gives every droppable edge op a drop-path, whose probability
`drop_path_prob(p)` sets.

A supernet keeps its architecture parameters in an `ArchStore` (`model.arch`), one label per
searchable cell type; every forward binds the store's weights once, and each searchable cell and
mixed op reads its own label and row from that binding (no weights in forward arguments).
"""

from __future__ import annotations

from torch import Tensor, nn

from archnas.descs.model_desc import CellDesc, CellType, ModelDesc
from archnas.errors import DescError
from archnas.model.aux_tower import AuxTower
from archnas.model.cell import Cell
from archnas.ops.drop_path import DropPath
from archnas.ops.registry import Op
from archnas.space.store import ArchStore, ChoiceSpec, Searchable


class Model(Searchable):
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
        specs = self._arch_specs()
        self.arch: ArchStore | None = ArchStore(specs) if specs else None
        labels = {spec.label for spec in specs}
        for cell in self.cells:
            if str(cell.cell_type) in labels:
                cell.bind_arch(self.arch.binding, str(cell.cell_type))

    def make_cell(self, desc: CellDesc, affine: bool, droppath: bool) -> Cell:
        """Override to build cells another way (e.g. a fused search cell over the same modules)."""
        return Cell(desc, affine, droppath)

    def _arch_specs(self) -> list[ChoiceSpec]:
        """One label per cell type with mixed-op edges (DARTS order: regular first), its rows the
        type's edges; all cells of a type must have the same edges and share one set of parameters."""
        specs: dict[CellType, ChoiceSpec] = {}
        owners: dict[CellType, int] = {}
        by_id = {c.id: c for c in self.desc.cells}
        for cell_desc, cell in zip(self.desc.cells, self.cells):
            edges = cell.edges
            searchable = [e.searchable for e in edges]
            if not any(searchable):
                continue
            where = f"cell {cell_desc.id}"
            if not all(searchable):
                raise DescError(f"{where}: mixes mixed-op and fixed edges; a searchable cell needs mixed ops on all edges")
            names = {tuple(c.name for c in e.op.desc.children) for e in edges}
            if len(names) != 1:
                raise DescError(f"{where}: edges have different candidates {sorted(names)}")
            rows = tuple(f"n{j}_in{e.input_ids[0]}" for j, node in enumerate(cell.dag) for e in node)
            spec = ChoiceSpec(str(cell_desc.cell_type), names.pop(), rows, tuple(len(node) for node in cell.dag))
            source = by_id.get(cell_desc.trainables_from)
            if source is None or source.cell_type != cell_desc.cell_type:
                raise DescError(f"{where}: trainables_from={cell_desc.trainables_from} must name a cell of the same type")
            ctype = cell_desc.cell_type
            if ctype in specs and (specs[ctype] != spec or owners[ctype] != source.id):
                raise DescError(
                    f"{where}: all {ctype} cells must share one set of architecture parameters "
                    f"(same edges and candidates, same trainables_from as cell {owners[ctype]})"
                )
            specs[ctype], owners[ctype] = spec, source.id
        return [specs[t] for t in CellType if t in specs]

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        with self.bound_arch():
            outs = []
            for stem in self.model_stems:
                x = stem(x)
                outs.append(x)
            s0, s1 = outs[-2] if len(outs) > 1 else outs[-1], outs[-1]
            aux_logits = None
            for i, cell in enumerate(self.cells):
                s0, s1 = s1, cell(s0, s1)
                if self.training and str(i) in self.aux_towers:
                    aux_logits = self.aux_towers[str(i)](s1)
            return self.logits_op(self.pool_op(s1)), aux_logits

    def alphas(self, cell_type: CellType | str) -> nn.Parameter:
        """The `[n_edges, n_candidates]` architecture parameters of a cell type."""
        if self.arch is None or str(cell_type) not in self.arch.specs:
            raise KeyError(f"this model has no architecture parameters for {cell_type!s} cells")
        return self.arch.alpha(str(cell_type))

    def drop_path_prob(self, p: float) -> None:
        for m in self.modules():
            if isinstance(m, DropPath):
                m.prob = p

