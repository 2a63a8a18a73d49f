"""DARTS genotypes: parsing both formats, writing, named genotypes, and desc conversion."""

from __future__ import annotations

import pytest
import torch
import yaml

from archnas.config.schema.model_desc import ModelDescConf, ModelStemsConf
from archnas.descs import (
    CellType,
    DatasetInfo,
    desc_to_genotype,
    named_genotype,
    named_genotypes,
    parse_genotype,
    resolve_genotype,
)
from archnas.errors import DescError
from archnas.model import Model, ModelDescBuilder, genotype_to_desc
from archnas.model.resolve import parse_checked_genotype

# DARTS_V2 exactly as `print(genotypes.DARTS_V2)` shows it in the DARTS code.
DARTS_V2_TEXT = (
    "Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 1), "
    "('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), ('dil_conv_3x3', 2)], normal_concat=[2, 3, 4, 5], "
    "reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), ('max_pool_3x3', 1), ('max_pool_3x3', 0), "
    "('skip_connect', 2), ('skip_connect', 2), ('max_pool_3x3', 1)], reduce_concat=[2, 3, 4, 5])"
)
TINY = DatasetInfo(n_classes=10, channels=3, image_size=(8, 8))
TINY_CONF = ModelDescConf(n_cells=3, model_stems=ModelStemsConf(init_node_ch=4))


def test_named_genotypes_and_the_darts_string_format():
    assert named_genotypes() == ["AMOEBANET", "DARTS_V1", "DARTS_V2", "ENAS", "NASNET", "PC_DARTS_CIFAR",
                                 "PC_DARTS_IMAGENET", "PNAS"]
    v2 = named_genotype("DARTS_V2")
    assert str(v2) == DARTS_V2_TEXT
    assert parse_genotype(DARTS_V2_TEXT) == v2
    assert v2.normal[7] == ("dil_conv_3x3", 2) and v2.reduce_concat == (2, 3, 4, 5)
    pc = named_genotype("PC_DARTS_cifar")  # the spelling of their genotypes.py
    assert pc == named_genotype("PC_DARTS_CIFAR") and pc.normal[0] == ("sep_conv_3x3", 1)
    assert named_genotype("PC_DARTS_IMAGENET").normal[7] == ("dil_conv_5x5", 4)
    for name in named_genotypes():
        g = named_genotype(name)
        assert parse_genotype(str(g)) == g


def test_range_concat_and_positional_fields_parse():
    text = DARTS_V2_TEXT.replace("normal_concat=[2, 3, 4, 5]", "normal_concat=range(2, 6)")
    assert parse_genotype(text) == named_genotype("DARTS_V2")
    g = named_genotype("DARTS_V1")
    positional = f"Genotype({list(g.normal)}, [2, 3, 4, 5], {list(g.reduce)}, range(2, 6))"
    assert parse_genotype(positional) == g


def test_yaml_form_round_trips():
    g = named_genotype("PC_DARTS_IMAGENET")
    text = yaml.safe_dump(g.to_dict())
    assert "normal_concat" in text and "Genotype" not in text
    assert parse_genotype(text) == g


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(DescError, match="unknown genotype 'DARTS_V3'; known genotypes: AMOEBANET, DARTS_V1, DARTS_V2, ENAS, NASNET"):
        named_genotype("DARTS_V3")
    with pytest.raises(DescError, match="known genotypes: AMOEBANET, DARTS_V1"):
        resolve_genotype("NASNET_B")


def test_resolve_accepts_names_strings_and_yaml():
    g = named_genotype("DARTS_V2")
    assert resolve_genotype("darts_v2") == g
    assert resolve_genotype(DARTS_V2_TEXT) == g
    assert resolve_genotype(yaml.safe_dump(g.to_dict())) == g


@pytest.mark.parametrize("text, message", [
    ("Genotype(normal=__import__('os').system('echo pwned'), normal_concat=[2], reduce=[], reduce_concat=[])",
     "only literals and range"),
    ("Genotype(normal=[('sep_conv_3x3', 0)] * 8, normal_concat=[2], reduce=[], reduce_concat=[])", "only literals"),
    ("print('hi')", r"expected Genotype\(\.\.\.\) or a YAML mapping"),
    ("Genotype(normal=[('sep_conv_3x3', 0)", "not a genotype string"),
    (DARTS_V2_TEXT.replace("('dil_conv_3x3', 2)", "('dil_conv_3x3', 5)"), r"normal\[7\]: node 3 can read inputs 0..4, got 5"),
    (DARTS_V2_TEXT.replace("('sep_conv_3x3', 1)", "('sep_conv_3x3', -1)", 1), r"normal\[1\]: node 0 can read inputs 0..1, got -1"),
    (DARTS_V2_TEXT.replace("dil_conv_3x3", "dil_conv_9x9"), r"normal\[7\]: unknown op 'dil_conv_9x9'; registered ops: "),
    (DARTS_V2_TEXT.replace("reduce_concat=[2, 3, 4, 5]", "reduce_concat=[5, 4, 9]"),
     r"reduce_concat: expected the increasing ids of the nodes the cell output concatenates, some of \[2, 3, 4, 5\]"),
    (DARTS_V2_TEXT.replace(", ('dil_conv_3x3', 2)]", "]"), "two per node"),
    (DARTS_V2_TEXT.replace("reduce_concat=", "extra=1, reduce_concat="), r"unknown \['extra'\]"),
    (DARTS_V2_TEXT.replace("('sep_conv_3x3', 0)", "('sep_conv_3x3', True)", 1), r"normal\[0\]: expected an \(op name, input id\)"),
])
def test_bad_genotypes_are_refused_without_running_code(text, message):
    with pytest.raises(DescError, match=message):
        parse_checked_genotype(text)


def test_genotype_to_desc_and_back():
    for name in named_genotypes():
        g = named_genotype(name)
        desc = genotype_to_desc(g, TINY_CONF, TINY)
        assert desc_to_genotype(desc) == g
        cell = desc.first_cell(CellType.reduction)
        strides = [e.op_desc.params["stride"] for e in cell.edges()]
        assert strides == [2 if i < 2 else 1 for _, i in g.reduce]
        assert all(e.op_desc.conv.ch_in == cell.nodes[0].conv_params.ch_out for e in cell.edges())


def test_a_genotype_builds_a_model_that_runs():
    desc = genotype_to_desc(named_genotype("PC_DARTS_CIFAR"), TINY_CONF, TINY)
    logits, _ = Model(desc, droppath=True, affine=True)(torch.randn(2, 3, 8, 8))
    assert logits.shape == (2, 10)


def test_a_supernet_has_no_genotype():
    with pytest.raises(DescError, match="cell 0 node 0: op 'mixed_op' is not a single-input final op"):
        desc_to_genotype(ModelDescBuilder().build(TINY_CONF, TINY))
    desc = genotype_to_desc(named_genotype("DARTS_V2"), TINY_CONF, TINY)
    desc.cells[0].nodes[1].edges.append(desc.cells[0].nodes[1].edges[0])
    with pytest.raises(DescError, match="cell 0 node 1: a genotype has 2 edges per node, this one has 3"):
        desc_to_genotype(desc)
