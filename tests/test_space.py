"""Search spaces over a user's module: every primitive in fixed and search mode, label sharing,
value choices and weight slicing, freeze and fixed_arch against the search-space model, the ENOT
and NNI APIs, architecture files, NAS-Bench-201's counts, and bad input."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import archnas.hub  # noqa: F401
from archnas.descs.genotypes import named_genotype
from archnas.errors import SpaceError
from archnas.hub.nb201 import NasBench201, all_nb201_archs, nb201_string, parse_nb201_string
from archnas.space import (
    Cell, InputChoice, LayerChoice, NasBench201Cell, Repeat, SearchSpaceModel, SearchVariantsContainer, ValueChoice,
    Weighting, create_space, fixed_arch, freeze, register_supernet_module,
)
from archnas.space import nn as snn
from archnas.space.arch_io import arch_to_genotype, genotype_to_arch, parse_arch, save_arch
from archnas.space.choice import Choice

REPO = Path(__file__).resolve().parents[1]
PLUGINS = REPO / "tests" / "fixtures" / "plugins"
sys.path.insert(0, str(PLUGINS))
from my_space import build as build_my_space  # noqa: E402


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny ops: see conftest.one_thread


def space_modules(net: nn.Module) -> set[str]:
    return {type(m).__name__ for m in net.modules() if type(m).__module__.startswith("archnas.space")}


def soft(space: SearchSpaceModel) -> SearchSpaceModel:
    """The DARTS weighting: every candidate mixed by softmax(alpha)."""
    space.arch.use(Weighting())
    return space


# -- the primitives ------------------------------------------------------------------------------


class Primitives(nn.Module):
    """One of every primitive, small enough to check by hand."""

    def __init__(self):
        super().__init__()
        self.layer = LayerChoice(OrderedDict([("conv", nn.Conv2d(4, 4, 3, padding=1)), ("id", nn.Identity())]),
                                 label="layer")
        self.inputs = InputChoice(3, 2, "sum", label="inputs")
        self.cell = Cell([nn.Conv2d(4, 4, 1), nn.Identity()], num_nodes=2, num_predecessors=2, label="cell")
        self.svc = SearchVariantsContainer([nn.ReLU(), nn.Tanh()], default_operation_index=1)
        self.repeat = Repeat(nn.Conv2d(4, 4, 3, padding=1), (1, 3), label="depth")
        self.dense = NasBench201Cell({"skip": lambda i, o: nn.Identity(), "conv": lambda i, o: nn.Conv2d(i, o, 1)},
                                     4, 4, num_tensors=3, label="nb")

    def forward(self, x):
        a = self.layer(x)
        b = self.inputs([x, a, 2 * x])
        c = self.cell([a, b])  # 2 nodes of 4 channels, concatenated
        d = self.svc(self.repeat(c[:, :4] + c[:, 4:]))
        return self.dense(d)


def test_every_primitive_runs_in_search_and_fixed_mode_and_freezes_to_the_same_function():
    torch.manual_seed(0)
    space = SearchSpaceModel(Primitives()).eval()
    labels = set(space.specs)
    assert {"layer", "inputs", "cell/op_2_0", "cell/input_2_0", "cell/op_3_0", "cell/input_3_0", "svc", "depth",
            "nb__0_1", "nb__0_2", "nb__1_2"} == labels
    x = torch.randn(2, 4, 6, 6)
    out = soft(space).train()(x)  # DARTS: every candidate, weighted
    out.square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in space.arch_params())
    space.eval()
    generator = torch.Generator().manual_seed(1)
    for _ in range(20):
        arch = space.sample_random_arch(generator)
        net = freeze(space, arch)
        assert not space_modules(net), space_modules(net)
        torch.testing.assert_close(space(x), net(x), rtol=0, atol=0)


def test_input_choice_of_several_reduces_the_chosen_inputs():
    choice = InputChoice(3, 2, "concat", label="i")
    space = SearchSpaceModel(nn.ModuleDict({"i": choice}))
    xs = [torch.full((1, 1), float(k)) for k in range(3)]
    space.set_architecture({"i": [2, 0]})
    with space.bound_arch():
        assert choice(xs).flatten().tolist() == [0.0, 2.0]
    assert freeze(space, {"i": [0, 2]})["i"](xs).flatten().tolist() == [0.0, 2.0]


def test_layer_choice_behaves_as_a_container():
    layer = LayerChoice([nn.ReLU(), nn.Tanh(), nn.Sigmoid()], label="act")
    assert len(layer) == 3 and layer.names == [0, 1, 2] and isinstance(layer[1], nn.Tanh)
    assert [type(m) for m in layer] == [nn.ReLU, nn.Tanh, nn.Sigmoid]
    layer[2] = nn.Identity()
    del layer[0]
    assert layer.names == [1, 2] and isinstance(layer[2], nn.Identity)
    named = LayerChoice(OrderedDict([("a", nn.ReLU()), ("b", nn.Tanh())]))
    assert named.names == ["a", "b"] and isinstance(named["b"], nn.Tanh)
    nested = LayerChoice([LayerChoice([nn.ReLU(), nn.Tanh()], label="inner"), nn.Identity()], label="outer")
    space = SearchSpaceModel(nn.Sequential(nested))
    assert set(space.specs) == {"outer", "inner"}
    net = freeze(space, {"outer": 0, "inner": 1})
    assert isinstance(net[0], nn.Tanh) and not space_modules(net)


def test_shared_labels_are_one_choice_and_unlabelled_ones_take_their_path():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = LayerChoice([nn.ReLU(), nn.Tanh()], label="act")
            self.b = LayerChoice([nn.ReLU(), nn.Tanh()], label="act")
            self.c = LayerChoice([nn.ReLU(), nn.Tanh()])

        def forward(self, x):
            return self.c(self.b(self.a(x)))

    space = SearchSpaceModel(Net())
    assert list(space.specs) == ["act", "c"] and len(list(space.arch_params())) == 2
    space.set_architecture({"act": 1, "c": 0})
    net = freeze(space, {"act": 1, "c": 0})
    assert isinstance(net.a, nn.Tanh) and isinstance(net.b, nn.Tanh) and isinstance(net.c, nn.ReLU)

    class Clash(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = LayerChoice([nn.ReLU(), nn.Tanh()], label="act")
            self.b = LayerChoice([nn.ReLU(), nn.Tanh(), nn.Identity()], label="act")

    with pytest.raises(SpaceError, match="choices labelled 'act' at a and b differ"):
        SearchSpaceModel(Clash())


def test_value_choice_arithmetic_and_its_options():
    a, b = ValueChoice([1, 2, 3], label="a"), ValueChoice([4, 5], label="b")
    expr = a * 2 + b
    assert sorted(expr.all_options()) == [6, 7, 8, 9, 10, 11]
    assert expr.evaluate({"a": 3, "b": 4}) == 10
    assert (a - 1).evaluate({"a": 1}) == 0 and (10 // a).evaluate({"a": 3}) == 3 and (7 - a).evaluate({"a": 2}) == 5
    assert round(a / 2).evaluate({"a": 3}) == 2
    assert ValueChoice.max(a, b).evaluate({"a": 3, "b": 4}) == 4 and ValueChoice.min(a, b).evaluate({"a": 3, "b": 4}) == 3
    assert ValueChoice.condition(a > 2, 100, 0).evaluate({"a": 3}) == 100
    assert sorted(ValueChoice.condition(a >= b, 1, 0).all_options()) == [0]
    with pytest.raises(SpaceError, match="has no value until the architecture is chosen"):
        bool(a)
    assert {x.label for x in expr.leaves()} == {"a", "b"}


def test_value_choice_layers_share_the_largest_weight_and_slice_it():
    torch.manual_seed(0)
    width, kernel = ValueChoice([2, 4], label="w"), ValueChoice([1, 3], label="k")
    conv = snn.Conv2d(3, width, kernel, padding=(kernel - 1) // 2)
    assert type(conv) is snn.Conv2d and conv.weight.shape == (4, 3, 3, 3)
    assert type(snn.Conv2d(3, 4, 3)) is nn.Conv2d  # no choice: the plain layer
    space = SearchSpaceModel(nn.Sequential(conv, snn.BatchNorm2d(width), nn.Flatten(), snn.Linear(width * 16, 5)))
    x = torch.randn(2, 3, 4, 4)
    space.eval()
    space.set_architecture({"w": 2, "k": 1})
    net = freeze(space, {"w": 2, "k": 1})
    assert net[0].weight.shape == (2, 3, 1, 1) and net[1].num_features == 2 and net[3].in_features == 32
    assert torch.equal(net[0].weight, conv.weight[:2, :, 1:2, 1:2])  # the centre of the largest kernel
    torch.testing.assert_close(space(x), net(x), rtol=0, atol=0)
    # soft weights: one convolution at the largest size whose weight mixes the values' slices
    soft(space)
    probs = {label: F.softmax(space.arch.alpha(label), -1).detach() for label in ("w", "k")}
    with torch.no_grad(), space.bound_arch():
        y = conv(x)
    expected = 0
    for i, w in enumerate((2, 4)):
        for j, k in enumerate((1, 3)):
            weight = torch.zeros_like(conv.weight)
            o = (3 - k) // 2
            weight[:w, :, o:o + k, o:o + k] = conv.weight[:w, :, o:o + k, o:o + k]
            bias = torch.zeros(4)
            bias[:w] = conv.bias[:w]
            expected = expected + probs["w"][i] * probs["k"][j] * F.conv2d(x, weight, bias, padding=1)
    torch.testing.assert_close(y, expected)


def test_repeat_depths_fixed_and_mixed():
    blocks = Repeat(lambda i: nn.Linear(2, 2, bias=False), (0, 2), label="d")
    space = SearchSpaceModel(nn.Sequential(blocks))
    x = torch.randn(3, 2)
    w0, w1 = blocks.blocks[0].weight, blocks.blocks[1].weight
    for d, expected in ((0, x), (1, x @ w0.T), (2, x @ w0.T @ w1.T)):
        space.set_architecture({"d": d})
        torch.testing.assert_close(space(x), expected)
        assert len(freeze(space, {"d": d})[0]) == d
    soft(space)
    p = F.softmax(space.arch.alpha("d"), -1)
    torch.testing.assert_close(space(x), p[0] * x + p[1] * x @ w0.T + p[2] * x @ w0.T @ w1.T)
    assert isinstance(Repeat(nn.ReLU(), 3), nn.Sequential)  # a fixed depth is no choice


def test_cell_labels_and_loose_ends_as_nni():
    cell = Cell(["skip_connect", "sep_conv_3x3"], num_nodes=3, num_predecessors=2, merge_op="loose_end", label="normal",
                channels=4)
    space = SearchSpaceModel(nn.ModuleList([cell]))
    assert set(space.specs) == {"normal/op_2_0", "normal/input_2_0", "normal/op_3_0", "normal/input_3_0",
                                "normal/op_4_0", "normal/input_4_0"}
    assert space.specs["normal/input_4_0"].choices == (0, 1, 2, 3)
    arch = {"normal/op_2_0": "skip_connect", "normal/input_2_0": 0, "normal/op_3_0": "sep_conv_3x3",
            "normal/input_3_0": 2, "normal/op_4_0": "skip_connect", "normal/input_4_0": 1}
    net = freeze(space, arch)
    assert net[0].output_node_indices == [3, 4]  # node 2 feeds node 3: not a loose end
    x = [torch.randn(1, 4, 5, 5), torch.randn(1, 4, 5, 5)]
    assert net[0](x).shape == (1, 8, 5, 5)
    with fixed_arch(arch):
        fixed = Cell(["skip_connect", "sep_conv_3x3"], num_nodes=3, num_predecessors=2, merge_op="loose_end",
                     label="normal", channels=4)
    assert fixed.output_node_indices == [3, 4] and list(fixed.state_dict()) == list(net[0].state_dict())


# -- SearchSpaceModel: ENOT's and NNI's interfaces -----------------------------------------------


def test_enot_interface_over_search_variants_containers():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = SearchVariantsContainer([nn.Linear(3, 3), nn.Identity()], default_operation_index=1)
            self.b = SearchVariantsContainer([nn.ReLU(), nn.Tanh(), nn.Sigmoid()])

        def forward(self, x):
            return self.b(self.a(x))

    model = Net()
    with pytest.raises(SpaceError, match="without default_operation_index"):
        model(torch.randn(2, 3))  # before wrapping: ENOT refuses a container without a default
    space = SearchSpaceModel(model)
    assert space.search_variants_containers == [model.a, model.b]
    assert space.forward_architecture == [1, 0]  # the defaults
    assert [p.shape for p in space.architecture_probabilities] == [(2,), (3,)]
    assert {id(p) for p in space.model_parameters()}.isdisjoint(id(p) for p in space.architecture_parameters())
    space.forward_architecture = [0, 2]
    x = torch.randn(2, 3)
    torch.testing.assert_close(space(x), torch.sigmoid(model.a.search_variants[0](x)))
    net = space.get_network_by_indexes([0, 1])
    assert isinstance(net.a, nn.Linear) and isinstance(net.b, nn.Tanh)
    space.sample_random_arch()
    with torch.no_grad():
        space.arch.alpha("b")[2] = 5.0
    best = space.sample_best_arch()
    assert best["b"] == 2 and space.forward_architecture[1] == 2
    assert isinstance(space.get_network_with_best_arch().b, nn.Sigmoid)
    with pytest.raises(SpaceError, match="expected 2 indices"):
        space.forward_architecture = [0]


def test_index_views_refuse_spaces_with_other_choices():
    space = SearchSpaceModel(build_my_space((1, 8, 8), 10))
    with pytest.raises(SpaceError, match=r"freeze\(model, \{label: choice\}\)"):
        space.get_network_by_indexes([0, 0])


def test_nested_containers_and_models_without_choices_are_refused():
    inner = SearchVariantsContainer([nn.ReLU(), nn.Tanh()])
    with pytest.raises(SpaceError, match="cannot be nested"):
        SearchSpaceModel(nn.Sequential(SearchVariantsContainer([inner, nn.Identity()])))
    with pytest.raises(SpaceError, match="Sequential has no choices"):
        SearchSpaceModel(nn.Sequential(nn.Linear(2, 2)))


def test_a_registered_supernet_module_replaces_matching_modules():
    class Gate(nn.Module):  # the user's own module, made searchable by their hook
        def forward(self, x):
            return x

    @register_supernet_module
    class SearchableGate(LayerChoice):
        @classmethod
        def mutate(cls, module, name, memo, mutate_kwargs):
            if isinstance(module, Gate):
                return cls([nn.Identity(), nn.ReLU()], label=f"gate_{name}")
            return None

    space = SearchSpaceModel(nn.Sequential(Gate(), nn.Linear(2, 2)))
    assert list(space.specs) == ["gate_0"] and isinstance(space.model[0], SearchableGate)
    assert issubclass(SearchableGate, Choice)
    from archnas.space import model as space_model

    space_model._SUPERNET_MODULES.remove(SearchableGate)


def test_supernet_module_contract():
    space = SearchSpaceModel(Primitives())
    choice = space.model.layer
    assert set(choice.search_space_spec()) == {"layer"}
    memo = {"layer": "id"}
    assert choice.resample(memo) == {} and memo == {"layer": "id"}
    assert choice.resample({}, torch.Generator().manual_seed(0))["layer"] in ("conv", "id")
    with torch.no_grad():
        space.arch.alpha("layer")[1] = 1.0
    assert choice.export({}) == {"layer": "id"}
    assert space.export()["layer"] == "id"


def test_prior_biases_sampling():
    space = SearchSpaceModel(nn.Sequential(LayerChoice([nn.ReLU(), nn.Tanh()], prior=[0.0, 1.0], label="p")))
    g = torch.Generator().manual_seed(0)
    assert all(space.sample_random_arch(g)["p"] == 1 for _ in range(20))


# -- freeze, fixed_arch and architecture files ---------------------------------------------------


def test_freeze_equals_the_space_at_20_random_nb201_architectures():
    torch.manual_seed(0)
    space = SearchSpaceModel(NasBench201((3, 8, 8), 10, stem_out_channels=4, num_modules_per_stack=1)).eval()
    x = torch.randn(4, 3, 8, 8)
    g = torch.Generator().manual_seed(3)
    for _ in range(20):
        arch = space.sample_random_arch(g)
        net = freeze(space, arch).eval()
        assert not space_modules(net)
        torch.testing.assert_close(space(x), net(x), rtol=1e-6, atol=1e-6)
        with fixed_arch(arch):
            fresh = NasBench201((3, 8, 8), 10, stem_out_channels=4, num_modules_per_stack=1)
        assert list(fresh.state_dict()) == list(net.state_dict())
        assert sum(p.numel() for p in fresh.parameters()) == sum(p.numel() for p in net.parameters())


def test_freeze_carries_the_trained_weights_and_running_statistics():
    space = SearchSpaceModel(build_my_space((1, 8, 8), 10))
    space.train()
    space.set_architecture({"width": 16, "depth": 1, "block0": "conv3", "skip0": 0, "block1": "pool", "skip1": 1})
    space(torch.randn(8, 1, 8, 8))
    net = freeze(space, space.architecture)
    bn = space.model.stem[1]
    assert torch.equal(net.stem[1].running_mean, bn.running_mean[:16]) and net.stem[1].num_batches_tracked == 1
    assert net.blocks[0].op.weight.data_ptr() != space.model.blocks.blocks[0].op["conv3"].weight.data_ptr()


def test_architecture_files_round_trip_and_refuse_other_spaces(tmp_path):
    space = SearchSpaceModel(NasBench201((3, 8, 8), 10, stem_out_channels=4, num_modules_per_stack=1))
    arch = space.sample_random_arch(torch.Generator().manual_seed(0))
    path = save_arch(tmp_path, arch, "nb201", space.labels_key())
    assert parse_arch(str(path), space.labels_key()) == arch
    assert json.loads((tmp_path / "arch.json").read_text())["arch"] == arch
    assert parse_arch(json.dumps(arch)) == arch and parse_arch("{cell__0_1: none}") == {"cell__0_1": "none"}
    with pytest.raises(SpaceError, match="written for another space"):
        parse_arch(str(path), "0" * 16)
    with pytest.raises(SpaceError, match=r"unknown labels 'cell__9_9'; the space's labels: cell__0_1"):
        space.check_arch({**arch, "cell__9_9": "none"})
    with pytest.raises(SpaceError, match=r"'cell__0_1': 'conv_7x7' is not one of its candidates none, skip_connect"):
        space.check_arch({**arch, "cell__0_1": "conv_7x7"})
    with pytest.raises(SpaceError, match=r"no value for 'cell__2_3'"):
        space.check_arch({k: v for k, v in arch.items() if k != "cell__2_3"})


def test_nni_darts_v2_architecture_is_darts_v2():
    """NNI's DARTS labels: node i >= 2 (after the two cell inputs), k-th kept edge."""
    genotype = named_genotype("DARTS_V2")
    arch = genotype_to_arch(genotype)
    assert arch["normal/op_2_0"] == "sep_conv_3x3" and arch["normal/input_2_0"] == 0
    assert arch["normal/op_2_1"] == "sep_conv_3x3" and arch["normal/input_2_1"] == 1
    assert arch["reduce/op_5_1"] == "max_pool_3x3" and arch["reduce/input_5_1"] == 1
    assert len(arch) == 32 and arch_to_genotype(arch) == genotype
    with pytest.raises(SpaceError, match="unknown labels normal/op_9_0"):
        arch_to_genotype({**arch, "normal/op_9_0": "skip_connect"})


def test_every_nb201_architecture_converts_to_its_string_and_back():
    archs = list(all_nb201_archs())
    strings = {nb201_string(a) for a in archs}
    assert len(archs) == len(strings) == 15_625
    assert all(parse_nb201_string(nb201_string(a)) == a for a in archs)
    nni = "|conv_3x3~0|+|conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|conv_1x1~1|none~2|"
    assert nb201_string(parse_nb201_string(nni)) == nni.replace("conv_3x3", "nor_conv_3x3").replace("conv_1x1", "nor_conv_1x1")
    for bad, message in (("|conv_3x3~0|+|none~0|", "expected 3 nodes"), ("|conv_9x9~0|+|none~0|none~1|+|none~0|none~1|none~2|",
                                                                            "unknown op 'conv_9x9'"),
                         ("|none~1|+|none~0|none~1|+|none~0|none~1|none~2|", "must be 'op~0'")):
        with pytest.raises(SpaceError, match=message):
            parse_nb201_string(bad)


# NAS-Bench-201 at its reference size on CIFAR-10 (C=16, N=5, 3x32x32). Derivation: the fixed part
# (stem conv 3*16*9 = 432 + BN 32; residual blocks 16->32 (4,608 + 64 + 9,216 + 64 + 512) and
# 32->64 (18,432 + 128 + 36,864 + 128 + 2,048); last BN 128; classifier 64*10 + 10) has 73,306
# parameters and 7,783,040 multiply-adds (stem 432 * 32^2, the blocks' convs at 16^2 and 8^2,
# 640 for the classifier). A conv_3x3 edge adds 9C^2 + 2C parameters and 9C^2 * HW multiply-adds
# (2,359,296 at every stage: C doubles as HW quarters); conv_1x1 C^2 + 2C and 262,144; the other
# ops nothing. Each of the 6 labels is the same edge in 5 cells at each of 3 stages.
REFERENCE = [
    ("|none~0|+|none~0|none~1|+|none~0|none~1|none~2|", 73_306, 7_783_040),
    ("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|",
     1_531_546, 220_119_680),
    # 3 conv_3x3 edges: 73,306 + 5 * 3 * (2,336 + 9,280 + 36,992) = 802,426; 7,783,040 + 45 * 2,359,296
    ("|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|",
     802_426, 113_951_360),
    # 6 conv_1x1 edges: 73,306 + 5 * 6 * (288 + 1,088 + 4,224) = 241,306; 7,783,040 + 90 * 262,144
    ("|nor_conv_1x1~0|+|nor_conv_1x1~0|nor_conv_1x1~1|+|nor_conv_1x1~0|nor_conv_1x1~1|nor_conv_1x1~2|",
     241_306, 31_376_000),
]


@pytest.mark.parametrize("string,params,macs", REFERENCE)
def test_stats_of_nb201_architectures_are_the_reference_counts(string, params, macs):
    out = subprocess.run([sys.executable, "-m", "archnas", "stats", "--config", str(REPO / "confs" / "darts_nb201.yaml"),
                          "--dataset.name", "cifar10", "--arch", string], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr[-2000:]
    stats = json.loads(out.stdout)
    assert (stats["params"], stats["macs"]) == (params, macs)


def test_stats_of_a_space_give_its_range():
    from archnas.latency import SpaceCosts

    space = SearchSpaceModel(create_space("nb201", input_shape=(3, 32, 32), n_classes=10))
    out = SpaceCosts(space.specs, lambda arch: freeze(space, arch), [3, 32, 32], held_out=3).report(["params", "macs"])
    assert (out["params"]["min"], out["params"]["max"]) == (73_306, 1_531_546)
    assert (out["macs"]["min"], out["macs"]["max"]) == (7_783_040, 220_119_680)
    assert set(out["params"]["arch_max"].values()) == {"conv_3x3"} and out["archs"] == 15_625
    assert out["params"]["exact"] and out["macs"]["over"].startswith("enumerated")


def test_a_strategy_weighting_drives_a_space_and_alphas_never_reach_the_weight_optimizer(tmp_path):
    """The same ArchTrainer and bilevel step train a space over a module."""
    from tiny_algos import tiny_conf

    from archnas.context import RunContext
    from archnas.nas.phase import Experiment
    from archnas.nas.registry import algorithm_class
    from archnas.nas.searcher import Searcher, load_data
    from archnas.nas.spaces import module_space

    conf = tiny_conf("darts", f"common.results_dir={tmp_path}", "nas.search.space={name: nb201, C: 4, N: 1}")
    run = RunContext.create(conf, tmp_path / "exp", [])
    searcher = Searcher(Experiment(run, algorithm_class("darts")(conf)))
    ctx = run.phase("search", conf.nas.search)
    data = load_data(ctx, conf.nas.search.loader)
    model = module_space(conf.nas.search.space).supernet(data.info)
    model.arch.use(searcher.strategy.weighting())
    trainer = searcher.build_trainer(ctx, model, "fp", data)
    weights = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    assert weights.isdisjoint(id(p) for p in model.arch_params())
    before = [p.detach().clone() for p in model.arch_params()]
    trainer.run_step(next(data.loader("train", training=True).epoch(0)))
    assert all(not torch.equal(a, p) for a, p in zip(before, model.arch_params()))
    ctx.close()


PLUGIN_CASES = [  # in fresh processes: which plugins are loaded is the point
    (["nas.search.space={factory: 'no_such_module:build'}"], "'no_such_module' is not a loaded plugin"),
    (["nas.search.space={factory: 'my_space:build'}"], "--import my_space"),  # a factory's module is a plugin
    (["--import", "my_space", "nas.search.space={factory: 'my_space:nothing'}"], "has no callable 'nothing'"),
]
SPACE_CASES = [
    (["nas.search.space={name: nb201, C: 4, M: 2}"], "unknown parameters M"),
    (["nas.search.space={name: nb999}"], "unknown space 'nb999'"),
    (["--no-search", "nas.eval.final_desc={cell__0_1: none}"], "no value for"),
    (["--no-search", "nas.eval.final_desc=" + json.dumps({**next(all_nb201_archs()), "cell__0_1": "conv_9x9"})],
     "'cell__0_1': 'conv_9x9' is not one of its candidates"),
    (["--no-search", "nas.eval.final_desc=|conv_9x9~0|+|none~0|none~1|+|none~0|none~1|none~2|"], "unknown op 'conv_9x9'"),
    (["--no-search", "nas.eval.final_desc={cell__7_7: none}"], "unknown labels 'cell__7_7'"),
    (["nas.algo=pc_darts", "nas.search.space={name: mobilenet, blocks_out_channels: [8], blocks_count: [1], "
      "blocks_stride: [1], stem_channels: 4, head_channels: 16}"], "pc_darts cannot search it"),
]


def _space_command(tmp_path: Path, *extra: str) -> list[str]:
    return ["--config", str(REPO / "confs" / "darts_nb201.yaml"), f"common.results_dir={tmp_path}",
            "nas.search.trainer.epochs=1", *extra]


@pytest.mark.parametrize("extra,message", PLUGIN_CASES)
def test_a_bad_space_factory_is_one_message(tmp_path, extra, message):
    out = subprocess.run([sys.executable, "-m", "archnas", *_space_command(tmp_path, *extra)], capture_output=True,
                         text=True, cwd=tmp_path, env={"PYTHONPATH": str(PLUGINS), "PATH": "/usr/bin:/bin"})
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1 and message in lines[0] and "Traceback" not in out.stderr, \
        (extra, out.stderr[-1500:])


@pytest.mark.parametrize("extra,message", SPACE_CASES)
def test_bad_space_input_is_one_message(tmp_path, capsys, extra, message):
    from archnas.cli import main

    capsys.readouterr()
    code = main(_space_command(tmp_path, *extra))
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and message in lines[0] and "Traceback" not in err, (extra, err[-1500:])


def test_a_choice_called_outside_its_model_runs_its_default():
    layer = LayerChoice([nn.Identity(), nn.ReLU()], label="x")
    x = torch.tensor([-1.0])
    assert torch.equal(layer(x), x)
    copy.deepcopy(SearchSpaceModel(nn.Sequential(layer)))  # copies and pickles rebuild the modules themselves


def test_the_readme_example_runs():
    """README "Search spaces over your own model": its Python block, run as written."""
    text = (REPO / "README.md").read_text().split("### Search spaces over your own model", 1)[1]
    code = text.split("```python", 1)[1].split("```", 1)[0]
    scope = {"images": torch.randn(2, 1, 8, 8)}
    exec(compile(code, "README.md", "exec"), scope)
    assert scope["logits"].shape == (2, 10) and not space_modules(scope["net"])


def test_nb201_cells_can_search_with_plain_batch_norm_as_the_reference_code_does():
    """`affine` / `track_running_stats` reach the cells' conv ops only (stem and residual blocks keep theirs)."""
    default = create_space("nb201", input_shape=(1, 8, 8), n_classes=10, C=4, N=1)
    plain = create_space("nb201", input_shape=(1, 8, 8), n_classes=10, C=4, N=1, affine=False, track_running_stats=False)
    in_cells = [m for c in plain.cells if isinstance(c, NasBench201Cell) for m in c.modules()
                if isinstance(m, torch.nn.BatchNorm2d)]
    assert in_cells and all(not m.affine and not m.track_running_stats for m in in_cells)
    others = [m for m in plain.modules() if isinstance(m, torch.nn.BatchNorm2d) and all(m is not c for c in in_cells)]
    assert others and all(m.affine and m.track_running_stats for m in others)
    assert sum(p.numel() for p in default.parameters()) - sum(p.numel() for p in plain.parameters()) == \
        sum(2 * m.num_features for m in in_cells)
