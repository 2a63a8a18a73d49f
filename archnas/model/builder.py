"""ModelDescBuilder: a `ModelDescConf` (the macro) -> a `ModelDesc`, one overridable step at a time.

Steps, in order: model stems, reduction positions, node channels, then per cell its stems (the
preprocessing of its two inputs), nodes and post-op; the aux tower; the pool; the logits.
Every step is a method to override; what a search algorithm changes, the op on each supernet edge,
is given as `mixed_op` (GDAS's sampling mixed op, PC-DARTS's partial-channel one). Defaults
follow the DARTS code, so the DARTS search supernet and the DARTS eval networks come out layer
for layer.

Without a template, every cell gets the supernet: each node has one edge from every earlier
state, each edge a mixed op over `conf.primitives`. With a template (a final desc from search,
or a genotype's nodes), the node structure of its first regular and first reduction cell is
copied into every cell of that type at this macro's channels, so a searched 8-cell/16-channel
cell becomes a 20-cell/36-channel eval network; so are the nodes its output concatenates (all,
or a genotype's concat: the loose ends of NASNet, AmoebaNet and ENAS cells).
"""

from __future__ import annotations

from typing import Callable, Optional

import archnas.ops  # noqa: F401  (registers the built-in ops the builder checks names against)
from archnas.config.schema.model_desc import ModelDescConf
from archnas.descs.dataset_info import DatasetInfo
from archnas.descs.genotypes import CellConcat, CellNodes
from archnas.descs.model_desc import (
    AuxTowerDesc,
    CellDesc,
    CellType,
    ConvMacroParams,
    EdgeDesc,
    ModelDesc,
    NodeDesc,
    OpDesc,
)
from archnas.errors import ConfigError, DescError
from archnas.ops.registry import check_op_name, output_shape

Shape = list[int]
# (primitives, the edge's channels, its stride) -> the op desc of one supernet edge
MixedOpFactory = Callable[[list[str], ConvMacroParams, int], OpDesc]


def darts_mixed_op(primitives: list[str], conv: ConvMacroParams, stride: int) -> OpDesc:
    """DARTS's edge: a mixed op whose children are the candidates, in `primitives` order."""
    children = [OpDesc(p, {"conv": conv, "stride": stride}) for p in primitives]
    return OpDesc("mixed_op", {"conv": conv, "stride": stride}, children=children)


def template_nodes(template: ModelDesc) -> CellNodes:
    """The nodes of `template`'s first regular and first reduction cell."""
    out: CellNodes = {}
    for ctype in CellType:
        cell = template.first_cell(ctype)
        if cell is not None:
            out[ctype] = cell.nodes
    return out


def template_concat(template: ModelDesc) -> CellConcat:
    """The states `template`'s first regular and first reduction cell concatenate, where not all."""
    out: CellConcat = {}
    for ctype in CellType:
        cell = template.first_cell(ctype)
        if cell is not None and "concat" in cell.post_op.params:
            out[ctype] = tuple(cell.post_op.params["concat"])
    return out


def _halve(side: int, what: str) -> int:
    if side % 2:
        raise DescError(f"{what}: cannot reduce a map of odd size {side} (factorized reduce needs even sizes)")
    return side // 2


class ModelDescBuilder:
    def __init__(self, mixed_op: Optional[MixedOpFactory] = None):
        self.mixed_op_factory = mixed_op or darts_mixed_op

    def build(self, conf: ModelDescConf, dataset_info: DatasetInfo, template: ModelDesc | None = None) -> ModelDesc:
        if template is None:
            return self.build_with_nodes(conf, dataset_info, None)
        return self.build_with_nodes(conf, dataset_info, template_nodes(template), template_concat(template))

    def build_with_nodes(self, conf: ModelDescConf, dataset_info: DatasetInfo, cell_nodes: CellNodes | None,
                         concat: CellConcat | None = None) -> ModelDesc:
        """`build` with the node structure given directly (from a template or a genotype), and the
        states each cell type concatenates (a cell type left out concatenates all its nodes)."""
        self.check_conf(conf, searching=cell_nodes is None)
        stems, stem_shapes = self.build_model_stems(conf, dataset_info)
        reductions = set(self.reduction_positions(conf))
        aux_at = self.aux_tower_position(conf) if conf.aux_weight > 0 else None
        s0, s1 = stem_shapes[-2] if len(stem_shapes) > 1 else stem_shapes[-1], stem_shapes[-1]
        node_ch = conf.model_stems.init_node_ch
        cells: list[CellDesc] = []
        aux_towers: list[AuxTowerDesc | None] = []
        first_of_type: dict[CellType, int] = {}
        for i in range(conf.n_cells):
            ctype = CellType.reduction if i in reductions else CellType.regular
            node_ch = self.node_channels(conf, ctype, node_ch)
            if cell_nodes is not None and ctype not in cell_nodes:
                raise DescError(f"template has no {ctype} cell to copy into cell {i}")
            template = None if cell_nodes is None else cell_nodes[ctype]
            cell = self.build_cell(conf, i, ctype, first_of_type.setdefault(ctype, i), s0, s1, node_ch, template,
                                   (concat or {}).get(ctype))
            cells.append(cell)
            aux_towers.append(self.build_aux_tower(conf, dataset_info, cell) if i == aux_at else None)
            s0, s1 = s1, cell.out_shape
        pool_op, pooled = self.build_pool_op(conf, s1)
        return ModelDesc(
            model_stems=stems,
            cells=cells,
            aux_towers=aux_towers,
            pool_op=pool_op,
            logits_op=self.build_logits_op(conf, dataset_info, pooled),
        )

    def check_conf(self, conf: ModelDescConf, searching: bool) -> None:
        """Config mistakes as ConfigErrors naming the key, before anything is built."""
        names = [("model_desc.cell_post_op", conf.cell_post_op), ("model_desc.model_post_op", conf.model_post_op),
                 ("model_desc.logits_op", conf.logits_op)]
        names += [(f"model_desc.model_stems.ops[{i}]", n) for i, n in enumerate(conf.model_stems.ops)]
        if searching:
            names += [(f"model_desc.primitives[{i}]", n) for i, n in enumerate(conf.primitives)]
            if not conf.primitives:
                raise ConfigError("model_desc.primitives: the supernet needs at least one primitive")
        for key, name in names:
            check_op_name(name, key, ConfigError)
        for key, value in (("n_cells", conf.n_cells), ("n_nodes", conf.n_nodes),
                           ("model_stems.init_node_ch", conf.model_stems.init_node_ch),
                           ("model_stems.stem_multiplier", conf.model_stems.stem_multiplier),
                           ("aux_tower_stride", conf.aux_tower_stride)):
            if value < 1:
                raise ConfigError(f"model_desc.{key}: must be at least 1, got {value}")
        if not conf.model_stems.ops:
            raise ConfigError("model_desc.model_stems.ops: needs at least one stem")

    def build_model_stems(self, conf: ModelDescConf, dataset_info: DatasetInfo) -> tuple[list[OpDesc], list[Shape]]:
        """Chained stems. One stem outputs stem_multiplier * C (DARTS CIFAR); several output C each
        (DARTS ImageNet's stem0 and stem1)."""
        ch = conf.model_stems.init_node_ch
        ch_out = ch * conf.model_stems.stem_multiplier if len(conf.model_stems.ops) == 1 else ch
        shape = [dataset_info.channels, *dataset_info.image_size]
        stems, shapes = [], []
        for name in conf.model_stems.ops:
            stem = OpDesc(name, {"conv": ConvMacroParams(shape[0], ch_out)})
            shape = output_shape(stem, [shape])
            stems.append(stem)
            shapes.append(shape)
        return stems, shapes

    def reduction_positions(self, conf: ModelDescConf) -> list[int]:
        """DARTS: with r reductions, cells (k * n_cells) // (r + 1) for k = 1..r (n//3, 2n//3 for 2)."""
        if conf.reduction_cells is None:
            positions = [(k * conf.n_cells) // (conf.n_reductions + 1) for k in range(1, conf.n_reductions + 1)]
            if len(set(positions)) != len(positions):
                raise ConfigError(f"model_desc.n_reductions: {conf.n_reductions} reductions need more than "
                                  f"{conf.n_cells} cells (or list the cells in model_desc.reduction_cells)")
            return positions
        bad = [i for i in conf.reduction_cells if not 0 <= i < conf.n_cells]
        if bad or len(set(conf.reduction_cells)) != len(conf.reduction_cells):
            raise ConfigError(
                f"model_desc.reduction_cells: {conf.reduction_cells} must be distinct cell indices in [0, {conf.n_cells})"
            )
        return sorted(conf.reduction_cells)

    def aux_tower_position(self, conf: ModelDescConf) -> int:
        """DARTS: after cell 2 * n_cells // 3 (the second reduction cell by default)."""
        return 2 * conf.n_cells // 3

    def node_channels(self, conf: ModelDescConf, cell_type: CellType, prev_node_ch: int) -> int:
        """DARTS: channels double at every reduction cell."""
        return prev_node_ch * 2 if cell_type == CellType.reduction else prev_node_ch

    def build_cell(self, conf: ModelDescConf, index: int, cell_type: CellType, trainables_from: int,
                   s0: Shape, s1: Shape, node_ch: int, template: list[NodeDesc] | None,
                   concat: tuple[int, ...] | None = None) -> CellDesc:
        where = f"cell {index}"
        stems = self.build_cell_stems(conf, s0, s1, node_ch, where)
        reduction = cell_type == CellType.reduction
        size = [_halve(s, where) for s in s1[1:]] if reduction else list(s1[1:])
        nodes = self.build_nodes(conf, cell_type, node_ch) if template is None else self.copy_nodes(template, node_ch)
        node_shapes = [[n.conv_params.ch_out, *size] for n in nodes]
        post_op = self.build_cell_post_op(conf, len(nodes), node_ch, concat)
        return CellDesc(
            id=index,
            cell_type=cell_type,
            stems=stems,
            stem_shapes=[[node_ch, *s1[1:]], [node_ch, *s1[1:]]],
            nodes=nodes,
            node_shapes=node_shapes,
            post_op=post_op,
            out_shape=output_shape(post_op, node_shapes),
            trainables_from=trainables_from,
        )

    def build_cell_stems(self, conf: ModelDescConf, s0: Shape, s1: Shape, node_ch: int, where: str) -> list[OpDesc]:
        """1x1 ReLU-conv-BN on each input; factorized reduce on s0 when it is twice s1's size
        (after a reduction cell, and for the first cell behind the ImageNet stems)."""
        if s0[1:] == s1[1:]:
            stem0 = self.relu_conv_1x1(s0[0], node_ch)
        elif [_halve(s, where) for s in s0[1:]] == s1[1:]:
            stem0 = OpDesc("factorized_reduce", {"conv": ConvMacroParams(s0[0], node_ch)})
        else:
            raise DescError(f"{where}: inputs of sizes {s0[1:]} and {s1[1:]} are neither equal nor 2:1")
        return [stem0, self.relu_conv_1x1(s1[0], node_ch)]

    @staticmethod
    def relu_conv_1x1(ch_in: int, ch_out: int) -> OpDesc:
        return OpDesc("relu_conv_bn", {"conv": ConvMacroParams(ch_in, ch_out), "kernel_size": 1, "stride": 1, "padding": 0})

    def build_nodes(self, conf: ModelDescConf, cell_type: CellType, node_ch: int) -> list[NodeDesc]:
        """The supernet: node j has an edge from every state 0 .. j+1, in that order (DARTS order);
        in a reduction cell the edges from the cell inputs have stride 2."""
        conv = ConvMacroParams(node_ch, node_ch)
        nodes = []
        for j in range(conf.n_nodes):
            edges = []
            for i in range(j + 2):
                stride = 2 if cell_type == CellType.reduction and i < 2 else 1
                edges.append(EdgeDesc(self.mixed_op(conf, conv, stride), [i]))
            nodes.append(NodeDesc(edges, conv))
        return nodes

    def mixed_op(self, conf: ModelDescConf, conv: ConvMacroParams, stride: int) -> OpDesc:
        """The op of one supernet edge over `conf.primitives` (the factory given to the builder)."""
        return self.mixed_op_factory(list(conf.primitives), conv, stride)

    def copy_nodes(self, template: list[NodeDesc], node_ch: int) -> list[NodeDesc]:
        """The template's nodes at `node_ch` channels, without inherited weights."""
        conv = ConvMacroParams(node_ch, node_ch)
        return [NodeDesc([e.clone(conv, clear_trainables=True) for e in n.edges], conv) for n in template]

    def build_cell_post_op(self, conf: ModelDescConf, n_nodes: int, node_ch: int,
                           concat: tuple[int, ...] | None = None) -> OpDesc:
        """Concatenate all nodes (DARTS), or the states `concat` names (a desc concatenating all of
        them is the DARTS one, without the param); `proj_channels` projects the concatenation back
        to node_ch."""
        if concat is not None and list(concat) == list(range(2, 2 + n_nodes)):
            concat = None
        n_merged = n_nodes if concat is None else len(concat)
        ch_out = node_ch if conf.cell_post_op == "proj_channels" else n_merged * node_ch
        params: dict = {"conv": ConvMacroParams(n_merged * node_ch, ch_out)}
        if concat is not None:
            params["concat"] = list(concat)
        return OpDesc(conf.cell_post_op, params, in_len=n_nodes)

    def build_aux_tower(self, conf: ModelDescConf, dataset_info: DatasetInfo, cell: CellDesc) -> AuxTowerDesc:
        return AuxTowerDesc(cell.out_shape[0], dataset_info.n_classes, conf.aux_tower_stride, list(cell.out_shape[1:]),
                            conf.aux_tower_bn)

    def build_pool_op(self, conf: ModelDescConf, last: Shape) -> tuple[OpDesc, Shape]:
        pool = OpDesc(conf.model_post_op, {"conv": ConvMacroParams(last[0], last[0])})
        return pool, output_shape(pool, [last])

    def build_logits_op(self, conf: ModelDescConf, dataset_info: DatasetInfo, pooled: Shape) -> OpDesc:
        features = pooled[0] * pooled[1] * pooled[2]
        return OpDesc(conf.logits_op, {"conv": ConvMacroParams(features, dataset_info.n_classes)})
