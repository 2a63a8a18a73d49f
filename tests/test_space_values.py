"""NNI's value-choice and freeze semantics (issue 21): `==`/`!=` and every other operator build
expressions evaluated per architecture, a ValueChoice read in forward (`self.p()`) runs in the
supernet, under `fixed_arch` and after `freeze` with one function, and an architecture may leave
out the labels its chosen branches and depths never reach."""

from __future__ import annotations

import math
import operator

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from archnas.errors import SpaceError
from archnas.space import LayerChoice, Repeat, SearchSpaceModel, ValueChoice, Weighting, fixed_arch, freeze
from archnas.space import nn as snn
from archnas.space.store import ArchWeights


def space_modules(net: nn.Module) -> set[str]:
    return {type(m).__name__ for m in net.modules() if type(m).__module__.startswith("archnas.space")}


# -- 1. operators --------------------------------------------------------------------------------


def test_condition_on_equality_follows_the_choice():
    k = ValueChoice([1, 3, 5], label="k")
    assert [ValueChoice.condition(k == 3, 10, 20).evaluate({"k": v}) for v in (1, 3, 5)] == [20, 10, 20]
    assert [ValueChoice.condition(k != 3, 10, 20).evaluate({"k": v}) for v in (1, 3, 5)] == [10, 20, 10]
    assert [ValueChoice.condition(3 == k, 1, 0).evaluate({"k": v}) for v in (1, 3, 5)] == [0, 1, 0]  # reflected
    assert sorted(ValueChoice.condition(k == 3, 10, 20).all_options()) == [10, 20]
    width = snn.Linear(2, ValueChoice.condition(k == 3, 8, 4))
    assert width.weight.shape == (8, 2)  # the largest of both branches, not the 'false' one only


BINARY = [operator.add, operator.sub, operator.mul, operator.truediv, operator.floordiv, operator.mod, operator.pow,
          operator.lshift, operator.rshift, operator.and_, operator.or_, operator.xor, operator.lt, operator.le,
          operator.gt, operator.ge, operator.eq, operator.ne]
UNARY = [operator.neg, operator.pos, operator.invert, abs, round, math.floor, math.ceil, math.trunc]


@pytest.mark.parametrize("fn", BINARY, ids=lambda f: f.__name__)
def test_every_binary_operator_builds_an_expression_on_either_side(fn):
    a, b = ValueChoice([1, 2, 3], label="a"), ValueChoice([2, 5], label="b")
    for x in (1, 2, 3):
        for y in (2, 5):
            values = {"a": x, "b": y}
            assert fn(a, b).evaluate(values) == fn(x, y), (fn, x, y)
            assert fn(a, 3).evaluate(values) == fn(x, 3), (fn, x)
            assert fn(7, b).evaluate(values) == fn(7, y), (fn, y)  # the reflected form


@pytest.mark.parametrize("fn", UNARY, ids=lambda f: f.__name__)
def test_every_unary_operator_builds_an_expression(fn):
    a = ValueChoice([-3, 2, 7], label="a")
    assert [fn(a).evaluate({"a": v}) for v in (-3, 2, 7)] == [fn(v) for v in (-3, 2, 7)]
    if fn is not operator.invert:  # on floats too
        half = a / 2
        assert [fn(half).evaluate({"a": v}) for v in (-3, 2, 7)] == [fn(v / 2) for v in (-3, 2, 7)]


def test_functions_of_plain_values_are_evaluated_at_once():
    """NNI: with no value choice among the arguments, max/min/condition/to_int/to_float evaluate
    immediately (what a constructor under fixed_arch passes on to a plain layer)."""
    assert ValueChoice.max(3, 7) == 7 and ValueChoice.min([3, 7]) == 3
    assert ValueChoice.condition(2 > 1, 10, 20) == 10
    assert ValueChoice.to_int(3.7) == 3 and ValueChoice.to_float(2) == 2.0


def test_choices_stay_hashable_and_identity_containers_still_work():
    a, b = ValueChoice([1, 2], label="a"), ValueChoice([1, 2], label="b")
    assert {a: "x", b: "y"}[b] == "y" and len({a, b, a}) == 2 and a in [a] and a in {a}
    # one instance shared by two layers is one choice; the model builds and its options are right
    space = SearchSpaceModel(nn.Sequential(snn.Linear(2, a * 2), snn.Linear(a * 2, ValueChoice.condition(a == 2, 3, 1))))
    assert list(space.specs) == ["a"]
    for value, out in ((1, 1), (2, 3)):
        space.set_architecture({"a": value})
        assert space(torch.randn(4, 2)).shape == (4, out)


# -- 2. a ValueChoice read in forward ------------------------------------------------------------


class DropNet(nn.Module):
    """NNI's pattern: the rate is chosen in __init__ and read in forward."""

    def __init__(self):
        super().__init__()
        self.rate = ValueChoice([0.0, 1.0], label="p")
        self.scale = ValueChoice([1, 3], label="s")
        self.width = ValueChoice([2, 4], label="w")
        self.fc = snn.Linear(3, self.width * 2)
        self.head = snn.Linear(self.width * 2, 2)

    def forward(self, x):
        y = F.dropout(self.fc(x), self.rate(), training=True) * self.scale()
        return self.head(y)


ARCHS = [{"p": p, "s": s, "w": w} for p in (0.0, 1.0) for s in (1, 3) for w in (2, 4)]


def test_a_value_read_in_forward_is_the_architectures_in_the_supernet_freeze_and_fixed_arch():
    torch.manual_seed(0)
    space = SearchSpaceModel(DropNet())
    x = torch.randn(5, 3)
    for arch in ARCHS:
        space.set_architecture(arch)
        w = 2 * arch["w"]
        fc, head = space.model.fc, space.model.head
        hidden = (x @ fc.weight[:w].T + fc.bias[:w]) * (arch["p"] == 0.0) * arch["s"]
        expected = hidden @ head.weight[:, :w].T + head.bias
        torch.testing.assert_close(space(x), expected)
        net = freeze(space, arch)
        assert not space_modules(net), space_modules(net)
        assert net.rate() == arch["p"] and net.scale() == arch["s"]
        torch.testing.assert_close(net(x), space(x), rtol=0, atol=0)
        with fixed_arch(arch):
            fixed = DropNet()
        assert not space_modules(fixed) and list(fixed.state_dict()) == list(net.state_dict())
        fixed.load_state_dict(net.state_dict())
        torch.testing.assert_close(fixed(x), net(x), rtol=0, atol=0)


def test_a_value_read_in_forward_follows_a_one_hot_sample():
    class Sample(Weighting):
        def __init__(self, k):
            self.k = k

        def weights(self, store):
            probs = F.one_hot(torch.tensor(self.k), 2).float().requires_grad_()
            return {label: ArchWeights(probs, chosen=[self.k]) for label in store.specs}

    class Scale(nn.Module):
        def __init__(self):
            super().__init__()
            self.factor = ValueChoice([2.0, 5.0], label="f")

        def forward(self, x):
            return x * self.factor()

    space = SearchSpaceModel(Scale())
    x = torch.ones(2)
    for k, factor in ((0, 2.0), (1, 5.0)):
        space.arch.use(Sample(k))
        assert torch.equal(space(x), x * factor)
    space.arch.use(Weighting())  # DARTS's soft weights give no one value: refused, not candidate 0
    with pytest.raises(SpaceError, match="'f' is read in forward"):
        space(x)


def test_values_chosen_under_fixed_arch_stand_for_their_value_in_a_constructor():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            k = ValueChoice([1, 3], label="k")
            d = ValueChoice([1, 2], label="d")
            self.conv = snn.Conv2d(2, 4, kernel_size=k, padding=(k - 1) // 2)
            self.extra = snn.Linear(2, ValueChoice.condition(k == 3, 6, 5))
            self.blocks = Repeat(lambda i: nn.Conv2d(4, 4, 1), d)
            self.width = round(k * 1.5) + int(k) + ValueChoice.max(k, 2)

    for k, d in ((1, 1), (3, 2)):
        with fixed_arch({"k": k, "d": d}):
            net = Net()
        assert type(net.conv) is nn.Conv2d and net.conv.kernel_size == (k, k) and net.conv.padding == ((k - 1) // 2,) * 2
        assert type(net.extra) is nn.Linear and net.extra.out_features == (6 if k == 3 else 5)
        assert type(net.blocks) is nn.Sequential and len(net.blocks) == d
        assert net.width == round(k * 1.5) + k + max(k, 2)


# -- 3. labels the chosen branches never reach ---------------------------------------------------


def nested() -> nn.Module:
    torch.manual_seed(0)
    inner = LayerChoice([nn.Linear(3, 3), nn.Tanh()], label="inner")
    outer = LayerChoice({"deep": nn.Sequential(inner, nn.ReLU()), "flat": nn.Linear(3, 3)}, label="outer")
    depth = Repeat(lambda i: LayerChoice([nn.Linear(3, 3), nn.Identity()], label=f"block{i}"), (0, 2), label="depth")
    return nn.Sequential(outer, depth)


@pytest.mark.parametrize("arch", [
    {"outer": "flat", "depth": 0},
    {"outer": "flat", "depth": 1, "block0": 0},
    {"outer": "deep", "inner": 1, "depth": 2, "block0": 1, "block1": 0},
    {"outer": "flat", "inner": 0, "depth": 1, "block0": 1, "block1": 0},  # unreachable labels may also be given
])
def test_freeze_accepts_architectures_without_the_labels_they_never_reach(arch):
    space = SearchSpaceModel(nested()).eval()
    x = torch.randn(4, 3)
    net = freeze(space, arch)
    assert not space_modules(net)
    space.set_architecture(arch)
    torch.testing.assert_close(net(x), space(x), rtol=0, atol=0)


@pytest.mark.parametrize("arch, missing", [
    ({"outer": "deep", "depth": 0}, "'inner'"),
    ({"outer": "flat", "depth": 2, "block0": 0}, "'block1'"),
    ({"depth": 0}, "'outer'"),
    ({"outer": "flat"}, "'depth'"),
])
def test_labels_the_architecture_reaches_are_still_required(arch, missing):
    space = SearchSpaceModel(nested())
    with pytest.raises(SpaceError, match=f"the architecture has no value for {missing}$"):
        freeze(space, arch)
    with pytest.raises(SpaceError, match=f"the architecture has no value for {missing}$"):
        space.set_architecture(arch)
    with pytest.raises(SpaceError, match="'outer': 'wide' is not one of its candidates"):
        freeze(space, {"outer": "wide", "depth": 0})
