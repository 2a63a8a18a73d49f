"""archnas.space.nn as a drop-in for torch.nn (NNI's `import nni.retiarii.nn.pytorch as nn`): every
torch.nn name importable; every value-choice layer, at every architecture of a tiny space, computes
what the plain torch layer `freeze` leaves computes, shares one largest set of weights between
its values, round-trips its state dict, builds plain under `fixed_arch`; a tiny search over a model
of several of them; soft weights; and the mistakes refused with one message."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import archnas.space as space_pkg
import archnas.space.nn as snn
from archnas.algos.gdas import GumbelWeighting
from archnas.errors import SpaceError
from archnas.ops.frozen import ChosenInputs
from archnas.space import SearchSpaceModel, Weighting, fixed_arch, freeze
from archnas.training.bn_recalibration import recalibrate_bn


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny ops: see conftest.one_thread


def _conv_in(a, *spatial):
    return (torch.randn(2, a["i"], *spatial),)


# name -> (the choices {label: candidates}, make(m, c): the layer from module m (snn or torch.nn) with
# c the choices (ValueChoices) or one architecture's values, inputs(arch)). One `make` builds the
# supernet layer from ValueChoices and the reference torch layer from plain values.
CASES = {
    "Conv1d": ({"i": [2, 3], "o": [2, 4], "k": [1, 3]},
               lambda m, c: m.Conv1d(c["i"], c["o"], c["k"], padding=(c["k"] - 1) // 2),
               lambda a: _conv_in(a, 6)),
    "Conv2d": ({"i": [2, 3], "o": [2, 4], "k": [1, 3], "s": [1, 2]},
               lambda m, c: m.Conv2d(c["i"], c["o"], c["k"], stride=c["s"], padding=(c["k"] - 1) // 2),
               lambda a: _conv_in(a, 5, 5)),
    "Conv2d-depthwise": ({"w": [2, 4]},
                         lambda m, c: m.Conv2d(c["w"], c["w"], 3, padding=1, groups=c["w"], bias=False),
                         lambda a: (torch.randn(2, a["w"], 4, 4),)),
    "Conv3d": ({"i": [1, 2], "o": [2, 3], "k": [1, 3]},
               lambda m, c: m.Conv3d(c["i"], c["o"], (c["k"], c["k"], 1), padding=((c["k"] - 1) // 2, 0, 0)),
               lambda a: _conv_in(a, 4, 3, 2)),
    "ConvTranspose1d": ({"i": [2, 3], "o": [1, 2], "k": [2, 4]},
                        lambda m, c: m.ConvTranspose1d(c["i"], c["o"], c["k"], stride=2),
                        lambda a: _conv_in(a, 3)),
    "ConvTranspose2d": ({"i": [2, 3], "o": [2, 4], "k": [1, 3]},
                        lambda m, c: m.ConvTranspose2d(c["i"], c["o"], c["k"], stride=2, padding=(c["k"] - 1) // 2,
                                                       output_padding=1),
                        lambda a: _conv_in(a, 3, 3)),
    "ConvTranspose3d": ({"i": [1, 2], "o": [1, 3]},
                        lambda m, c: m.ConvTranspose3d(c["i"], c["o"], 2),
                        lambda a: _conv_in(a, 2, 2, 2)),
    "Linear": ({"i": [3, 5], "o": [2, 4]},
               lambda m, c: m.Linear(c["i"], c["o"]),
               lambda a: (torch.randn(4, a["i"]),)),
    "Bilinear": ({"i": [2, 3], "j": [1, 2], "o": [2, 4]},
                 lambda m, c: m.Bilinear(c["i"], c["j"], c["o"]),
                 lambda a: (torch.randn(3, a["i"]), torch.randn(3, a["j"]))),
    "BatchNorm1d": ({"c": [2, 4]},
                    lambda m, c: m.BatchNorm1d(c["c"]),
                    lambda a: (torch.randn(5, a["c"]),)),
    "BatchNorm2d": ({"c": [2, 4], "mom": [0.1, None]},
                    lambda m, c: m.BatchNorm2d(c["c"], momentum=c["mom"]),
                    lambda a: (torch.randn(3, a["c"], 3, 3),)),
    "BatchNorm3d": ({"c": [1, 3]},
                    lambda m, c: m.BatchNorm3d(c["c"]),
                    lambda a: (torch.randn(2, a["c"], 2, 2, 2),)),
    "InstanceNorm1d": ({"c": [2, 3]},
                       lambda m, c: m.InstanceNorm1d(c["c"], affine=True, track_running_stats=True),
                       lambda a: (torch.randn(2, a["c"], 5),)),
    "InstanceNorm2d": ({"c": [2, 3]},
                       lambda m, c: m.InstanceNorm2d(c["c"], affine=True),
                       lambda a: (torch.randn(2, a["c"], 3, 3),)),
    "InstanceNorm3d": ({"c": [1, 2]},
                       lambda m, c: m.InstanceNorm3d(c["c"], affine=True),
                       lambda a: (torch.randn(2, a["c"], 2, 2, 2),)),
    "LayerNorm": ({"d": [3, 5], "e": [2, 4]},
                  lambda m, c: m.LayerNorm((c["e"], c["d"])),
                  lambda a: (torch.randn(2, a["e"], a["d"]),)),
    "RMSNorm": ({"d": [3, 5]},
                lambda m, c: m.RMSNorm(c["d"]),
                lambda a: (torch.randn(2, 3, a["d"]),)),
    "GroupNorm": ({"c": [4, 6], "g": [1, 2]},
                  lambda m, c: m.GroupNorm(c["g"], c["c"]),
                  lambda a: (torch.randn(2, a["c"], 3, 3),)),
    "Dropout": ({"p": [0.0, 0.5]},
                lambda m, c: m.Dropout(c["p"]),
                lambda a: (torch.randn(4, 6),)),
    "Dropout1d": ({"p": [0.25, 0.5]},
                  lambda m, c: m.Dropout1d(c["p"]),
                  lambda a: (torch.randn(4, 6, 3),)),
    "Dropout2d": ({"p": [0.25, 0.5]},
                  lambda m, c: m.Dropout2d(c["p"]),
                  lambda a: (torch.randn(2, 6, 3, 3),)),
    "Dropout3d": ({"p": [0.25, 0.5]},
                  lambda m, c: m.Dropout3d(c["p"]),
                  lambda a: (torch.randn(2, 6, 2, 2, 2),)),
    "AlphaDropout": ({"p": [0.2, 0.4]},
                     lambda m, c: m.AlphaDropout(c["p"]),
                     lambda a: (torch.randn(4, 6),)),
    "FeatureAlphaDropout": ({"p": [0.2, 0.4]},
                            lambda m, c: m.FeatureAlphaDropout(c["p"]),
                            lambda a: (torch.randn(2, 6, 3, 3),)),
    "Embedding": ({"n": [5, 7], "d": [2, 4]},
                  lambda m, c: m.Embedding(c["n"], c["d"], padding_idx=1),
                  lambda a: (torch.randint(0, 5, (3, 4)),)),
    "EmbeddingBag": ({"n": [5, 7], "d": [2, 4]},
                     lambda m, c: m.EmbeddingBag(c["n"], c["d"], mode="sum"),
                     lambda a: (torch.randint(0, 5, (3, 4)),)),
    "MultiheadAttention": ({"e": [4, 8], "h": [1, 2], "p": [0.0, 0.5]},
                           lambda m, c: m.MultiheadAttention(c["e"], c["h"], dropout=c["p"], batch_first=True),
                           lambda a: tuple(torch.randn(2, 3, a["e"]) for _ in range(3))),
}


class Wrap(nn.Module):
    def __init__(self, layer: nn.Module):
        super().__init__()
        self.layer = layer

    def forward(self, *inputs):
        return self.layer(*inputs)


def torch_class(name: str) -> type:
    return getattr(nn, name.split("-")[0])


def value_choices(choices: dict) -> dict:
    return {label: snn.ValueChoice(candidates, label=label) for label, candidates in choices.items()}


def archs(choices: dict) -> list[dict]:
    return [dict(zip(choices, combo)) for combo in itertools.product(*choices.values())]


def largest_arch(choices: dict) -> dict:
    return {label: max(c for c in candidates if c is not None) for label, candidates in choices.items()}


def build(name: str, seed: int = 0) -> SearchSpaceModel:
    choices, make, _ = CASES[name]
    torch.manual_seed(seed)
    return SearchSpaceModel(Wrap(make(snn, value_choices(choices))))


def run(model: nn.Module, inputs: tuple, seed: int = 1):
    torch.manual_seed(seed)  # the same dropout masks for the supernet and the plain layer
    return model(*inputs)


def shapes(module: nn.Module) -> dict:
    return {name: tuple(t.shape) for name, t in module.state_dict().items()}


def expected_region(name: str, tensor_name: str, full: torch.Size, shape: torch.Size) -> tuple:
    """The part of a shared tensor a value uses, written out here independently of the layers."""
    if name.startswith(("Conv", "ConvTranspose")) and tensor_name == "weight":
        return (slice(0, shape[0]), slice(0, shape[1]),
                *(slice((f - s) // 2, (f - s) // 2 + s) for f, s in zip(full[2:], shape[2:])))
    if tensor_name in ("in_proj_weight", "in_proj_bias"):
        block, part = full[0] // 3, shape[0] // 3
        rows = torch.cat([torch.arange(q * block, q * block + part) for q in range(3)])
        return (rows, *(slice(0, s) for s in shape[1:]))
    return tuple(slice(0, s) for s in shape)


def test_every_torch_nn_name_is_importable_and_nni_primitives_too():
    public = [name for name in dir(nn) if not name.startswith("_")]
    missing = [name for name in public if not hasattr(snn, name)]
    assert not missing
    value_layers = set(snn.VALUE_LAYERS)
    assert value_layers >= {"Conv1d", "Conv2d", "Conv3d", "ConvTranspose2d", "Linear", "BatchNorm1d", "BatchNorm2d",
                            "LayerNorm", "GroupNorm", "Dropout", "Embedding", "MultiheadAttention"}
    for name in public:
        if name in value_layers:
            assert issubclass(getattr(snn, name), getattr(nn, name)) and getattr(snn, name) is not getattr(nn, name)
        else:  # ReLU, Sequential, ModuleList, Identity, MaxPool2d, init, functional, ...: torch's own
            assert getattr(snn, name) is getattr(nn, name), name
    for name in ("LayerChoice", "InputChoice", "ValueChoice", "Repeat", "Cell", "NasBench201Cell"):
        assert getattr(snn, name) is getattr(space_pkg, name)
    assert snn.ChosenInputs is ChosenInputs
    namespace: dict = {}
    exec("from archnas.space.nn import *", namespace)
    assert {"ReLU", "Conv2d", "ValueChoice", "LayerChoice", "functional"} <= set(namespace)
    # no choice among the arguments: the plain torch layer
    assert set(CASES) >= value_layers
    for name in value_layers:
        choices, make, _ = CASES[name]
        assert type(make(snn, largest_arch(choices))) is torch_class(name)


@pytest.mark.parametrize("name", sorted(CASES))
def test_at_every_architecture_the_supernet_is_the_frozen_torch_layer(name):
    choices, make, inputs = CASES[name]
    space = build(name)
    layer = space.model.layer
    assert type(layer) is getattr(snn, name.split("-")[0]) and isinstance(layer, torch_class(name))
    for arch in archs(choices):
        for training in (True, False):
            space.set_architecture(arch)
            space.train(training)
            frozen = freeze(space, arch)
            reference = make(nn, arch)  # the torch layer of these values, built from scratch
            assert type(frozen.layer) is type(reference) is torch_class(name)
            assert shapes(frozen.layer) == shapes(reference)
            assert frozen.layer.training == training
            x = inputs(arch)
            torch.testing.assert_close(run(space, x), run(frozen, x), rtol=0, atol=0)
            # both updated their statistics alike (BatchNorm): the supernet in its slices
            after = freeze(space, arch).layer.state_dict()
            for key, value in frozen.layer.state_dict().items():
                torch.testing.assert_close(after[key], value, rtol=0, atol=0, msg=key)
        with fixed_arch(arch):
            plain = Wrap(make(snn, value_choices(choices)))
        assert type(plain.layer) is torch_class(name)
        assert shapes(plain) == shapes(freeze(space, arch))


@pytest.mark.parametrize("name", sorted(CASES))
def test_values_share_the_largest_layers_weights(name):
    choices, make, inputs = CASES[name]
    space = build(name)
    layer = space.model.layer
    assert shapes(layer) == shapes(make(nn, largest_arch(choices)))  # one set, of the largest values
    shared = dict(itertools.chain(layer.named_parameters(), layer.named_buffers()))
    for arch in archs(choices):
        frozen = freeze(space, arch).layer
        for key, t in frozen.state_dict().items():
            region = expected_region(name, key, shared[key].shape, t.shape)
            torch.testing.assert_close(t, shared[key][region], rtol=0, atol=0, msg=key)
        if not list(frozen.parameters()):
            continue
        # training one value moves its part of the shared weights only
        space.set_architecture(arch)
        space.train()
        space.zero_grad()
        y = run(space, inputs(arch))
        sum(t.float().sum() for t in (y if isinstance(y, tuple) else (y,)) if t is not None).backward()
        for key, t in frozen.named_parameters():
            grad = shared[key].grad
            if grad is None:
                continue
            inside = grad[expected_region(name, key, grad.shape, t.shape)]
            torch.testing.assert_close(grad.abs().sum(), inside.abs().sum(), msg=key)


@pytest.mark.parametrize("name", sorted(CASES))
def test_state_dict_round_trip(name):
    choices, make, inputs = CASES[name]
    trained = build(name, seed=0)
    for arch in archs(choices):  # BatchNorm statistics of every value
        trained.set_architecture(arch)
        trained.train()
        run(trained, inputs(arch))
    loaded = build(name, seed=5)
    loaded.load_state_dict(trained.state_dict())
    trained.eval()
    loaded.eval()
    for arch in archs(choices):
        x = inputs(arch)
        trained.set_architecture(arch)
        loaded.set_architecture(arch)
        torch.testing.assert_close(run(loaded, x), run(trained, x), rtol=0, atol=0)
        # the frozen network's weights load into the network fixed_arch builds from scratch
        with fixed_arch(arch):
            plain = Wrap(make(snn, value_choices(choices)))
        plain.load_state_dict(freeze(trained, arch).state_dict())
        torch.testing.assert_close(run(plain.eval(), x), run(trained, x), rtol=0, atol=0)


@settings(max_examples=20, deadline=None, derandomize=True)
@given(data=st.data(), dims=st.sampled_from([1, 2]))
def test_conv_and_linear_values_are_the_plain_functions_on_the_cut_weights(data, dims):
    ins = data.draw(st.lists(st.integers(1, 4), min_size=1, max_size=3, unique=True), label="in")
    outs = data.draw(st.lists(st.integers(1, 4), min_size=1, max_size=3, unique=True), label="out")
    kernels = data.draw(st.lists(st.sampled_from([1, 3, 5]), min_size=1, max_size=3, unique=True), label="kernel")
    stride = data.draw(st.integers(1, 2), label="stride")
    arch = {"i": data.draw(st.sampled_from(ins)), "o": data.draw(st.sampled_from(outs)),
            "k": data.draw(st.sampled_from(kernels))}
    c = value_choices({"i": ins, "o": outs, "k": kernels})
    conv_class, conv = (snn.Conv1d, F.conv1d) if dims == 1 else (snn.Conv2d, F.conv2d)
    torch.manual_seed(0)
    layer = conv_class(c["i"], c["o"], c["k"], stride=stride, padding=c["k"] // 2)
    space = SearchSpaceModel(layer)
    space.set_architecture(arch)
    x = torch.randn(2, arch["i"], *[6] * dims)
    k, o = arch["k"], (max(kernels) - arch["k"]) // 2
    weight = layer.weight[: arch["o"], : arch["i"]][(..., *[slice(o, o + k)] * dims)]
    expected = conv(x, weight, layer.bias[: arch["o"]], stride, k // 2)
    torch.testing.assert_close(space(x), expected, rtol=0, atol=0)
    linear = snn.Linear(c["i"] * 2, c["o"])
    space = SearchSpaceModel(linear)
    space.set_architecture({"i": arch["i"], "o": arch["o"]})
    v = torch.randn(3, 2 * arch["i"])
    expected = F.linear(v, linear.weight[: arch["o"], : 2 * arch["i"]], linear.bias[: arch["o"]])
    torch.testing.assert_close(space(v), expected, rtol=0, atol=0)


class ImageNet(nn.Module):
    """A model of several value-choice layers, as an NNI user writes it (`import ... as nn`)."""

    def __init__(self):
        super().__init__()
        width, kernel = snn.ValueChoice([4, 8], label="width"), snn.ValueChoice([1, 3], label="kernel")
        hidden = snn.ValueChoice([6, 12], label="hidden")
        self.features = snn.Sequential(snn.Conv2d(3, width, kernel, padding=(kernel - 1) // 2),
                                       snn.BatchNorm2d(width), snn.ReLU(),
                                       snn.Conv2d(width, width, 3, padding=1, groups=width),
                                       snn.AdaptiveAvgPool2d(1), snn.Flatten(),
                                       snn.Dropout(snn.ValueChoice([0.0, 0.25], label="drop")))
        self.head = snn.Sequential(snn.Linear(width, hidden), snn.LayerNorm(hidden), snn.ReLU(), snn.Linear(hidden, 5))

    def forward(self, x):
        return self.head(self.features(x))


class TokenNet(nn.Module):
    def __init__(self):
        super().__init__()
        dim = snn.ValueChoice([4, 8], label="dim")
        self.embed = snn.Embedding(10, dim)
        self.attn = snn.MultiheadAttention(dim, snn.ValueChoice([1, 2], label="heads"), batch_first=True)
        self.norm = snn.LayerNorm(dim)
        self.head = snn.Linear(dim, 5)

    def forward(self, tokens):
        x = self.embed(tokens)
        x = self.norm(x + self.attn(x, x, x, need_weights=False)[0])
        return self.head(x.mean(1))


@pytest.mark.parametrize("net, make_input", [
    (ImageNet, lambda g: torch.randn(8, 3, 6, 6, generator=g)),
    (TokenNet, lambda g: torch.randint(0, 10, (8, 5), generator=g)),
])
def test_a_tiny_search_over_several_layers(net, make_input):
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    space = SearchSpaceModel(net())
    x, y = make_input(g), torch.randint(0, 5, (8,), generator=g)
    weights = torch.optim.SGD(space.model_parameters(), lr=0.1)
    alphas = torch.optim.Adam(space.architecture_parameters(), lr=0.01)
    before = {k: v.clone() for k, v in space.model.state_dict().items()}
    # single path (SPOS, random): one uniformly sampled architecture per step
    seen = []
    for _ in range(6):
        seen.append(space.sample_random_arch(g))
        weights.zero_grad()
        loss = F.cross_entropy(space(x), y)
        loss.backward()
        weights.step()
        assert torch.isfinite(loss)
    assert any(not torch.equal(before[k], v) for k, v in space.model.state_dict().items())
    # GDAS (a straight-through one-hot sample) and DARTS (soft weights): every label gets a gradient
    for weighting in (GumbelWeighting(tau=1.0), Weighting()):
        space.arch.use(weighting)
        for _ in range(2):
            weights.zero_grad()
            alphas.zero_grad()
            F.cross_entropy(space(x), y).backward()
            for label in space.specs:
                assert space.arch.alpha(label).grad is not None and space.arch.alpha(label).grad.abs().sum() > 0, label
            weights.step()
            alphas.step()
    # the searched supernet, frozen at any architecture it visited, computes what it computes there
    space.eval()
    for arch in seen[:3] + [space.export()]:
        space.set_architecture(arch)
        frozen = freeze(space, arch).eval()
        assert not any(type(m).__module__.startswith("archnas") for m in frozen.modules())
        torch.testing.assert_close(space(x), frozen(x), rtol=0, atol=0)


def test_soft_weights_mix_sizes_by_masks_and_other_values_by_outputs():
    torch.manual_seed(0)
    heads = snn.ValueChoice([1, 2], label="h")
    attn = snn.MultiheadAttention(snn.ValueChoice([2, 4], label="e"), heads, batch_first=True, bias=False)
    space = SearchSpaceModel(Wrap(attn)).eval()
    space.arch.use(Weighting())
    x = torch.randn(2, 3, 4)
    with torch.no_grad():
        out, _ = space(x, x, x)
        p = {label: F.softmax(space.arch.alpha(label), -1) for label in ("e", "h")}
        mask_in = torch.zeros_like(attn.in_proj_weight)
        mask_out = torch.zeros_like(attn.out_proj.weight)
        for i, e in enumerate((2, 4)):
            for q in range(3):
                mask_in[q * 4: q * 4 + e, :e] += p["e"][i]
            mask_out[:e, :e] += p["e"][i]
        expected = 0
        for j, h in enumerate((1, 2)):  # each head count at the largest width, its weights mixed over widths
            y, _ = F.multi_head_attention_forward(
                x.transpose(0, 1), x.transpose(0, 1), x.transpose(0, 1), 4, h, attn.in_proj_weight * mask_in, None,
                None, None, False, 0.0, attn.out_proj.weight * mask_out, None, training=False)
            expected = expected + p["h"][j] * y.transpose(0, 1)
    torch.testing.assert_close(out, expected)


def test_nni_example_without_labels_runs_its_first_values_before_wrapping():
    conv = snn.Conv2d(3, snn.ValueChoice([2, 4]), kernel_size=snn.ValueChoice([3, 5]))
    assert conv(torch.randn(1, 3, 6, 6)).shape == (1, 2, 4, 4)
    space = SearchSpaceModel(Wrap(conv))
    assert set(space.specs) == {"layer.out_channels", "layer.kernel_size"}
    assert freeze(space, {"layer.out_channels": 4, "layer.kernel_size": 5}).layer.weight.shape == (4, 3, 5, 5)


@pytest.mark.parametrize("make, match", [
    (lambda: snn.Conv2d(3, 4, snn.ValueChoice([2, 3])), "kernel sizes 2 and 3 have no common centre"),
    (lambda: snn.Conv2d(8, 8, 3, groups=snn.ValueChoice([1, 2], label="g")),
     r"Conv2d at groups=1: its weight of shape \(8, 8, 3, 3\) does not fit"),
    (lambda: snn.MultiheadAttention(snn.ValueChoice([6, 8], label="e"), 4),
     "MultiheadAttention at embed_dim=6: the torch layer cannot be built: embed_dim must be divisible by num_heads"),
    (lambda: snn.Linear(3, snn.ValueChoice([2.5, 4])), "Linear at out_features=2.5: the torch layer cannot be built"),
])
def test_a_value_the_largest_layer_cannot_hold_is_refused_when_the_layer_is_made(make, match):
    with pytest.raises(SpaceError, match=match):
        make()


def test_soft_weights_over_values_of_different_shapes_are_refused_with_the_way_out():
    conv = snn.Conv2d(3, 4, 3, stride=snn.ValueChoice([1, 2], label="s"), padding=1)
    space = SearchSpaceModel(Wrap(conv))
    space.set_architecture({"s": 2})
    assert space(torch.randn(1, 3, 4, 4)).shape == (1, 4, 2, 2)  # sampled: fine
    space.arch.use(Weighting())
    with pytest.raises(SpaceError, match="values that differ in stride run apart.*sampling strategy"):
        space(torch.randn(1, 3, 4, 4))


def test_bn_recalibration_reaches_the_shared_statistics_with_the_momentum_it_sets():
    """SPOS's recalibration resets the statistics and sets momentum None on the supernet's BatchNorms:
    the value that runs must see both, as the plain layer does."""
    torch.manual_seed(0)
    width = snn.ValueChoice([2, 4], label="w")
    space = SearchSpaceModel(nn.Sequential(snn.Conv2d(3, width, 3, padding=1), snn.BatchNorm2d(width)))
    arch = {"w": 2}
    space.set_architecture(arch)
    plain = freeze(space, arch)
    batches = [(torch.randn(4, 3, 5, 5) * (i + 1) + i, None) for i in range(3)]
    assert recalibrate_bn(space, batches) == recalibrate_bn(plain, batches) == 3
    recalibrated = freeze(space, arch)[1]
    for key, value in plain[1].state_dict().items():
        torch.testing.assert_close(recalibrated.state_dict()[key], value, msg=key)
    assert space.model[1].momentum == recalibrated.momentum == 0.1  # restored, and frozen with it
