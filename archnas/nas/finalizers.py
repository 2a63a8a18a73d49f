"""Finalizers: a searched supernet (desc + architecture weights) -> a discrete final desc.

The default rule is the DARTS code's (`model_search.py`, `genotype()`): for each node, rank its
incoming edges by the weight of their strongest candidate other than `none`, keep the top
`max_final_edges`, and on each kept edge keep that strongest candidate. With `rank: softmax`
weights are softmax(alpha) per edge, as DARTS does; with `rank: raw` they are the raw alphas, as
Archai does. The two pick the same op on an edge (softmax is monotone within a row) but can rank
edges differently, because softmax normalizes each edge on its own.

Ties are broken as the DARTS code breaks them: among edges of equal strength the one with the
lower position in the node (the lower input id) wins; among candidates of equal weight the one
earlier in `primitives` wins. Kept edges are listed strongest first, as in DARTS genotypes.

Each level is a method to override: `finalize_model`, `finalize_cell`, `finalize_node`,
`rank_edge` and `finalize_edge`; `edge_weights` says what is ranked (PC-DARTS multiplies in its
edge-normalization weights there).
"""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Mapping

import torch.nn.functional as F
from torch import Tensor

from archnas.config.schema import FinalizerConf, FinalizerRank
from archnas.descs.model_desc import CellDesc, CellType, EdgeDesc, ModelDesc, NodeDesc
from archnas.errors import ConfigError, DescError
from archnas.utils.seeding import derive_seed

NONE_OP = "none"
CellEdgeWeights = Mapping[CellType, Tensor]  # [n_edges, n_candidates] per cell type, in cell.edges() order


class Finalizers:
    def __init__(self, conf: FinalizerConf, max_final_edges: int):
        if max_final_edges < 1:
            raise ConfigError(f"model_desc.max_final_edges: {max_final_edges} must be at least 1")
        self.conf = conf
        self.max_final_edges = max_final_edges

    def edge_weights(self, model, cell_type: CellType) -> Tensor:
        """What edges and candidates are ranked by: softmax(alpha) or raw alpha, per `rank`."""
        alphas = model.alphas(cell_type).detach().float().cpu()
        return F.softmax(alphas, dim=-1) if self.conf.rank == FinalizerRank.softmax else alphas

    def finalize_model(self, model, desc: ModelDesc) -> ModelDesc:
        """The final desc of a trained supernet `model` built from `desc`."""
        types = {c.cell_type for c in desc.cells}
        return self.finalize_desc(desc, {t: self.edge_weights(model, t) for t in types})

    def finalize_desc(self, desc: ModelDesc, weights: CellEdgeWeights) -> ModelDesc:
        out = desc.clone()
        out.cells = [self.finalize_cell(cell, weights[cell.cell_type]) for cell in out.cells]
        return out

    def finalize_cell(self, cell: CellDesc, weights: Tensor) -> CellDesc:
        n_edges = sum(len(n.edges) for n in cell.nodes)
        if weights.shape[0] != n_edges:
            raise DescError(f"cell {cell.id}: {n_edges} edges but architecture weights for {weights.shape[0]}")
        nodes, row = [], 0
        for j, node in enumerate(cell.nodes):
            nodes.append(self.finalize_node(cell, j, node, weights[row: row + len(node.edges)]))
            row += len(node.edges)
        return replace(cell, nodes=nodes)

    def finalize_node(self, cell: CellDesc, index: int, node: NodeDesc, weights: Tensor) -> NodeDesc:
        """Keep the `max_final_edges` strongest edges, strongest first (stable: lower position wins ties)."""
        ranked = [self.rank_edge(edge, w) for edge, w in zip(node.edges, weights)]
        order = sorted(range(len(node.edges)), key=lambda i: -ranked[i][0])[: self.max_final_edges]
        return NodeDesc([self.finalize_edge(node.edges[i], ranked[i][1]) for i in order], node.conv_params)

    def rank_edge(self, edge: EdgeDesc, weights: Tensor) -> tuple[float, str]:
        """(strength, best candidate): the strongest candidate other than `none` (first one on ties)."""
        names = [c.name for c in edge.op_desc.children]
        if len(names) != weights.numel():
            raise DescError(f"edge from {edge.input_ids}: {len(names)} candidates but {weights.numel()} weights")
        best = None
        for k, name in enumerate(names):
            if name != NONE_OP and (best is None or weights[k] > weights[best]):
                best = k
        if best is None:
            raise DescError(f"edge from {edge.input_ids}: every candidate is {NONE_OP!r}; nothing to keep")
        return float(weights[best]), names[best]

    def finalize_edge(self, edge: EdgeDesc, primitive: str) -> EdgeDesc:
        return edge.finalized(primitive)


def random_arch_seed(seed: int, number: int) -> int:
    """The sampling seed of random architecture `number` (1-based) under common.seed: candidate
    `number` of random search; number 1 is also the random finalizer's draw."""
    return derive_seed(seed, "random_arch", number)


class RandomFinalizers(Finalizers):
    """The random baseline: per node, `max_final_edges` random edges, each with a random candidate
    other than `none`. Seeded per cell type, so every cell of a type gets the same structure and a
    rerun with the same seed gets the same architecture."""

    def __init__(self, conf: FinalizerConf, max_final_edges: int, seed: int):
        super().__init__(conf, max_final_edges)
        self.seed = seed

    def finalize_desc(self, desc: ModelDesc, weights: CellEdgeWeights | None = None) -> ModelDesc:
        out = desc.clone()
        out.cells = [self.finalize_cell(cell, None) for cell in out.cells]
        return out

    def finalize_model(self, model, desc: ModelDesc) -> ModelDesc:
        return self.finalize_desc(desc)

    def finalize_cell(self, cell: CellDesc, weights: Tensor | None) -> CellDesc:
        rng = random.Random(derive_seed(self.seed, "random_finalizer", cell.cell_type.value))
        nodes = []
        for node in cell.nodes:
            keep = sorted(rng.sample(range(len(node.edges)), min(self.max_final_edges, len(node.edges))))
            edges = []
            for i in keep:
                names = [c.name for c in node.edges[i].op_desc.children if c.name != NONE_OP]
                if not names:
                    raise DescError(f"cell {cell.id}: an edge has no candidate other than {NONE_OP!r}")
                edges.append(self.finalize_edge(node.edges[i], rng.choice(names)))
            nodes.append(NodeDesc(edges, node.conv_params))
        return replace(cell, nodes=nodes)
