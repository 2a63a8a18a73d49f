"""Cells: NNI's general `Cell` and NAS-Bench-201's dense cell, built from LayerChoice and
InputChoice, so every strategy searches them as it searches any choice.

`Cell(op_candidates, num_nodes, num_ops_per_node, num_predecessors, merge_op, ...)`: node i
(numbered after the predecessors) sums `num_ops_per_node` ops, each a LayerChoice
`<label>/op_<i>_<k>` applied to an InputChoice `<label>/input_<i>_<k>` over every earlier state,
as NNI labels them. The output concatenates all nodes, or with `merge_op="loose_end"` the nodes no
other node reads (NNI's definition): at a fixed or sampled architecture the supernet concatenates
exactly the loose ends its frozen network does, so its width depends on the architecture, as NNI
documents (`len(cell.output_node_indices) * C`; under `fixed_arch` the cell is built at its
architecture, and a layer after it sized that way fits). Soft weights read every node, so there
(and in a cell not wrapped yet, whose nodes all read input 0) it is all of them, as NNI's one-shot
strategies treat a loose-end cell. So a supernet whose loose-end cell runs at more than one
architecture (sampled, or soft then frozen) needs a next layer that takes any multiple of the
node width.

With `ops_per_input=True` an op slot's factories are called once per input it may read,
`f(node, op, input_index)`, as NNI's one-shot cells expand a Cell into one candidate set per edge
(and as its fixed networks call them with the chosen input): a reduction cell's ops stride on the
cell inputs and not on its nodes, whatever the slot reads. The slot's op choices share its label,
and its input choice picks (or, under soft weights, mixes) the outputs of the inputs' ops, so
DARTS searches such a cell edge by edge; only the chosen inputs' ops run at a fixed or sampled
architecture.

`NasBench201Cell(op_candidates, in_features, out_features, num_tensors=4, label)`: every earlier
tensor feeds every later one through its own LayerChoice `<label>__<j>_<t>` (NNI's labels); cells
that share a label share their architecture, as NAS-Bench-201's 15 cells do.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import torch
from torch import nn

from archnas.descs.model_desc import ConvMacroParams, OpDesc
from archnas.errors import SpaceError
from archnas.ops.frozen import ChosenInputs, DenseCell, FixedCell, dense_cell_forward
from archnas.ops.registry import Op, registered_ops
from archnas.space.choices import InputChoice, LayerChoice
from archnas.space.fixed import KEEP, Resolvable, current_fixed_arch
from archnas.space.partial import PartialChannelLayerChoice, current_partial_channels

OpCandidates = Union[Sequence[Any], Mapping[str, Any]]


def _candidate_ops(op_candidates: OpCandidates, node: int, op: int, channels: Optional[int],
                   input_index: Optional[int] = None) -> "OrderedDict[Any, nn.Module]":
    """The candidates of one op slot: modules (deep-copied), registry op names (built at
    `channels`), or factories `f(node_index, op_index, input_index)` (input_index None: the op
    serves whichever input is chosen)."""
    items = list(op_candidates.items()) if isinstance(op_candidates, Mapping) else list(enumerate(op_candidates))
    if not items:
        raise SpaceError("Cell: op_candidates is empty")
    out: "OrderedDict[Any, nn.Module]" = OrderedDict()
    for key, candidate in items:
        if isinstance(candidate, nn.Module):
            out[key] = copy.deepcopy(candidate)
        elif isinstance(candidate, str):
            if channels is None:
                raise SpaceError(f"Cell: op {candidate!r} is a registry op name; give the cell its channels "
                                 "(Cell(..., channels=C))")
            if candidate not in registered_ops():
                raise SpaceError(f"Cell: unknown op {candidate!r}; registered ops: {', '.join(registered_ops())}")
            conv = ConvMacroParams(channels, channels)
            out[candidate if not isinstance(op_candidates, Mapping) else key] = Op.create(
                OpDesc(candidate, {"conv": conv, "stride": 1}), affine=True)
        elif callable(candidate):
            out[key] = candidate(node, op, input_index)
        else:
            raise SpaceError(f"Cell: candidate {key!r} is neither a module, an op name nor a factory")
    return out


class Cell(Resolvable, nn.Module):
    @classmethod
    def _instead(cls, op_candidates: OpCandidates, num_nodes: int, num_ops_per_node: int = 1, num_predecessors: int = 1,
                merge_op: str = "all", preprocessor: Optional[Callable] = None, postprocessor: Optional[Callable] = None,
                concat_dim: int = 1, *, label: Optional[str] = None, channels: Optional[int] = None,
                ops_per_input: bool = False):
        if current_fixed_arch() is None:
            return KEEP
        ops, inputs = _slots(op_candidates, num_nodes, num_ops_per_node, num_predecessors, label, channels,
                             ops_per_input)
        chosen = [[i for choose in node for i in choose.chosen] for node in inputs]
        return FixedCell(ops, inputs, num_predecessors, _outputs(merge_op, num_predecessors, num_nodes, chosen),
                         preprocessor, postprocessor, concat_dim)

    def __init__(self, op_candidates: OpCandidates, num_nodes: int, num_ops_per_node: int = 1, num_predecessors: int = 1,
                 merge_op: str = "all", preprocessor: Optional[Callable] = None, postprocessor: Optional[Callable] = None,
                 concat_dim: int = 1, *, label: Optional[str] = None, channels: Optional[int] = None,
                 ops_per_input: bool = False):
        super().__init__()
        if merge_op not in ("all", "loose_end"):
            raise SpaceError(f"Cell: merge_op {merge_op!r} is not 'all' or 'loose_end'")
        if label is None:
            raise SpaceError("Cell: give the cell a label (its ops and inputs are labelled <label>/op_<i>_<k> and "
                             "<label>/input_<i>_<k>)")
        ops, inputs = _slots(op_candidates, num_nodes, num_ops_per_node, num_predecessors, label, channels,
                             ops_per_input)
        self.ops_per_input = ops_per_input
        self.ops = nn.ModuleList(nn.ModuleList(node) for node in ops)
        self.inputs = nn.ModuleList(nn.ModuleList(node) for node in inputs)
        self.label, self.num_nodes, self.num_predecessors = label, num_nodes, num_predecessors
        self.merge_op, self.concat_dim = merge_op, concat_dim
        self.preprocessor, self.postprocessor = preprocessor, postprocessor

    @property
    def output_node_indices(self) -> list[int]:
        """The nodes the output concatenates: all of them, or for `merge_op="loose_end"` those no node
        reads at the architecture that runs (every node while soft weights read them all, and,
        outside a forward, while a strategy weighs the candidates)."""
        nodes = list(range(self.num_predecessors, self.num_predecessors + self.num_nodes))
        if self.merge_op == "all" or not all(choose.readable() for node in self.inputs for choose in node):
            return nodes
        chosen = []
        for node in self.inputs:
            selected = [choose.selected() for choose in node]
            if any(s is None for s in selected):
                return nodes
            chosen.append([i for s in selected for i in s])
        return _outputs(self.merge_op, self.num_predecessors, self.num_nodes, chosen)

    def forward(self, *inputs):
        if not self.ops_per_input:
            return FixedCell.forward(self, *inputs)
        predecessors = list(inputs[0]) if len(inputs) == 1 and isinstance(inputs[0], (list, tuple)) else list(inputs)
        states = self.preprocessor(predecessors) if self.preprocessor is not None else list(predecessors)
        for ops, chooses in zip(self.ops, self.inputs):
            node = None
            for per_input, choose in zip(ops, chooses):
                selected = choose.selected()
                y = choose([op(states[j]) if selected is None or j in selected else None
                            for j, op in enumerate(per_input)])
                node = y if node is None else node + y
            states.append(node)
        out = torch.cat([states[i] for i in self.output_node_indices], self.concat_dim)
        return self.postprocessor(out, predecessors) if self.postprocessor is not None else out

    def reachable(self, arch: Mapping[str, Any]) -> list[nn.Module]:
        """With ops per input, the op choices of the inputs `arch` picks (and what else the cell holds)."""
        if not self.ops_per_input:
            return list(self.children())
        picked = [per_input[j] for node, chooses in zip(self.ops, self.inputs) for per_input, choose in zip(node, chooses)
                  for j in _as_indices(arch.get(choose.label_key))]
        rest = [m for name, m in self.named_children() if name != "ops"]
        return picked + rest

    def frozen(self, arch: Mapping[str, Any]) -> nn.Module:
        inputs = [[choose.frozen(arch) for choose in node] for node in self.inputs]
        if self.ops_per_input:
            ops = [[per_input[choose.chosen[0]].frozen(arch) for per_input, choose in zip(node, chooses)]
                   for node, chooses in zip(self.ops, inputs)]
        else:
            ops = [[op.frozen(arch) for op in node] for node in self.ops]
        chosen = [[i for choose in node for i in choose.chosen] for node in inputs]
        return FixedCell(ops, inputs, self.num_predecessors,
                         _outputs(self.merge_op, self.num_predecessors, self.num_nodes, chosen),
                         self.preprocessor, self.postprocessor, self.concat_dim)


def _as_indices(value: Any) -> list[int]:
    """An input choice's recorded value as a list of input indices (none while `arch` lacks it)."""
    if value is None:
        return []
    return [int(v) for v in value] if isinstance(value, (list, tuple)) else [int(value)]


def _slots(op_candidates: OpCandidates, num_nodes: int, num_ops_per_node: int, num_predecessors: int,
           label: Optional[str], channels: Optional[int], ops_per_input: bool = False) -> tuple[list[list[Any]], list[list[Any]]]:
    """Each node's op choices and input choices. With `ops_per_input`, a slot's op is a list of op
    choices, one per input it may read (under `fixed_arch`: the chosen input's op alone)."""
    if num_nodes < 1 or num_ops_per_node < 1 or num_predecessors < 1:
        raise SpaceError(f"Cell: num_nodes ({num_nodes}), num_ops_per_node ({num_ops_per_node}) and num_predecessors "
                         f"({num_predecessors}) must be at least 1")
    ops, inputs = [], []
    for i in range(num_predecessors, num_predecessors + num_nodes):
        chooses = [InputChoice(i, 1, label=f"{label}/input_{i}_{k}") for k in range(num_ops_per_node)]
        node = []
        for k, choose in enumerate(chooses):
            def op_choice(j: Optional[int]) -> Any:
                return LayerChoice(_candidate_ops(op_candidates, i, k, channels, j), label=f"{label}/op_{i}_{k}")

            if not ops_per_input:
                node.append(op_choice(None))
            elif isinstance(choose, ChosenInputs):
                node.append(op_choice(choose.chosen[0]))
            else:
                node.append(nn.ModuleList(op_choice(j) for j in range(i)))
        ops.append(node)
        inputs.append(chooses)
    return ops, inputs


def _outputs(merge_op: str, num_predecessors: int, num_nodes: int, chosen: list[list[int]]) -> list[int]:
    nodes = list(range(num_predecessors, num_predecessors + num_nodes))
    if merge_op == "all":
        return nodes
    used = {i for node in chosen for i in node}
    return [n for n in nodes if n not in used]


class NasBench201Cell(Resolvable, nn.Module):
    @classmethod
    def _instead(cls, op_candidates: OpCandidates, in_features: int, out_features: int, num_tensors: int = 4,
                label: Optional[str] = None):
        if current_fixed_arch() is None:
            return KEEP
        return DenseCell(_dense_layers(op_candidates, in_features, out_features, num_tensors, label))

    def __init__(self, op_candidates: OpCandidates, in_features: int, out_features: int, num_tensors: int = 4,
                 label: Optional[str] = None):
        super().__init__()
        if label is None:
            raise SpaceError("NasBench201Cell: give the cell a label (its edges are labelled <label>__<j>_<t>)")
        self.label, self.in_features, self.out_features, self.num_tensors = label, in_features, out_features, num_tensors
        self.layers = nn.ModuleList(nn.ModuleList(edges) for edges in
                                    _dense_layers(op_candidates, in_features, out_features, num_tensors, label))

    def forward(self, x):
        return dense_cell_forward(self.layers, x)

    def frozen(self, arch: Mapping[str, Any]) -> nn.Module:
        return DenseCell([[edge.frozen(arch) for edge in edges] for edges in self.layers])


def _dense_layers(op_candidates: OpCandidates, in_features: int, out_features: int, num_tensors: int,
                  label: Optional[str]) -> list[list[Any]]:
    if num_tensors < 2:
        raise SpaceError(f"NasBench201Cell: num_tensors {num_tensors} must be at least 2")
    items = list(op_candidates.items()) if isinstance(op_candidates, Mapping) else list(enumerate(op_candidates))
    if not items or not all(callable(f) for _, f in items):
        raise SpaceError("NasBench201Cell: op_candidates must be factories f(in_features, out_features) -> module")
    k = current_partial_channels()
    layers = []
    for t in range(1, num_tensors):
        edges = []
        for j in range(t):
            width = in_features if j == 0 else out_features
            if k is None:
                edges.append(LayerChoice(OrderedDict((key, f(width, out_features)) for key, f in items),
                                         label=f"{label}__{j}_{t}"))
                continue
            if width != out_features or width % k:
                raise SpaceError(f"NasBench201Cell {label}__{j}_{t}: partial channels (k={k}) need an edge of C -> C "
                                 f"channels with k dividing C; it maps {width} -> {out_features}")
            edges.append(PartialChannelLayerChoice(OrderedDict((key, f(width // k, width // k)) for key, f in items),
                                                   k, label=f"{label}__{j}_{t}"))
        layers.append(edges)
    return layers


__all__ = ["Cell", "NasBench201Cell"]
