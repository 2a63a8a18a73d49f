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
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Iterator, Optional

from torch import Tensor

from archnas.descs.fields import Fields, describe
from archnas.errors import DescError

# Trainables collected by `to_dict`: a reference key -> the op's state dict.
TrainablesRefs = dict[str, dict[str, Tensor]]


class CellType(StrEnum):
    regular = "regular"
    reduction = "reduction"


@dataclass
class ConvMacroParams:
    """Channels in and out of an op; ops that do not change channels have ch_in == ch_out."""

    ch_in: int
    ch_out: int

    def to_dict(self) -> dict[str, int]:
        return {"ch_in": self.ch_in, "ch_out": self.ch_out}

    @classmethod
    def from_fields(cls, f: Fields) -> "ConvMacroParams":
        out = cls(f.get("ch_in", int), f.get("ch_out", int))
        f.done()
        return out


def _check_plain(value: Any, f: Fields, key: str) -> Any:
    """Op params other than `conv` must survive `yaml.safe_dump` and JSON unchanged."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, list):
        return [_check_plain(v, f, f"{key}[{i}]") for i, v in enumerate(value)]
    raise f.error(key, f"op params must be YAML scalars or lists, got {describe(value)}")


@dataclass
class OpDesc:
    """One op: a registered name, its params, and optionally candidate children (the mixed op).

    `in_len` is how many tensors the op consumes (1 for edge ops, n_nodes for a cell post-op).
    `children_ins[i]` says which of the op's inputs child `i` reads; None means all read input 0.
    """

    name: str
    params: dict[str, Any] = field(default_factory=dict)
    in_len: int = 1
    trainables: Optional[dict[str, Tensor]] = field(default=None, compare=False, repr=False)
    children: list["OpDesc"] = field(default_factory=list)
    children_ins: Optional[list[int]] = None

    @property
    def conv(self) -> ConvMacroParams:
        return self.params["conv"]

    def clone(self, conv_params: ConvMacroParams | None = None, clear_trainables: bool = False) -> "OpDesc":
        """A deep copy, optionally at other channels (children too) and without inherited weights."""
        out = copy.deepcopy(self)
        for op in out.walk():
            if conv_params is not None and "conv" in op.params:
                op.params["conv"] = copy.deepcopy(conv_params)
            if clear_trainables:
                op.trainables = None
        return out

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

    def to_dict(self, refs: TrainablesRefs | None = None, path: str = "op") -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "params": {k: (v.to_dict() if isinstance(v, ConvMacroParams) else v) for k, v in self.params.items()},
            "in_len": self.in_len,
            "children": [c.to_dict(refs, f"{path}.children.{i}") for i, c in enumerate(self.children)],
            "children_ins": None if self.children_ins is None else list(self.children_ins),
        }
        if refs is not None and self.trainables is not None:
            refs[path] = self.trainables
            out["trainables"] = path
        return out

    @classmethod
    def from_fields(cls, f: Fields, trainables: TrainablesRefs | None) -> "OpDesc":
        params_f = f.sub("params")
        params: dict[str, Any] = {}
        for key in list(params_f.data):
            if key == "conv":
                params[key] = ConvMacroParams.from_fields(params_f.sub(key))
            else:
                params[key] = _check_plain(params_f.get(key, object), params_f, key)
        params_f.done()
        ref = f.get("trainables", str, default=None, nullable=True)
        loaded = None
        if ref is not None:
            if trainables is None or ref not in trainables:
                raise f.error("trainables", f"refers to weights {ref!r}, but no trainables file with them was given")
            loaded = trainables[ref]
        children_ins = f.get("children_ins", list, default=None, nullable=True)
        out = cls(
            name=f.get("name", str),
            params=params,
            in_len=f.get("in_len", int),
            trainables=loaded,
            children=[cls.from_fields(c, trainables) for c in f.subs("children")],
            children_ins=None if children_ins is None else f.ints("children_ins"),
        )
        f.done()
        return out


@dataclass
class EdgeDesc:
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

    def to_dict(self, refs: TrainablesRefs | None = None, path: str = "edge") -> dict[str, Any]:
        return {"op_desc": self.op_desc.to_dict(refs, f"{path}.op_desc"), "input_ids": list(self.input_ids)}

    @classmethod
    def from_fields(cls, f: Fields, trainables: TrainablesRefs | None) -> "EdgeDesc":
        out = cls(OpDesc.from_fields(f.sub("op_desc"), trainables), f.ints("input_ids"))
        f.done()
        return out


@dataclass
class NodeDesc:
    """A node sums its edges' outputs; `conv_params` are the node's channels."""

    edges: list[EdgeDesc]
    conv_params: ConvMacroParams

    def to_dict(self, refs: TrainablesRefs | None = None, path: str = "node") -> dict[str, Any]:
        return {
            "edges": [e.to_dict(refs, f"{path}.edges.{i}") for i, e in enumerate(self.edges)],
            "conv_params": self.conv_params.to_dict(),
        }

    @classmethod
    def from_fields(cls, f: Fields, trainables: TrainablesRefs | None) -> "NodeDesc":
        out = cls(
            [EdgeDesc.from_fields(e, trainables) for e in f.subs("edges")],
            ConvMacroParams.from_fields(f.sub("conv_params")),
        )
        f.done()
        return out


@dataclass
class AuxTowerDesc:
    """The auxiliary classifier after one cell; `in_size` is that cell's output (H, W).

    `bn_last`: BatchNorm after its 768-channel conv (DARTS CIFAR has it, DARTS ImageNet not).
    """

    ch_in: int
    n_classes: int
    stride: int
    in_size: list[int]
    bn_last: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {"ch_in": self.ch_in, "n_classes": self.n_classes, "stride": self.stride, "in_size": list(self.in_size),
                "bn_last": self.bn_last}

    @classmethod
    def from_fields(cls, f: Fields) -> "AuxTowerDesc":
        out = cls(f.get("ch_in", int), f.get("n_classes", int), f.get("stride", int), f.ints("in_size"),
                  f.get("bn_last", bool))
        f.done()
        return out


def _named(path: str, op: OpDesc) -> Iterator[tuple[str, OpDesc]]:
    yield path, op
    for i, child in enumerate(op.children):
        yield from _named(f"{path}.children.{i}", child)


def _check_shape(value: Any, f: Fields, name: str) -> list[int]:
    ok = isinstance(value, list) and len(value) == 3
    ok = ok and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    if not ok:
        raise DescError(f"{f.where}: {name}: expected [channels, height, width] ints, got {describe(value)}")
    return list(value)


def _shape(f: Fields, key: str) -> list[int]:
    return _check_shape(f.get(key, list), f, f.name(key))


@dataclass
class CellDesc:
    """One cell: two stems preprocess its inputs, nodes form a DAG, a post-op merges the nodes.

    `trainables_from` is the id of the cell whose architecture parameters this cell uses; all
    cells of one type share the first such cell's.
    """

    id: int
    cell_type: CellType
    stems: list[OpDesc]
    stem_shapes: list[list[int]]
    nodes: list[NodeDesc]
    node_shapes: list[list[int]]
    post_op: OpDesc
    out_shape: list[int]
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

    def to_dict(self, refs: TrainablesRefs | None = None, path: str = "cell") -> dict[str, Any]:
        return {
            "id": self.id,
            "cell_type": self.cell_type.value,
            "stems": [s.to_dict(refs, f"{path}.stems.{i}") for i, s in enumerate(self.stems)],
            "stem_shapes": [list(s) for s in self.stem_shapes],
            "nodes": [n.to_dict(refs, f"{path}.nodes.{i}") for i, n in enumerate(self.nodes)],
            "node_shapes": [list(s) for s in self.node_shapes],
            "post_op": self.post_op.to_dict(refs, f"{path}.post_op"),
            "out_shape": list(self.out_shape),
            "trainables_from": self.trainables_from,
        }

    @classmethod
    def from_fields(cls, f: Fields, trainables: TrainablesRefs | None) -> "CellDesc":
        type_name = f.get("cell_type", str)
        if type_name not in CellType.__members__:
            raise f.error("cell_type", f"expected one of {', '.join(CellType.__members__)}, got {type_name!r}")
        stems_f = f.subs("stems")
        nodes_f = f.subs("nodes")
        out = cls(
            id=f.get("id", int),
            cell_type=CellType(type_name),
            stems=[OpDesc.from_fields(s, trainables) for s in stems_f],
            stem_shapes=_shape_list(f, "stem_shapes"),
            nodes=[NodeDesc.from_fields(n, trainables) for n in nodes_f],
            node_shapes=_shape_list(f, "node_shapes"),
            post_op=OpDesc.from_fields(f.sub("post_op"), trainables),
            out_shape=_shape(f, "out_shape"),
            trainables_from=f.get("trainables_from", int),
        )
        f.done()
        return out


def _shape_list(f: Fields, key: str) -> list[list[int]]:
    return [_check_shape(s, f, f"{f.name(key)}[{i}]") for i, s in enumerate(f.get(key, list))]


@dataclass
class ModelDesc:
    """A whole network.

    Model stems are chained (each reads the previous one's output); the last two stem outputs
    feed the first cell (one stem feeds both inputs). `aux_towers[i]` is the tower after cell
    `i`, or None. `edge_weights` names how cells turn architecture parameters into edge weights
    (a strategy registered in `archnas.model.arch_params`); it only matters for supernets.
    """

    model_stems: list[OpDesc]
    cells: list[CellDesc]
    aux_towers: list[Optional[AuxTowerDesc]]
    pool_op: OpDesc
    logits_op: OpDesc
    edge_weights: str = "softmax"

    def clone(self) -> "ModelDesc":
        return copy.deepcopy(self)

    def first_cell(self, cell_type: CellType) -> CellDesc | None:
        return next((c for c in self.cells if c.cell_type == cell_type), None)

    def to_dict(self, refs: TrainablesRefs | None = None) -> dict[str, Any]:
        """Plain data for `yaml.safe_dump`; with `refs`, trainables are collected there by key."""
        return {
            "model_stems": [s.to_dict(refs, f"model_stems.{i}") for i, s in enumerate(self.model_stems)],
            "cells": [c.to_dict(refs, f"cells.{i}") for i, c in enumerate(self.cells)],
            "aux_towers": [None if a is None else a.to_dict() for a in self.aux_towers],
            "pool_op": self.pool_op.to_dict(refs, "pool_op"),
            "logits_op": self.logits_op.to_dict(refs, "logits_op"),
            "edge_weights": self.edge_weights,
        }

    @classmethod
    def from_dict(cls, data: Any, where: str = "<dict>", trainables: TrainablesRefs | None = None) -> "ModelDesc":
        f = Fields(data, where)
        return cls.from_fields(f, trainables)

    @classmethod
    def from_fields(cls, f: Fields, trainables: TrainablesRefs | None = None) -> "ModelDesc":
        cells = [CellDesc.from_fields(c, trainables) for c in f.subs("cells")]
        aux = [None if a is None else AuxTowerDesc.from_fields(a) for a in f.subs("aux_towers", nullable_items=True)]
        if len(aux) != len(cells):
            raise f.error("aux_towers", f"expected one entry per cell ({len(cells)}), got {len(aux)}")
        out = cls(
            model_stems=[OpDesc.from_fields(s, trainables) for s in f.subs("model_stems")],
            cells=cells,
            aux_towers=aux,
            pool_op=OpDesc.from_fields(f.sub("pool_op"), trainables),
            logits_op=OpDesc.from_fields(f.sub("logits_op"), trainables),
            edge_weights=f.get("edge_weights", str),
        )
        f.done()
        return out

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
