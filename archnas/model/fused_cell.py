"""The fast forward of a DARTS search cell: the same function as `Cell.forward`, computed with
less work and less memory.

`Cell.forward` runs every edge's mixed op on its own: `sum(w_k * candidate_k(x))` over all
candidates of the edge, each conv candidate starting with its own ReLU. That is the DARTS
formulation, and most of its work is redundant:

- The ReLU of a state is the same for every conv candidate of every edge reading the state
  (16 of them for a cell input): it is computed once per state.
- `none` outputs zeros: its term of the sum and its term of the alpha gradient are zero, so it
  is skipped (its alpha still takes part in the softmax, which is computed as before).
- The pools of a state are the same for every edge reading it at one stride: computed once. In
  training mode the BatchNorms after them then see the same input and normalize it the same
  way (each still updates its own running statistics), so that is done once too.
- `w * bn(x)` is one BatchNorm call with `w` as its affine weight (`archnas.ops.batchnorm_fns`):
  no product tensors are made or kept for backward.
- dil_conv candidates run as ordinary depthwise convolutions on the four pixel phases of the
  state (`archnas.ops.phases`), because the backward of a dilated depthwise convolution has no
  fast kernel on CPU; the phases of a state are made once for all its edges.

Edges are processed by the state they read, as soon as it exists, and their outputs are added
straight into the node sums, so no candidate output outlives its addition.

The fused forward reads the very modules `Cell` built (`dag[node][edge].op.ops[k]`, the pool
BatchNorms in `op.pool_bns`), at call time, so parameters, buffers, state-dict names, counts and
`torch.func.functional_call` substitutions are those of the plain cell. It applies when every
edge is a plain `MixedOp` (not a subclass: GDAS and PC-DARTS mixed ops compute something else)
reading one state, without drop-path; candidates it does not know are computed with
`MixedOp.candidate`, so any candidate set works. Any `ArchWeights.probs` works (softmax, one-hot
samples, ...); `ArchWeights.edges` scales the edge's candidate weights, which is the same sum.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from archnas.ops.batchnorm_fns import (
    can_share_statistics,
    count_batch,
    normalize_shared,
    scaled_affine,
    scaled_batch_norm,
)
from archnas.ops.conv_bn import DepthwiseSpec, conv_bn
from archnas.ops.layout import cpu_channels_last, dense_grad
from archnas.ops.mixed_op import MixedOp
from archnas.ops.phases import add_from_phases, even_pixels, phases_apply, to_phases
from archnas.ops.pointwise import is_plain_1x1, pointwise
from archnas.ops.primitives import (
    DilConv,
    FactorizedReduce,
    Identity,
    Pool,
    ReLUConvBN,
    SepConv,
    Zero,
)
from archnas.space.store import ArchWeights

if TYPE_CHECKING:
    from archnas.model.cell import Cell

# Candidate kinds; the order is the order terms are added (phase-ordered dil_conv terms last,
# so a node sum is first created in the state's own layout).
ZERO, IDENTITY, POOL, REDUCE, SEP, OTHER, DIL = "zero", "identity", "pool", "reduce", "sep", "other", "dil"
_ORDER = {k: i for i, k in enumerate((ZERO, IDENTITY, POOL, REDUCE, SEP, OTHER, DIL))}


def _kind(op: nn.Module) -> str:
    kinds = {Zero: ZERO, Identity: IDENTITY, Pool: POOL, FactorizedReduce: REDUCE, SepConv: SEP, DilConv: DIL}
    return kinds.get(type(op), OTHER)


@dataclass(frozen=True)
class FusedEdge:
    node: int  # the node it feeds
    position: int  # its index within the node
    index: int  # its row in the cell's architecture weights
    stride: int
    kinds: tuple[str, ...]  # per candidate


@dataclass(frozen=True)
class FusedCellPlan:
    """Which edges read which state, and what their candidates are; modules are looked up in
    the cell at every forward."""

    by_state: tuple[tuple[FusedEdge, ...], ...]  # state id -> the edges reading it
    n_nodes: int

    @classmethod
    def for_cell(cls, cell: Cell) -> FusedCellPlan | None:
        """The plan for `cell`, or None when the fused forward does not apply."""
        by_state: list[list[FusedEdge]] = [[] for _ in range(len(cell.dag) + 2)]
        for j, node in enumerate(cell.dag):
            for position, edge in enumerate(node):
                if type(edge.op) is not MixedOp or len(edge.input_ids) != 1 or edge.drop_path is not None:
                    return None
                kinds = tuple(_kind(op) for op in edge.op.ops)
                stride = edge.op.desc.params.get("stride", 1)
                if any(k == POOL for k in kinds) and not _pools_alike(edge.op, kinds):
                    return None
                by_state[edge.input_ids[0]].append(FusedEdge(j, position, edge.index, stride, kinds))
        if not _shared_pools_alike(cell, by_state):
            return None
        return cls(tuple(tuple(edges) for edges in by_state), len(cell.dag))

    def forward(self, cell: Cell, s0: Tensor, s1: Tensor, weights: ArchWeights) -> Tensor:
        states = [_stem(cell.stems[0], cpu_channels_last(s0)), _stem(cell.stems[1], cpu_channels_last(s1))]
        w = weights.probs if weights.edges is None else weights.probs * weights.edges.unsqueeze(-1)
        sums: list[Tensor | None] = [None] * self.n_nodes
        for i in range(self.n_nodes + 1):
            _StateEdges(cell, states[i], self.by_state[i], w, sums).run()
            if i >= 1:
                node = sums[i - 1]
                if node is None:
                    raise RuntimeError(f"cell {cell.id} node {i - 1} has no input edge")
                states.append(dense_grad(node))
        return cell.post_op(states[2:])


def _stem(op: nn.Module, x: Tensor) -> Tensor:
    """A cell stem; DARTS's 1x1 ReLU-conv-BN with its conv as a matrix product."""
    if type(op) is ReLUConvBN and is_plain_1x1(op.op[1]):
        return op.op[2](pointwise(F.relu(x), op.op[1]))
    return op(x)


def _spec(dw: nn.Conv2d) -> DepthwiseSpec | None:
    """The module's own settings, if they are square (else None: the stage runs the module)."""
    if dw.stride[0] != dw.stride[1] or dw.padding[0] != dw.padding[1] or dw.dilation[0] != dw.dilation[1] \
            or not isinstance(dw.padding[0], int) or dw.padding_mode != "zeros":
        return None
    return DepthwiseSpec(dw.stride[0], dw.padding[0], dw.dilation[0], dw.groups)


def _stage(x: Tensor, dw: nn.Conv2d, spec: DepthwiseSpec | None, pw: nn.Conv2d, bn: nn.BatchNorm2d,
           scale: Tensor | None) -> Tensor:
    """`bn(pw(dw(x))) * scale`; in training mode one autograd node that recomputes the convs in
    backward instead of keeping their outputs (`archnas.ops.conv_bn`), under autocast too."""
    if bn.training and spec is not None and dw.bias is None and pw.bias is None:
        weight, bias = scaled_affine(bn, scale, pw.out_channels)
        return conv_bn(x, dw, spec, pw, bn, weight, bias, count_batch(bn))
    y = dw(x) if spec is None else F.conv2d(x, dw.weight, dw.bias, spec.stride, spec.padding, spec.dilation, spec.groups)
    return scaled_batch_norm(pointwise(y, pw), bn, scale)


def _pools_alike(mixed: MixedOp, kinds: tuple[str, ...]) -> bool:
    """Pool candidates must carry their BatchNorm (the search cell's form) to be fused."""
    return all(str(k) in mixed.pool_bns for k, kind in enumerate(kinds) if kind == POOL)


def _shared_pools_alike(cell: Cell, by_state: list[list[FusedEdge]]) -> bool:
    """Pools computed once per state and stride must be configured alike on every edge."""
    for edges in by_state:
        seen: dict[tuple[int, int], str] = {}
        for e in edges:
            mixed = cell.dag[e.node][e.position].op
            for k, kind in enumerate(e.kinds):
                if kind == POOL:
                    key, conf = (e.stride, k), repr(mixed.ops[k].op)
                    if seen.setdefault(key, conf) != conf:
                        return False
    return True


class _StateEdges:
    """All edges reading one state, for one forward: shared intermediates are made on first use."""

    def __init__(self, cell: Cell, x: Tensor, edges: tuple[FusedEdge, ...], w: Tensor, sums: list[Tensor | None]):
        self.cell, self.x, self.edges, self.w, self.sums = cell, x, edges, w, sums
        self._cache: dict[tuple, Tensor] = {}

    def shared(self, key: tuple, make: Callable[[], Tensor]) -> Tensor:
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    @property
    def relu(self) -> Tensor:
        return self.shared(("relu",), lambda: F.relu(self.x))

    def run(self) -> None:
        for e in self.edges:
            mixed = self.cell.dag[e.node][e.position].op
            row = self.w[e.index]
            for k in sorted(range(len(e.kinds)), key=lambda k: _ORDER[e.kinds[k]]):
                self.add(e, mixed, k, row[k])

    def add(self, e: FusedEdge, mixed: MixedOp, k: int, weight: Tensor) -> None:
        kind, op = e.kinds[k], mixed.ops[k]
        if kind == ZERO:
            return
        if kind == IDENTITY:
            self.add_weighted(e.node, self.x, weight)
        elif kind == POOL:
            self.add_pool(e, mixed, k, weight)
        elif kind == REDUCE:
            r = self.relu
            y = torch.cat([op.conv_1(r), op.conv_2(r[:, :, 1:, 1:])], dim=1)
            self.add_term(e.node, scaled_batch_norm(y, op.bn, weight))
        elif kind == SEP:
            layers = op.op
            y = _stage(self.relu, layers[1], _spec(layers[1]), layers[2], layers[3], None)
            self.add_term(e.node, _stage(F.relu(y), layers[5], _spec(layers[5]), layers[6], layers[7], weight))
        elif kind == DIL:
            self.add_dil(e, op, weight)
        else:
            self.add_weighted(e.node, mixed.candidate(k, self.x), weight)

    def add_pool(self, e: FusedEdge, mixed: MixedOp, k: int, weight: Tensor) -> None:
        pooled = self.shared(("pool", e.stride, k), lambda: mixed.ops[k](self.x))
        bn = mixed.pool_bns[str(k)]
        group = [self.cell.dag[o.node][o.position].op.pool_bns[str(k)] for o in self.edges if o.stride == e.stride]
        if can_share_statistics(group):
            normalized = self.shared(("pool_bn", e.stride, k), lambda: normalize_shared(pooled, group))
            self.add_weighted(e.node, normalized, weight)
        else:
            self.add_term(e.node, scaled_batch_norm(pooled, bn, weight))

    def add_dil(self, e: FusedEdge, op: DilConv, weight: Tensor) -> None:
        dw, pw, bn = op.op[1], op.op[2], op.op[3]
        h, w = self.x.shape[-2:]
        if not phases_apply(h, w, dw.dilation[0], dw.padding[0]) or dw.dilation[0] != dw.dilation[1] \
                or dw.padding[0] != dw.padding[1] or dw.stride[0] != dw.stride[1] or self.x.device.type != "cpu":
            self.add_term(e.node, _stage(self.relu, dw, _spec(dw), pw, bn, weight))
            return
        spec = DepthwiseSpec(1, dw.padding[0] // 2, 1, dw.groups)
        if dw.stride[0] == 2:
            even = self.shared(("even",), lambda: even_pixels(self.relu))
            self.add_term(e.node, _stage(even, dw, spec, pw, bn, weight))
            return
        phases = self.shared(("phases",), lambda: to_phases(self.relu))
        self.sums[e.node] = add_from_phases(self.sums[e.node], _stage(phases, dw, spec, pw, bn, weight))

    def add_term(self, node: int, term: Tensor) -> None:
        acc = self.sums[node]
        self.sums[node] = term if acc is None else acc + term

    def add_weighted(self, node: int, term: Tensor, weight: Tensor) -> None:
        acc = self.sums[node]
        self.sums[node] = term * weight if acc is None else torch.addcmul(acc, term, weight)
