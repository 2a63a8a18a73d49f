"""The NDS cell family (NNI's hub nasnet.py) as registered spaces and as named DARTS genotypes, and
the DARTS ImageNet network: labels, loose ends, and the reference implementations' counts from the
command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from archnas.cli import main
from archnas.descs.genotypes import named_genotype
from archnas.hub import DARTS, ENAS, PNAS, AmoebaNet, NASNet, parse_nds_arch
from archnas.hub.nds import AMOEBA_OPS, DARTS_OPS, ENAS_OPS, NASNET_OPS, PNAS_OPS
from archnas.space import SearchSpaceModel, fixed_arch, freeze

REPO = Path(__file__).resolve().parents[1]
TINY = {"input_shape": (1, 8, 8), "n_classes": 10, "width": 4, "num_cells": 3}
FAMILY = [(NASNet, NASNET_OPS, 5, "NASNET"), (AmoebaNet, AMOEBA_OPS, 5, "AMOEBANET"), (PNAS, PNAS_OPS, 5, "PNAS"),
          (ENAS, ENAS_OPS, 5, "ENAS"), (DARTS, DARTS_OPS, 4, "DARTS_V2")]


def _stats(capsys, *argv: str) -> dict:
    assert main(["stats", *argv]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.usefixtures("one_thread")
def test_each_space_has_nni_labels_and_its_genotype_network_runs_with_loose_ends():
    x = torch.randn(2, 1, 8, 8)
    for cls, ops, nodes, name in FAMILY:
        space = SearchSpaceModel(cls(**TINY))
        expected = {f"{cell}/{kind}_{i}_{k}" for cell in ("normal", "reduce") for kind in ("op", "input")
                    for i in range(2, 2 + nodes) for k in range(2)}
        assert set(space.specs) == expected, cls.__name__
        assert space.specs["reduce/op_3_1"].choices == ops
        assert space.specs["normal/input_4_0"].values == (0, 1, 2, 3)
        arch = parse_nds_arch(name)
        with fixed_arch(arch):
            net = cls(**TINY).eval()
        assert net(x).shape == (2, 10)
        genotype = named_genotype(name)
        cells = [cell for stage in net.stages for cell in stage]
        normal, reduce = cells[0], cells[1]  # 3 cells: one per stage, the second a reduction cell
        assert normal.output_node_indices == list(genotype.normal_concat), cls.__name__
        assert reduce.output_node_indices == list(genotype.reduce_concat), cls.__name__


@pytest.mark.usefixtures("one_thread")
def test_the_supernet_at_an_architecture_computes_its_frozen_network():
    """ENAS's cells read any input; a reduction cell's ops stride on the cell inputs only, so the
    supernet at the ENAS genotype (whose reduction node 6 reads nodes 4 and 5) runs, bitwise as its
    frozen network does. The supernet concatenates every node (NNI's one-shot reading of loose
    ends); the network of the architecture (`fixed_arch`) only the loose ends, sized for them."""
    torch.manual_seed(0)
    space = SearchSpaceModel(ENAS(**TINY)).eval()
    arch = parse_nds_arch("ENAS")
    space.set_architecture(arch)
    x = torch.randn(2, 1, 8, 8)
    torch.testing.assert_close(space(x), freeze(space, arch).eval()(x), rtol=0, atol=0)
    assert space.model.stages[1][0].output_node_indices == [2, 3, 4, 5, 6]
    with fixed_arch(arch):
        assert ENAS(**TINY).classifier.in_features == 3 * 4 * 4  # the last cell reduces: loose ends 2, 3, 6 at 4C


@pytest.mark.usefixtures("one_thread")
def test_nasnet_and_amoebanet_counts_at_the_darts_cifar_eval_macro(capsys):
    """The DARTS paper's Table 1 lists NASNet-A at 3.3M and AmoebaNet-A at 3.2M parameters: the
    numbers of the original papers, for their own networks. The reference implementation here is
    the DARTS code (quark0/darts, cnn/): its genotypes.py holds both cells (NASNet, AmoebaNet), its
    NetworkCIFAR builds them at the eval macro of confs/darts_cifar10.yaml (20 cells, 36
    channels, aux head after cell 13), and its train.py reports `count_parameters_in_MB`, which
    leaves out every parameter named `auxiliary`: without the aux head. Built with that code (torch
    2.13, counting `model.named_parameters()`), NASNet has 4,288,944 parameters, 3,830,950 without
    the aux head (its 5-node cells at 36 channels are larger than the NASNet paper's network: it is
    not the 3.3M network); AmoebaNet 3,603,072 and 3,145,078 (3.1M, the paper's 3.2M within its
    own macro's rounding). The aux head is 457,994 parameters in both (and in DARTS_V2's 3,825,768
    and 3,349,342, the counts the README states). `archnas stats --genotype` prints both numbers;
    the NDS spaces at width 36, 20 cells, at these genotypes, count the same."""
    conf = str(REPO / "confs" / "darts_cifar10.yaml")
    for name, total, without_aux in (("NASNET", 4_288_944, 3_830_950), ("AMOEBANET", 3_603_072, 3_145_078)):
        out = _stats(capsys, "--config", conf, "--genotype", name)
        assert (out["params"], out["params_without_aux"], out["input_shape"]) == (total, without_aux, [3, 32, 32])
    with fixed_arch(parse_nds_arch("NASNET")), torch.device("meta"):
        net = NASNet(width=36, num_cells=20, auxiliary_loss=True)
    assert sum(p.numel() for p in net.parameters()) == 4_288_944
    assert sum(p.numel() for p in net.auxiliary_head.parameters()) == 4_288_944 - 3_830_950


@pytest.mark.usefixtures("one_thread")
def test_darts_imagenet_counts_without_the_data(capsys, tmp_path):
    """confs/darts_imagenet.yaml names an imagefolder set under a folder that does not exist: its
    declared size and n_classes are all `stats` needs. 4,718,752 is DARTS_V2's ImageNet network
    without the aux head, as the DARTS code's NetworkImageNet(48, 1000, 14) counts it."""
    out = _stats(capsys, "--config", str(REPO / "confs" / "darts_imagenet.yaml"), "--genotype", "DARTS_V2",
                 f"dataset.dataroot={tmp_path}/absent")
    assert (out["params_without_aux"], out["n_classes"], out["input_shape"]) == (4_718_752, 1000, [3, 224, 224])
    assert not (tmp_path / "absent").exists()


@pytest.mark.usefixtures("one_thread")
def test_a_named_genotype_is_an_architecture_of_the_nds_spaces_and_of_darts_cells(capsys, tmp_path):
    conf = tmp_path / "c.yaml"
    conf.write_text("dataset: {name: digits}\nnas: {search: {space: {name: nasnet, width: 4, num_cells: 3}}}\n")
    out = _stats(capsys, "--config", f"{REPO / 'confs' / 'darts.yaml'},{conf}", "--arch", "NASNET")
    assert out["arch"] == parse_nds_arch("NASNET")
    with fixed_arch(parse_nds_arch("NASNET")):
        assert out["params"] == sum(p.numel() for p in NASNet(**TINY).parameters())
    assert parse_nds_arch("darts-v2") == parse_nds_arch("DARTS_V2")  # NNI's name of the searched DARTS cell
    out = _stats(capsys, "--config", str(REPO / "confs" / "darts.yaml"), "nas.eval.final_desc=ENAS")
    assert out["source"] == "nas.eval.final_desc ENAS" and out["params"] > 0
