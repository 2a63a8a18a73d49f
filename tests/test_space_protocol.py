"""The search-space protocol (`archnas.nas.spaces`) over its two implementations: genomes that
round-trip, samples that are the random finalizer's, networks that are what descs and genotypes
name."""

from __future__ import annotations

import random

import pytest
from tiny_algos import tiny_conf

from archnas.descs.dataset_info import DatasetInfo
from archnas.descs.model_desc import CellType
from archnas.model import ModelDescBuilder, desc_from_spec
from archnas.nas.finalizers import NONE_OP, RandomFinalizers
from archnas.nas.spaces import CellSpace, ModuleSpace, eval_space, space_of

INFO = DatasetInfo(10, 1, (8, 8))


def test_space_of_picks_cells_without_a_space_and_modules_with_one():
    assert isinstance(space_of(tiny_conf("darts").nas.search), CellSpace)
    conf = tiny_conf("darts", "nas.search.space={name: nb201, C: 4, N: 1}")
    assert isinstance(space_of(conf.nas.search), ModuleSpace) and isinstance(eval_space(conf), ModuleSpace)
    assert eval_space(tiny_conf("darts")).key == "nas.eval.model_desc"


def test_the_cell_genome_keeps_inputs_and_ops_and_round_trips():
    conf = tiny_conf("random")
    space = space_of(conf.nas.search)
    genome = space.genome(INFO)
    # per cell type, per node of 2 and 3 inputs: C(n, 2) input sets, then 2 ops other than none
    ops = len([p for p in conf.nas.search.model_desc.primitives if p != NONE_OP])
    assert genome.counts == (1, ops, ops, 3, ops, ops) * 2
    rng = random.Random(0)
    for _ in range(20):
        row = tuple(rng.randrange(c) for c in genome.counts)
        desc = genome.decode(row)
        assert genome.encode(desc) == row
        for ctype in CellType:
            for node in desc.first_cell(ctype).nodes:
                inputs = [e.input_ids[0] for e in node.edges]
                assert len(set(inputs)) == 2 and all(e.op_desc.name != NONE_OP for e in node.edges)


def test_a_cell_sample_is_the_random_finalizers_and_its_network_is_the_macro_with_its_cells():
    conf = tiny_conf("random")
    space = space_of(conf.nas.search)
    supernet = ModelDescBuilder().build(conf.nas.search.model_desc, INFO)
    random_final = RandomFinalizers(conf.nas.search.finalizer, 2, 7).finalize_desc(supernet)
    sample = space.sample(INFO, 7)
    assert sample.fingerprint() == random_final.fingerprint() == space.fingerprint(sample, INFO)
    assert space.genome(INFO).decode(space.genome(INFO).encode(sample)).fingerprint() == sample.fingerprint()
    evals = eval_space(conf)
    named = evals.parse("DARTS_V2", INFO)
    assert evals.fingerprint(named, INFO) == desc_from_spec("DARTS_V2", conf.nas.eval.model_desc, INFO).fingerprint()
    with pytest.raises(NotImplementedError, match="DARTS cells are retrained"):
        evals.tuned(named, INFO, {}, None)


def test_the_module_genome_is_the_cost_tables_encoding():
    space = space_of(tiny_conf("darts", "nas.search.space={name: nb201, C: 4, N: 1}").nas.search)
    genome = space.genome(INFO)
    assert genome.counts == (5,) * 6
    arch = space.sample(INFO, 3)
    assert genome.decode(genome.encode(arch)) == arch and space.check(arch, INFO) == arch
    assert space.fingerprint(arch) != space.fingerprint() and space.fingerprint(arch) == space.fingerprint(dict(arch))
