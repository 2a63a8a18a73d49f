"""The plain modules a search space becomes at one architecture (`archnas.space.freeze`,
`archnas.space.fixed_arch`): what is left of an InputChoice, a Cell and a NAS-Bench-201 cell once
their choices are made, and of a ValueChoice read in a forward (`FixedValue`). Plain torch
modules, with nothing of the search space in them, so a frozen network loads and runs (and
exports) wherever torch does.

The search-space modules compute their fixed-architecture forward through the same functions
(`reduce_inputs`, `dense_cell_forward`), so a frozen network gives bitwise what the search-space
model gave at that architecture.
"""

from __future__ import annotations

import math
import operator
from typing import Any, Callable, Optional, Sequence

import torch
from torch import Tensor, nn

REDUCTIONS = ("sum", "mean", "concat", "none")


def reduce_inputs(tensors: Sequence[Tensor], reduction: str):
    """The chosen inputs combined: summed, averaged, concatenated on dim 1, or as a list."""
    if reduction == "none":
        return list(tensors)
    if len(tensors) == 1:
        return tensors[0]
    if reduction == "concat":
        return torch.cat(list(tensors), dim=1)
    total = tensors[0]
    for t in tensors[1:]:
        total = total + t
    return total / len(tensors) if reduction == "mean" else total


class ChosenInputs(nn.Module):
    """An InputChoice at one architecture: the inputs at `chosen`, reduced."""

    def __init__(self, chosen: Sequence[int], reduction: str):
        super().__init__()
        self.chosen = list(chosen)
        self.reduction = reduction

    def forward(self, candidate_inputs: Sequence[Tensor]):
        return reduce_inputs([candidate_inputs[i] for i in self.chosen], self.reduction)

    def extra_repr(self) -> str:
        return f"chosen={self.chosen}, reduction={self.reduction!r}"


def dense_cell_forward(layers: Sequence[Sequence[Callable[[Tensor], Tensor]]], x: Tensor) -> Tensor:
    """NAS-Bench-201's cell: node t sums its edges' ops applied to every earlier node."""
    tensors = [x]
    for edges in layers:
        node = edges[0](tensors[0])
        for j in range(1, len(edges)):
            node = node + edges[j](tensors[j])
        tensors.append(node)
    return tensors[-1]


class DenseCell(nn.Module):
    """A NAS-Bench-201 cell at one architecture: `layers[t - 1][j]` is the op of edge j -> t."""

    def __init__(self, layers: Sequence[Sequence[nn.Module]]):
        super().__init__()
        self.layers = nn.ModuleList(nn.ModuleList(edges) for edges in layers)

    def forward(self, x: Tensor) -> Tensor:
        return dense_cell_forward(self.layers, x)


class FixedCell(nn.Module):
    """An NNI-style Cell at one architecture: each node sums its ops applied to their chosen
    inputs; the output merges `output_nodes` (all nodes, or the loose ends) on `concat_dim`."""

    def __init__(self, ops: Sequence[Sequence[nn.Module]], inputs: Sequence[Sequence[nn.Module]], num_predecessors: int,
                 output_nodes: Sequence[int], preprocessor: Optional[Callable] = None,
                 postprocessor: Optional[Callable] = None, concat_dim: int = 1):
        super().__init__()
        self.ops = nn.ModuleList(nn.ModuleList(node) for node in ops)
        self.inputs = nn.ModuleList(nn.ModuleList(node) for node in inputs)
        self.num_predecessors = num_predecessors
        self.output_node_indices = list(output_nodes)
        self.preprocessor = preprocessor
        self.postprocessor = postprocessor
        self.concat_dim = concat_dim

    def forward(self, *inputs):
        predecessors = list(inputs[0]) if len(inputs) == 1 and isinstance(inputs[0], (list, tuple)) else list(inputs)
        states = self.preprocessor(predecessors) if self.preprocessor is not None else list(predecessors)
        for ops, chooses in zip(self.ops, self.inputs):
            node = None
            for op, choose in zip(ops, chooses):
                y = op(choose(states))
                node = y if node is None else node + y
            states.append(node)
        out = torch.cat([states[i] for i in self.output_node_indices], self.concat_dim)
        return self.postprocessor(out, predecessors) if self.postprocessor is not None else out


def _on_value(fn: Callable[[Any, Any], Any]) -> tuple[Callable, Callable]:
    """The binary operator `fn` applied to a FixedValue's value, and its reflected form."""
    def left(self: "FixedValue", other: Any) -> Any:
        return fn(self.value, other.value if isinstance(other, FixedValue) else other)

    def right(self: "FixedValue", other: Any) -> Any:
        return fn(other, self.value)

    return left, right


class FixedValue(nn.Module):
    """A ValueChoice at one architecture. Called, it gives the value (NNI's `self.rate()` in a
    forward); in a model's constructor it stands for the value (arithmetic, comparisons, `int`,
    `float`, `round`, `format`, a size argument of archnas.space layers), so the code that built a
    search space builds the network of one architecture unchanged. A module (no parameters), so
    `freeze` and `fixed_arch` leave the same thing where the choice was."""

    def __init__(self, value: Any):
        super().__init__()
        self.value = value

    def forward(self) -> Any:
        return self.value

    def extra_repr(self) -> str:
        return repr(self.value)

    __add__, __radd__ = _on_value(operator.add)
    __sub__, __rsub__ = _on_value(operator.sub)
    __mul__, __rmul__ = _on_value(operator.mul)
    __truediv__, __rtruediv__ = _on_value(operator.truediv)
    __floordiv__, __rfloordiv__ = _on_value(operator.floordiv)
    __mod__, __rmod__ = _on_value(operator.mod)
    __pow__, __rpow__ = _on_value(operator.pow)
    __lshift__, __rlshift__ = _on_value(operator.lshift)
    __rshift__, __rrshift__ = _on_value(operator.rshift)
    __and__, __rand__ = _on_value(operator.and_)
    __or__, __ror__ = _on_value(operator.or_)
    __xor__, __rxor__ = _on_value(operator.xor)
    __lt__, __gt__ = _on_value(operator.lt)[0], _on_value(operator.gt)[0]
    __le__, __ge__ = _on_value(operator.le)[0], _on_value(operator.ge)[0]
    __eq__, __ne__ = _on_value(operator.eq)[0], _on_value(operator.ne)[0]
    __hash__ = nn.Module.__hash__  # by identity, as every module

    def __neg__(self) -> Any:
        return -self.value

    def __pos__(self) -> Any:
        return +self.value

    def __invert__(self) -> Any:
        return ~self.value

    def __abs__(self) -> Any:
        return abs(self.value)

    def __round__(self, ndigits: Optional[int] = None) -> Any:
        return round(self.value, ndigits)

    def __floor__(self) -> Any:
        return math.floor(self.value)

    def __ceil__(self) -> Any:
        return math.ceil(self.value)

    def __trunc__(self) -> Any:
        return math.trunc(self.value)

    def __bool__(self) -> bool:
        return bool(self.value)

    def __int__(self) -> int:
        return int(self.value)

    def __float__(self) -> float:
        return float(self.value)

    def __index__(self) -> int:
        return operator.index(self.value)

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)
