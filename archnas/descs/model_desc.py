"""The description tree: ModelDesc > CellDesc > NodeDesc > EdgeDesc > OpDesc, as plain data.

A desc says what a model is without being one: it is deep-copied, saved as YAML, hashed for
checkpoints, diffed, and rescaled (a searched cell copied into a bigger eval macro) without
constructing a single module. `archnas.model.Model` turns it into modules; the search supernet
and the final network are both just descs.

Conventions:
- shapes are `[channels, height, width]` lists of one sample;
- `OpDesc.params["conv"]` is the op's `ConvMacroParams`; every other param is a plain YAML value;
- trainables (weights inherited through a desc) are tensors; they never take part in `==` or in
  `fingerprint()`, and `to_dict` only writes a reference to them (see `archnas.descs.desc_io`).

`to_dict` and `from_fields` are not written per class: `archnas.descs.serialize.Desc` derives
both from the fields, so a new field is saved, loaded and checked by declaring it (with
`field(metadata=...)` where its type alone does not say how).
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Iterator, Optional

from torch import Tensor

from archnas.descs.fields import Fields
from archnas.descs.serialize import Desc, TrainablesRefs, by_reference, checked, shape, typed_keys
from archnas.errors import DescError


class CellType(StrEnum):
    regular = "regular"
    reduction = "reduction"


@dataclass
class ConvMacroParams(Desc):
    """Channels in and out of an op; ops that do not change channels have ch_in == ch_out."""

    ch_in: int
    ch_out: int


@dataclass
class OpDesc(Desc, path="op"):
    """One op: a registered name, its params, and optionally candidate children (the mixed op).

    `in_len` is how many tensors the op consumes (1 for edge ops, n_nodes for a cell post-op).
    `children_ins[i]` says which of the op's inputs child `i` reads; None means all read input 0.
    """

    name: str
    params: dict[str, Any] = field(default_factory=dict, metadata=typed_keys(conv=ConvMacroParams))
    in_len: int = 1
    trainables: Optional[dict[str, Tensor]] = field(default=None, compare=False, repr=False,
                                                    metadata=by_reference())
    children: list["OpDesc"] = field(default_factory=list)
    children_ins: Optional[list[int]] = None

    @property
    def conv(self) -> ConvMacroParams:
        return self.params["conv"]

    def clone(self, conv_params: ConvMacroParams | None = None, clear_trainables: bool = False) -> "OpDesc":
        """A deep copy, optionally at other channels and without inherited weights. Children get
        the new channels too, or the same fraction of them when they had a fraction of this op's
        (PC-DARTS's candidates run on C/k channels of a C-channel edge)."""
        out = copy.deepcopy(self)
        if conv_params is not None:
            out._set_channels(conv_params)
        if clear_trainables:
            for op in out.walk():
                op.trainables = None
        return out

    def _set_channels(self, conv: ConvMacroParams) -> None:
        old = self.params.get("conv")
        if old is not None:
            self.params["conv"] = ConvMacroParams(conv.ch_in, conv.ch_out)
        for child in self.children:
            own = child.params.get("conv")
            if old is not None and own is not None and own != old:
                child._set_channels(ConvMacroParams(own.ch_in * conv.ch_in // old.ch_in, own.ch_out * conv.ch_out // old.ch_out))
            else:
                child._set_channels(conv)

    def walk(self) -> Iterator["OpDesc"]:
        """This op and all its descendants, depth first."""
        yield self
        for child in self.children:
            yield from child.walk()

    def candidate(self, name: str) -> "OpDesc":
        """The child op named `name` (a mixed op's candidate), as a standalone copy."""
        for child in self.children:
            if child.name == name:
                return copy.deepcopy(child)
        names = ", ".join(c.name for c in self.children) or "none"
        raise DescError(f"op {self.name!r} has no candidate {name!r}; its candidates: {names}")


@dataclass
class EdgeDesc(Desc, path="edge"):
    """An edge of the cell DAG: an op reading the states listed in `input_ids`.

    State ids: 0 and 1 are the cell's two stems (previous-previous and previous cell), 2 + j is
    node j.
    """

    op_desc: OpDesc
    input_ids: list[int]

    def clone(self, conv_params: ConvMacroParams | None = None, clear_trainables: bool = False) -> "EdgeDesc":
        return EdgeDesc(self.op_desc.clone(conv_params, clear_trainables), list(self.input_ids))

    def finalized(self, primitive: str) -> "EdgeDesc":
        """This supernet edge with its mixed op replaced by the candidate `primitive`.

        Finalizers call this for every edge they keep; the candidate keeps whatever trainables it
        carries, so weights inherited from the supernet survive finalization when present.
        """
        return EdgeDesc(self.op_desc.candidate(primitive), list(self.input_ids))


@dataclass
class NodeDesc(Desc, path="node"):
    """A node sums its edges' outputs; `conv_params` are the node's channels."""

    edges: list[EdgeDesc]
    conv_params: ConvMacroParams


@dataclass
class AuxTowerDesc(Desc):
    """The auxiliary classifier after one cell; `in_size` is that cell's output (H, W).

    `bn_last`: BatchNorm after its 768-channel conv (DARTS CIFAR has it, DARTS ImageNet not).
    """

    ch_in: int
    n_classes: int
    stride: int
    in_size: list[int]
    bn_last: bool = True


def _named(path: str, op: OpDesc) -> Iterator[tuple[str, OpDesc]]:
    yield path, op
    for i, child in enumerate(op.children):
        yield from _named(f"{path}.children.{i}", child)


@dataclass
class CellDesc(Desc, path="cell"):
    """One cell: two stems preprocess its inputs, nodes form a DAG, a post-op merges the nodes.

    `trainables_from` is the id of the cell whose architecture parameters this cell uses; all
    cells of one type share the first such cell's.
    """

    id: int
    cell_type: CellType
    stems: list[OpDesc]
    stem_shapes: list[list[int]] = field(metadata=shape())
    nodes: list[NodeDesc]
    node_shapes: list[list[int]] = field(metadata=shape())
    post_op: OpDesc
    out_shape: list[int] = field(metadata=shape())
    trainables_from: int

    def clone(self, id: int) -> "CellDesc":
        """A deep copy under a new id; a cell that shared its own parameters shares the copy's."""
        out = copy.deepcopy(self)
        out.id = id
        if self.trainables_from == self.id:
            out.trainables_from = id
        return out

    def edges(self) -> list[EdgeDesc]:
        """All edges in architecture-parameter order: node by node, within a node as listed."""
        return [e for node in self.nodes for e in node.edges]


def _one_aux_entry_per_cell(desc: ModelDesc) -> str | None:
    n_cells, n_aux = len(desc.cells), len(desc.aux_towers)
    return None if n_aux == n_cells else f"expected one entry per cell ({n_cells}), got {n_aux}"


@dataclass
class ModelDesc(Desc):
    """A whole network.

    Model stems are chained (each reads the previous one's output); the last two stem outputs
    feed the first cell (one stem feeds both inputs). `aux_towers[i]` is the tower after cell
    `i`, or None. How a supernet weighs its candidates is not part of the desc: it is the search
    algorithm's strategy (`archnas.nas.strategy`).
    """

    model_stems: list[OpDesc]
    cells: list[CellDesc]
    aux_towers: list[Optional[AuxTowerDesc]] = field(metadata=checked(_one_aux_entry_per_cell))
    pool_op: OpDesc
    logits_op: OpDesc

    def clone(self) -> "ModelDesc":
        return copy.deepcopy(self)

    def first_cell(self, cell_type: CellType) -> CellDesc | None:
        return next((c for c in self.cells if c.cell_type == cell_type), None)

    @classmethod
    def from_dict(cls, data: Any, where: str = "<dict>", trainables: TrainablesRefs | None = None) -> "ModelDesc":
        f = Fields(data, where)
        return cls.from_fields(f, trainables)

    def named_ops(self) -> Iterator[tuple[str, OpDesc]]:
        """Every op desc with its dotted path (the paths `to_dict` uses for trainables)."""
        groups: list[tuple[str, OpDesc]] = [(f"model_stems.{i}", s) for i, s in enumerate(self.model_stems)]
        for i, cell in enumerate(self.cells):
            groups += [(f"cells.{i}.stems.{j}", s) for j, s in enumerate(cell.stems)]
            groups += [(f"cells.{i}.nodes.{j}.edges.{k}.op_desc", e.op_desc)
                       for j, node in enumerate(cell.nodes) for k, e in enumerate(node.edges)]
            groups.append((f"cells.{i}.post_op", cell.post_op))
        groups += [("pool_op", self.pool_op), ("logits_op", self.logits_op)]
        for path, op in groups:
            yield from _named(path, op)

    def fingerprint(self) -> str:
        """A stable hash of the architecture (trainables excluded), for checkpoints to compare."""
        blob = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]
