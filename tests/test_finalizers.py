"""Finalizers on hand-made alphas: the DARTS rule under softmax and raw ranking, ties included."""

from __future__ import annotations

import math

import pytest
import torch

from archnas.config.schema import (
    FinalizerConf,
    FinalizerRank,
    ModelDescConf,
    ModelStemsConf,
)
from archnas.descs.dataset_info import DatasetInfo
from archnas.descs.genotypes import desc_to_genotype, parse_genotype
from archnas.descs.model_desc import CellType
from archnas.model import Model, ModelDescBuilder
from archnas.nas.finalizers import Finalizers, RandomFinalizers

PRIMS = ["none", "max_pool_3x3", "skip_connect", "sep_conv_3x3"]
NONE, POOL, SKIP, SEP = range(4)


def supernet_desc():
    conf = ModelDescConf(n_cells=3, n_nodes=2, primitives=list(PRIMS), model_stems=ModelStemsConf(init_node_ch=4))
    return ModelDescBuilder().build(conf, DatasetInfo(10, 1, (8, 8)))


def row(**logits) -> list[float]:
    """Alpha logits for one edge, by op name; unnamed ops get 0."""
    names = {"none": NONE, "pool": POOL, "skip": SKIP, "sep": SEP}
    out = [0.0] * 4
    for k, v in logits.items():
        out[names[k]] = v
    return out


def finalize(rank: FinalizerRank, regular: list[list[float]], reduction: list[list[float]] | None = None) -> str:
    desc = supernet_desc()
    weights = {}
    for ctype, rows in ((CellType.regular, regular), (CellType.reduction, reduction or regular)):
        alphas = torch.tensor(rows)
        weights[ctype] = torch.softmax(alphas, -1) if rank == FinalizerRank.softmax else alphas
    final = Finalizers(FinalizerConf(rank=rank), max_final_edges=2).finalize_desc(desc, weights)
    return str(desc_to_genotype(final))


# Node 0 reads states 0 and 1 (edges 0, 1); node 1 reads states 0, 1, 2 (edges 2, 3, 4).
# Edge 2 has a strong `none` (5) that drags its softmax down; its best real op, pool, has raw 4.
# Edge 3's best real op, sep, has raw 3 but softmax 0.87 because nothing else competes.
ALPHAS = [
    row(sep=2.0),           # edge 0: 0 -> node 0, sep
    row(skip=1.0),          # edge 1: 1 -> node 0, skip
    row(none=5.0, pool=4.0),  # edge 2: 0 -> node 1
    row(sep=3.0),           # edge 3: 1 -> node 1
    row(skip=0.5),          # edge 4: 2 -> node 1, weakest
]


def test_softmax_ranking_follows_the_darts_code():
    g = finalize(FinalizerRank.softmax, ALPHAS)
    # node 1 under softmax: edge 3 (sep 0.87) > edge 4 (skip 0.31) > edge 2 (pool 0.27)
    assert g.startswith("Genotype(normal=[('sep_conv_3x3', 0), ('skip_connect', 1), ('sep_conv_3x3', 1), ('skip_connect', 2)]")


def test_raw_ranking_differs_where_softmax_normalizes():
    g = finalize(FinalizerRank.raw, ALPHAS)
    # node 1 under raw alphas: edge 2 (pool 4) > edge 3 (sep 3) > edge 4 (skip 0.5)
    assert g.startswith("Genotype(normal=[('sep_conv_3x3', 0), ('skip_connect', 1), ('max_pool_3x3', 0), ('sep_conv_3x3', 1)]")


def test_softmax_values_behind_the_expectations():
    s = torch.softmax(torch.tensor(ALPHAS), -1)
    assert s[3, SEP] == pytest.approx(math.exp(3) / (math.exp(3) + 3), rel=1e-6)  # 0.870
    assert s[2, POOL] < s[4, SKIP] < s[3, SEP]


def test_ties_lower_input_and_earlier_primitive_win():
    same = row(pool=1.0, skip=1.0, sep=1.0)  # three-way tie between real ops: pool is listed first
    g = finalize(FinalizerRank.softmax, [same, same, same, same, same])
    # node 0: both edges tie -> input 0 first; node 1: three edges tie -> inputs 0 and 1 kept
    assert g.startswith("Genotype(normal=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('max_pool_3x3', 0), ('max_pool_3x3', 1)]")


def test_none_is_never_chosen():
    g = finalize(FinalizerRank.raw, [row(none=9.0, skip=1.0, pool=-1.0, sep=-1.0)] * 5)
    ops = {op for op, _ in parse_genotype(g).normal}
    assert ops == {"skip_connect"}


def test_finalize_model_reads_the_model_alphas():
    desc = supernet_desc()
    model = Model(desc, droppath=False, affine=False)
    with torch.no_grad():
        model.alphas(CellType.regular).copy_(torch.tensor(ALPHAS))
        model.alphas(CellType.reduction).copy_(torch.tensor(ALPHAS))
    final = Finalizers(FinalizerConf(), max_final_edges=2).finalize_model(model, desc)
    assert str(desc_to_genotype(final)) == finalize(FinalizerRank.softmax, ALPHAS)
    # every cell of a type got the same structure, and the final model builds and runs
    out, _ = Model(final, droppath=True, affine=True)(torch.randn(2, 1, 8, 8))
    assert out.shape == (2, 10)


def test_random_finalizer_is_seeded_and_consistent_per_cell_type():
    desc = supernet_desc()
    a = RandomFinalizers(FinalizerConf(type="random"), 2, seed=1).finalize_desc(desc)
    b = RandomFinalizers(FinalizerConf(type="random"), 2, seed=1).finalize_desc(desc)
    c = RandomFinalizers(FinalizerConf(type="random"), 2, seed=2).finalize_desc(desc)
    assert str(desc_to_genotype(a)) == str(desc_to_genotype(b))
    assert any(str(desc_to_genotype(RandomFinalizers(FinalizerConf(type="random"), 2, seed=s).finalize_desc(desc)))
               != str(desc_to_genotype(a)) for s in range(2, 6))
    assert all(op != "none" for op, _ in desc_to_genotype(c).normal + desc_to_genotype(c).reduce)
    regular = [cell for cell in a.cells if cell.cell_type == CellType.regular]
    assert all([[e.op_desc.name for e in n.edges] for n in cell.nodes] == [[e.op_desc.name for e in n.edges] for n in regular[0].nodes]
               for cell in regular)
