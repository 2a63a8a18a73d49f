"""The NDS cell family (Radosavovic et al., "On Network Design Spaces for Visual Recognition",
2019, as NNI's hub `nasnet.py` has it): NASNet, AmoebaNet, PNAS, ENAS and DARTS, one macro over
NNI-style `Cell`s with NNI's argument names and labels.

A stem (CIFAR: a 3x3 conv to 3*width; ImageNet: two stride-2 convs to width, then a third), then
three stages of `num_cells` cells in all (stage i holds (i+1)*n//3 - i*n//3 cells), the first
cell of stages 2 and 3 a reduction cell at twice the width. Every normal cell shares the label
`normal`, every reduction cell `reduce`: node i's k-th op is `<cell>/op_<i>_<k>` applied to input
`<cell>/input_<i>_<k>` (two ops per node, the two previous cells as inputs 0 and 1). A cell's ops
are built per input (`Cell(ops_per_input=True)`): a reduction cell strides on its inputs and not
on its nodes, whatever a slot reads, so DARTS searches the cells edge by edge as NNI's
differentiable cell does. NASNet, AmoebaNet and ENAS concatenate only their loose ends (the nodes
no other node reads), DARTS and PNAS all nodes; the next cell is sized for what a network of one
architecture concatenates (NNI's `len(cell.output_node_indices) * C`). A supernet concatenates all
nodes, as NNI's one-shot strategies treat a loose-end cell, so its weights serve every
architecture; the network of an architecture (retrain, `archnas stats --arch`) is built at it.

`width` and `num_cells` take NNI's tuples too, the choices `width` and `depth`: a network of one
architecture is built at its values; a supernet over several widths or depths is refused (the
cells' ops have fixed channels), so search the cells at one width and depth.

Named architectures: the DARTS-format genotypes of `archnas.descs.genotypes` (`NASNET`,
`AMOEBANET`, `PNAS`, `ENAS`, `DARTS_V2`, ..., or a `Genotype(...)` string) become these labels, so
the network of `nasnet` at width 36 and 20 cells at `NASNET` is the DARTS code's NASNet network.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence, Union

from torch import Tensor, nn

from archnas.descs.genotypes import resolve_genotype
from archnas.descs.model_desc import ConvMacroParams, OpDesc
from archnas.errors import SpaceError
from archnas.ops.drop_path import drop_path
from archnas.ops.frozen import FixedValue
from archnas.ops.primitives import FactorizedReduce, Identity, ReLUConvBN
from archnas.ops.registry import Op
from archnas.space.arch_io import genotype_to_arch
from archnas.space.cells import Cell
from archnas.space.fixed import current_fixed_arch
from archnas.space.value import ValueChoice

NASNET_OPS = ("skip_connect", "conv_3x1_1x3", "conv_7x1_1x7", "dil_conv_3x3", "avg_pool_3x3", "max_pool_3x3",
              "max_pool_5x5", "max_pool_7x7", "conv_1x1", "conv_3x3", "sep_conv_3x3", "sep_conv_5x5", "sep_conv_7x7")
AMOEBA_OPS = ("skip_connect", "sep_conv_3x3", "sep_conv_5x5", "sep_conv_7x7", "avg_pool_3x3", "max_pool_3x3",
              "dil_sep_conv_3x3", "conv_7x1_1x7")
PNAS_OPS = ("sep_conv_3x3", "sep_conv_5x5", "sep_conv_7x7", "conv_7x1_1x7", "skip_connect", "avg_pool_3x3",
            "max_pool_3x3", "dil_conv_3x3")
ENAS_OPS = ("skip_connect", "sep_conv_3x3", "sep_conv_5x5", "avg_pool_3x3", "max_pool_3x3")
DARTS_OPS = ("max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3",
             "dil_conv_5x5")  # `none` is no candidate: NNI leaves it to the differentiable cell

IntChoice = Union[int, Sequence[int]]


def _op(name: str, channels: int, stride: int, affine: bool = True) -> Op:
    return Op.create(OpDesc(name, {"conv": ConvMacroParams(channels, channels), "stride": stride}), affine)


def _relu_conv_1x1(ch_in: int, ch_out: int) -> Op:
    conv = ConvMacroParams(ch_in, ch_out)
    return Op.create(OpDesc("relu_conv_bn", {"conv": conv, "kernel_size": 1, "stride": 1, "padding": 0}), True)


class DropPathOp(nn.Module):
    """An op whose output drop-path zeroes per sample while training (every op but the identity,
    as NNI and DARTS do); `drop_prob` starts at the space's `drop_path_prob` and is what
    `NDS.set_drop_path_prob` (and the trainer's ramp, `trainer.drop_path_prob`) sets."""

    def __init__(self, op: nn.Module, drop_prob: float):
        super().__init__()
        self.op, self.drop_prob = op, drop_prob

    def forward(self, x: Tensor) -> Tensor:
        y = self.op(x)
        return drop_path(y, self.drop_prob) if self.training and self.drop_prob > 0 else y


class CellPreprocessor(nn.Module):
    """The two previous cells' outputs at the cell's width: a 1x1 ReLU-conv-BN each, a factorized
    reduce for the older one when the previous cell reduced."""

    def __init__(self, c_pprev: int, c_prev: int, c: int, last_cell_reduce: bool):
        super().__init__()
        conv = ConvMacroParams(c_pprev, c)
        self.pre0 = Op.create(OpDesc("factorized_reduce", {"conv": conv}), True) if last_cell_reduce \
            else _relu_conv_1x1(c_pprev, c)
        self.pre1 = _relu_conv_1x1(c_prev, c)

    def forward(self, cells: list[Tensor]) -> list[Tensor]:
        return [self.pre0(cells[0]), self.pre1(cells[1])]


class AuxiliaryHead(nn.Module):
    """NNI's (and DARTS CIFAR's) auxiliary classifier: ReLU, 5x5 average pool (stride 3 on CIFAR's
    8x8, 2 on ImageNet's 14x14), 1x1 conv to 128, BN, ReLU, 2x2 conv to 768, BN, ReLU, linear."""

    def __init__(self, channels: int, n_classes: int, dataset: str):
        super().__init__()
        self.features = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.AvgPool2d(5, stride=2 if dataset == "imagenet" else 3, padding=0, count_include_pad=False),
            nn.Conv2d(channels, 128, 1, bias=False), nn.BatchNorm2d(128), nn.ReLU(inplace=False),
            nn.Conv2d(128, 768, 2, bias=False), nn.BatchNorm2d(768), nn.ReLU(inplace=False))
        self.classifier = nn.Linear(768, n_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x).flatten(1))


def _int_choice(space: str, name: str, label: str, value: Any) -> int:
    """An int argument, or a tuple of them: the choice `label`, whose value a network of one
    architecture is built at; a supernet over several is refused."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 1:
            raise SpaceError(f"{space}: {name} {value} must be at least 1")
        return value
    values = list(value) if isinstance(value, (list, tuple)) else None
    if not values or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in values):
        raise SpaceError(f"{space}: {name} {value!r} must be a positive int or a tuple of them")
    if len(values) == 1:
        return values[0]
    choice = ValueChoice(values, label=label)
    if isinstance(choice, FixedValue):
        return int(choice)
    raise SpaceError(f"{space}: {name} {tuple(values)} is a choice ({label!r}); a supernet over several "
                     f"{label}s is not built (its cells' ops have fixed channels): give {name} one value to search "
                     "the cells, or build the network of one architecture (archnas.space.fixed_arch)")


class NDS(nn.Module):
    """The unified NASNet-style space (NNI's `NDS`); `input_shape` and `n_classes` come from the
    data, the rest are NNI's arguments (`dataset` picks the stems and the aux head's pooling)."""

    space_name = "nds"

    def __init__(self, input_shape: Sequence[int] = (3, 32, 32), n_classes: int = 10,
                 op_candidates: Sequence[str] = DARTS_OPS, merge_op: str = "all", num_nodes_per_cell: int = 4,
                 width: IntChoice = 16, num_cells: IntChoice = 20, dataset: str = "cifar",
                 auxiliary_loss: bool = False, drop_path_prob: float = 0.0):
        super().__init__()
        name = self.space_name
        if dataset not in ("cifar", "imagenet"):
            raise SpaceError(f"{name}: dataset {dataset!r} is not 'cifar' or 'imagenet'")
        if merge_op not in ("all", "loose_end"):
            raise SpaceError(f"{name}: merge_op {merge_op!r} is not 'all' or 'loose_end'")
        if not 0 <= drop_path_prob < 1:
            raise SpaceError(f"{name}: drop_path_prob {drop_path_prob} must be in [0, 1)")
        if not op_candidates:
            raise SpaceError(f"{name}: op_candidates is empty")
        C = _int_choice(name, "width", "width", width)
        N = _int_choice(name, "num_cells", "depth", num_cells)
        if N < 3:
            raise SpaceError(f"{name}: num_cells {N} must be at least 3 (three stages)")
        self.dataset, self.auxiliary_loss, self.initial_drop_prob = dataset, auxiliary_loss, drop_path_prob
        self.op_candidates, self.num_nodes = tuple(op_candidates), num_nodes_per_cell
        # the supernet concatenates every node (NNI's one-shot reading of a loose end)
        self.merge_op = merge_op if current_fixed_arch() is not None else "all"
        channels = input_shape[0]
        if dataset == "imagenet":
            self.stem0 = nn.Sequential(
                nn.Conv2d(channels, C // 2, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(C // 2),
                nn.ReLU(inplace=False),
                nn.Conv2d(C // 2, C, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(C))
            self.stem1 = nn.Sequential(nn.ReLU(inplace=False),
                                       nn.Conv2d(C, C, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(C))
            c_pprev = c_prev = c_cur = C
            last_reduce = True
        else:
            self.stem = nn.Sequential(nn.Conv2d(channels, 3 * C, 3, padding=1, bias=False), nn.BatchNorm2d(3 * C))
            c_pprev = c_prev = 3 * C
            c_cur = C
            last_reduce = False
        per_stage = [(i + 1) * N // 3 - i * N // 3 for i in range(3)]
        self.stages = nn.ModuleList()
        self.aux_after: Optional[tuple[int, int]] = None
        c_aux = 0
        for stage, n in enumerate(per_stage):
            if stage:
                c_cur *= 2
            cells = []
            for i in range(n):
                reduce = stage > 0 and i == 0
                cell = self._cell(c_pprev, c_prev, c_cur, reduce, last_reduce)
                cells.append(cell)
                c_pprev, c_prev = c_prev, c_cur * len(cell.output_node_indices)
                last_reduce = reduce
                if stage == 2 and i == 0:
                    c_aux = c_prev
            self.stages.append(nn.ModuleList(cells))
        self.auxiliary_head = AuxiliaryHead(c_aux, n_classes, dataset) if auxiliary_loss else None
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_prev, n_classes)

    def _cell(self, c_pprev: int, c_prev: int, c: int, reduce: bool, last_reduce: bool) -> nn.Module:
        def factory(name: str):
            def build(node: int, op: int, input_index: Optional[int]) -> nn.Module:
                stride = 2 if reduce and (input_index is None or input_index < 2) else 1
                built = _op(name, c, stride)
                return built if isinstance(built, Identity) else DropPathOp(built, self.initial_drop_prob)
            return build

        return Cell({name: factory(name) for name in self.op_candidates}, self.num_nodes, 2, 2, self.merge_op,
                    preprocessor=CellPreprocessor(c_pprev, c_prev, c, last_reduce),
                    label="reduce" if reduce else "normal", ops_per_input=True)

    def set_drop_path_prob(self, drop_prob: float) -> None:
        """NNI's: the drop-path probability of every op but the identities."""
        for module in self.modules():
            if isinstance(module, DropPathOp):
                module.drop_prob = drop_prob

    def drop_path_prob(self, p: float) -> None:
        """What the trainer's drop-path ramp calls each epoch (`trainer.drop_path_prob * epoch /
        epochs`): the same as `set_drop_path_prob`."""
        self.set_drop_path_prob(p)

    def forward(self, x: Tensor) -> Union[Tensor, tuple[Tensor, Tensor]]:
        if self.dataset == "imagenet":
            s0 = self.stem0(x)
            s1 = self.stem1(s0)
        else:
            s0 = s1 = self.stem(x)
        aux = None
        for stage, cells in enumerate(self.stages):
            for i, cell in enumerate(cells):
                s0, s1 = s1, cell([s0, s1])
                if stage == 2 and i == 0 and self.auxiliary_head is not None and self.training:
                    aux = self.auxiliary_head(s1)
        logits = self.classifier(self.global_pooling(s1).flatten(1))
        return (logits, aux) if aux is not None else logits


def _family(space_name: str, ops: Sequence[str], merge_op: str, num_nodes: int, doc: str) -> type:
    """One NNI class of the family: NDS with its ops, merge and node count fixed."""
    def __init__(self, input_shape: Sequence[int] = (3, 32, 32), n_classes: int = 10, width: IntChoice = 16,
                 num_cells: IntChoice = 20, dataset: str = "cifar", auxiliary_loss: bool = False,
                 drop_path_prob: float = 0.0):
        NDS.__init__(self, input_shape, n_classes, ops, merge_op, num_nodes, width, num_cells, dataset,
                     auxiliary_loss, drop_path_prob)

    return type(space_name, (NDS,), {"__init__": __init__, "__doc__": doc, "space_name": space_name.lower()})


NASNet = _family("NASNet", NASNET_OPS, "loose_end", 5, "NASNet's space (Zoph et al., 2018): 13 ops, 5 nodes, loose ends.")
AmoebaNet = _family("AmoebaNet", AMOEBA_OPS, "loose_end", 5, "AmoebaNet's space (Real et al., 2019): 8 ops, 5 nodes, loose ends.")
PNAS = _family("PNAS", PNAS_OPS, "all", 5, "PNAS's space (Liu et al., 2018): 8 ops, 5 nodes, all nodes concatenated.")
ENAS = _family("ENAS", ENAS_OPS, "loose_end", 5, "ENAS's space (Pham et al., 2018): 5 ops, 5 nodes, loose ends.")
DARTS = _family("DARTS", DARTS_OPS, "all", 4, "DARTS's space (Liu et al., 2019): 7 ops (no `none`), 4 nodes, all nodes.")

_NNI_NAMES = {"darts-v2": "DARTS_V2"}  # NNI's DARTS.load_searched_model name


def parse_nds_arch(text: str) -> dict[str, Any]:
    """A named genotype (`NASNET`, `DARTS_V2`, NNI's `darts-v2`, ...) or a `Genotype(...)` string
    under NNI's cell labels."""
    spec = text.strip()
    return genotype_to_arch(resolve_genotype(_NNI_NAMES.get(spec.lower(), spec)))


__all__ = ["AmoebaNet", "DARTS", "ENAS", "NASNet", "NDS", "PNAS", "parse_nds_arch"]
