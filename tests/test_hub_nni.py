"""NNI's hub spaces: NAS-Bench-101 (cell limits, pruning, the benchmark's parameter count, its specs
as architectures), MobileNetV3Space (small inputs, NNI's named networks at 224 from the command
line), ShuffleNet's channel search, and NNI's argument names with archnas's older ones as aliases.

Networks at 224 are built on the meta device where only their parameters are counted: the count is
the same and nothing is allocated.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from archnas.cli import main
from archnas.errors import SpaceError
from archnas.hub import nb101_spec, parse_nb101_spec, searched_model, spos_arch
from archnas.nas.spaces import module_space
from archnas.ops.nasbench101 import prune_spec, vertex_channels
from archnas.descs.dataset_info import DatasetInfo
from archnas.space import SearchSpaceModel, create_space, fixed_arch, freeze

REPO = Path(__file__).resolve().parents[1]
DIGITS = (1, 8, 8)

# The benchmark's example spec (its README, and the fixed metrics of that graph in the dataset):
# 8,555,530 trainable parameters at stem 128, 3 stacks of 3 cells, CIFAR-10 (3x32x32, 10 classes).
NB101_EXAMPLE = {
    "module_adjacency": [[0, 1, 0, 0, 1, 1, 0], [0, 0, 1, 0, 0, 0, 0], [0, 0, 0, 1, 0, 0, 1], [0, 0, 0, 0, 0, 1, 0],
                         [0, 0, 0, 0, 0, 1, 0], [0, 0, 0, 0, 0, 0, 1], [0, 0, 0, 0, 0, 0, 0]],
    "module_operations": ["input", "conv3x3-bn-relu", "maxpool3x3", "conv3x3-bn-relu", "conv3x3-bn-relu",
                          "conv1x1-bn-relu", "output"],
}
TINY_NB101 = {"stem_out_channels": 4, "num_stacks": 2, "num_modules_per_stack": 1}


def params(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def test_nb101_example_spec_has_the_benchmarks_parameter_count():
    arch = parse_nb101_spec(NB101_EXAMPLE)
    assert arch["cell/num_nodes"] == 7 and arch["cell/input5"] == [0, 3, 4] and arch["cell/input6"] == [2, 5]
    assert nb101_spec(arch) == NB101_EXAMPLE
    with torch.device("meta"), fixed_arch(arch):
        net = create_space("nasbench101", input_shape=(3, 32, 32), n_classes=10)
    assert params(net) == 8_555_530


def test_nb101_cell_prunes_and_splits_widths_as_the_benchmark():
    # vertex 2 reads the input but feeds nothing on a path to the output; vertex 3 reads nothing
    matrix = [[0, 1, 1, 0, 0], [0, 0, 0, 0, 1], [0, 0, 0, 0, 0], [0, 0, 0, 0, 1], [0, 0, 0, 0, 0]]
    pruned, ops = prune_spec(matrix, ["input", "a", "b", "c", "output"])
    assert pruned == [[0, 1, 0], [0, 0, 1], [0, 0, 0]] and ops == ["input", "a", "output"]
    arch = parse_nb101_spec({"module_adjacency": matrix, "module_operations":
                             ["input", "conv1x1-bn-relu", "maxpool3x3", "conv3x3-bn-relu", "output"]})
    assert arch == {"cell/num_nodes": 3, "cell/op1": "conv1x1-bn-relu", "cell/input1": [0], "cell/input2": [1]}
    # 10 output channels over three feeding vertices: 4, 3, 3; vertex 1 feeds only vertex 2 and takes its width
    chain = [[0, 1, 0, 1, 1, 0], [0, 0, 1, 0, 0, 0], [0, 0, 0, 0, 0, 1], [0, 0, 0, 0, 0, 1], [0, 0, 0, 0, 0, 1],
             [0, 0, 0, 0, 0, 0]]
    assert vertex_channels(5, 10, chain) == [5, 4, 4, 3, 3, 10]


@pytest.mark.parametrize("spec,match", [
    ({"module_adjacency": [[0, 1, 1, 1, 1, 1, 1]] + [[0] * i + [0] + [1] * (6 - i) for i in range(1, 7)],
      "module_operations": ["input"] + ["conv3x3-bn-relu"] * 5 + ["output"]}, r"\d+ edges, at most max_num_edges=9"),
    ({"module_adjacency": [[0] * i + [0] + [1] + [0] * (6 - i) for i in range(7)] + [[0] * 8],
      "module_operations": ["input"] + ["maxpool3x3"] * 6 + ["output"]}, "8 vertices, at most max_num_vertices=7"),
    ({"module_adjacency": [[0, 1], [1, 0]], "module_operations": ["input", "output"]}, "upper-triangular"),
    ({"module_adjacency": [[0, 0, 0], [0, 0, 1], [0, 0, 0]], "module_operations": ["input", "maxpool3x3", "output"]},
     "no path joins the input to the output"),
    ({"module_adjacency": [[0, 1], [0, 0]], "module_operations": ["input", "output"], "hash": "x"}, "exactly the keys"),
], ids=["10 edges", "8 vertices", "not upper-triangular", "disconnected", "extra key"])
def test_nb101_refuses_specs_beyond_its_limits(spec, match):
    with pytest.raises(SpaceError, match=match):
        parse_nb101_spec(spec)


def test_nb101_space_labels_sampling_and_edge_limit():
    space = SearchSpaceModel(create_space("nasbench101", input_shape=DIGITS, n_classes=10, **TINY_NB101))
    assert list(space.specs) == ["cell/num_nodes", *(f"cell/op{i}" for i in range(1, 6)),
                                 *(f"cell/input{i}" for i in range(1, 7))]
    assert space.specs["cell/num_nodes"].prior[-1] == pytest.approx(2 ** 7 / sum(2 ** n for n in range(2, 8)))
    full = {"cell/num_nodes": 7, **{f"cell/op{i}": "maxpool3x3" for i in range(1, 6)},
            **{f"cell/input{i}": list(range(i)) for i in range(1, 7)}}
    with pytest.raises(SpaceError, match="21 edges, at most max_num_edges=9"):
        space.check_arch(full)
    # an architecture may leave out the labels its vertices never reach
    small = space.check_arch({"cell/num_nodes": 3, "cell/op1": "conv3x3-bn-relu", "cell/input1": [0],
                              "cell/input2": [0, 1]})
    net = freeze(space, small)
    assert net(torch.randn(2, *DIGITS)).shape == (2, 10)
    with fixed_arch(small):
        fresh = create_space("nasbench101", input_shape=DIGITS, n_classes=10, **TINY_NB101)
    assert list(fresh.state_dict()) == list(net.state_dict())
    # random search's draws: always within the limit, a pure function of the seed
    ms = module_space({"name": "nasbench101", **TINY_NB101})
    info = DatasetInfo(10, 1, (8, 8))
    draws = [ms.sample(info, seed) for seed in range(8)]
    assert draws[3] == ms.sample(info, 3) and len({json.dumps(d, sort_keys=True) for d in draws}) > 1
    for arch in draws:
        n = arch["cell/num_nodes"]
        assert sum(len(arch[f"cell/input{i}"]) for i in range(1, n)) <= 9
        assert ms.network(arch, info)(torch.randn(2, *DIGITS)).shape == (2, 10)


def test_mobilenetv3_at_digits_size_and_nnis_named_networks():
    widths = {"base_widths": (8, 8, 8, 8, 16, 16, 16, 32, 32), "width_multipliers": (0.5, 1.0),
              "expand_ratios": (1.0, 3.0), "depth_range": (1, 2)}
    space = SearchSpaceModel(create_space("mobilenetv3", input_shape=DIGITS, n_classes=10, **widths))
    labels = list(space.specs)
    assert labels[:6] == ["s0_width_mult", "stem_ks", "s0_i0_ks", "s1_depth", "s1_i0_exp", "s1_i0_ks"]
    assert {"s2_i0_se", "s5_i1_se", "s7_width_mult"} <= set(labels) and "s1_i0_se" not in labels
    assert space(torch.randn(2, *DIGITS)).shape == (2, 10)
    arch = space.sample_random_arch(torch.Generator().manual_seed(0))
    net = freeze(space, arch)
    assert net(torch.randn(2, *DIGITS)).shape == (2, 10)
    with fixed_arch(arch):
        fresh = create_space("mobilenetv3", input_shape=DIGITS, n_classes=10, **widths)
    assert params(fresh) == params(net)
    # an architecture of the default space at 224 (the k-th label at option k * 2 mod its count):
    # NNI 3.0's MobileNetV3Space builds the same labels, candidates and 1,552,152 parameters
    with torch.device("meta"):
        full = SearchSpaceModel(create_space("mobilenetv3", input_shape=(3, 224, 224), n_classes=1000))
    picked = full.check_arch({label: spec.values[2 * (i + 1) % len(spec.values)]
                              for i, (label, spec) in enumerate(full.specs.items())})
    with torch.device("meta"), fixed_arch(picked):
        assert params(create_space("mobilenetv3", input_shape=(3, 224, 224), n_classes=1000)) == 1_552_152
    # MobileNetV3-Large 1.0 as NNI's hub names it: torchvision's and timm's 5,483,032 parameters
    kwargs, large = searched_model("mobilenetv3-large-100")
    with torch.device("meta"), fixed_arch(large):
        assert params(create_space("mobilenetv3", input_shape=(3, 224, 224), n_classes=1000, **kwargs)) == 5_483_032


def test_stats_counts_mobilenetv3_small_at_224_from_the_command_line(capsys):
    """timm's mobilenetv3_small_100 has 2,542,856 parameters; no ImageNet images are read or made."""
    capsys.readouterr()
    assert main(["stats", "--config", str(REPO / "confs" / "hub" / "mobilenetv3_small_100.yaml"),
                 "--arch", "mobilenetv3-small-100"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["input_shape"] == [3, 224, 224] and out["n_classes"] == 1000
    assert out["params"] == 2_542_856 and out["macs"] == 56_510_400


def test_shufflenet_channel_search_has_nnis_labels_and_counts():
    with torch.device("meta"):
        specs = SearchSpaceModel(create_space("shufflenet", input_shape=(3, 224, 224), n_classes=1000,
                                              channel_search=True)).specs
    assert list(specs)[:4] == ["layer_1", "channel_1", "layer_2", "channel_2"] and len(specs) == 40
    assert specs["channel_1"].values == (6, 12, 19, 25, 32, 38, 44, 51)  # int(32 * 0.2k), 64 channels out
    assert specs["channel_20"].values[4] == 320  # 1.0x of half of 640
    one_x = {**spos_arch(), **{f"channel_{n}": specs[f"channel_{n}"].values[4] for n in range(1, 21)}}
    with torch.device("meta"), fixed_arch(one_x):
        net = create_space("shufflenet", input_shape=(3, 224, 224), n_classes=1000, channel_search=True)
    assert params(net) == 3_558_464  # SPOS's network at 1.0x: the count without channel search
    widest = {**one_x, **{f"channel_{n}": specs[f"channel_{n}"].values[7] for n in range(1, 21)}}
    with torch.device("meta"), fixed_arch(widest):
        net = create_space("shufflenet", input_shape=(3, 224, 224), n_classes=1000, channel_search=True)
    assert params(net) == 4_903_252  # at 1.6x: NNI 3.0's ShuffleNetSpace(channel_search=True) counts the same
    small = {"stage_out_channels": [8, 16, 24, 32, 40, 64], "stage_repeats": [1, 1, 2, 1], "channel_search": True}
    tiny = SearchSpaceModel(create_space("shufflenet", input_shape=DIGITS, n_classes=10, **small))
    arch = {**tiny.default_architecture(), "channel_2": tiny.specs["channel_2"].values[-1]}
    assert freeze(tiny, arch)(torch.randn(2, *DIGITS)).shape == (2, 10)
    with pytest.raises(SpaceError, match="channel_search needs stage widths of at least 10"):
        create_space("shufflenet", input_shape=DIGITS, n_classes=10, channel_search=True,
                     stage_out_channels=[4, 8, 16, 24, 32, 64])


def test_nni_argument_names_with_the_older_ones_as_aliases():
    nni = create_space("nb201", input_shape=DIGITS, n_classes=10, stem_out_channels=4, num_modules_per_stack=1,
                       num_labels=10)
    old = create_space("nb201", input_shape=DIGITS, n_classes=10, C=4, N=1)
    assert params(nni) == params(old) and list(nni.state_dict()) == list(old.state_dict())
    with pytest.raises(SpaceError, match="C and stem_out_channels are the same parameter"):
        create_space("nb201", input_shape=DIGITS, n_classes=10, C=4, stem_out_channels=4)
    with pytest.raises(SpaceError, match="num_labels is 1000, but the dataset has 10 classes"):
        create_space("proxylessnas", input_shape=DIGITS, n_classes=10, num_labels=1000)
