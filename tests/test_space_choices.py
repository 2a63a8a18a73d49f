"""NNI's primitives give NNI's answers: an InputChoice of several inputs under GDAS (a Gumbel top-k
of distinct inputs), an InputChoice of any number (n_chosen=None), a loose-end Cell whose supernet
computes what its frozen network computes, `resample` setting the path that runs, the wrapped
model called directly, the architecture kept in the state dict, and ENOT's indices as numpy ints."""

from __future__ import annotations

import io
import sys
from collections import Counter, OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from archnas.algos.gdas import GumbelWeighting
from archnas.cli import main
from archnas.errors import SpaceError
from archnas.space import (
    ArchWeights, Cell, InputChoice, LayerChoice, SearchSpaceModel, Weighting, fixed_arch, freeze,
)


REPO = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny ops: see conftest.one_thread


class Pick(nn.Module):
    """An InputChoice over the inputs 1, 10 and 100 (times x), so a sum names the inputs it read."""

    def __init__(self, n_chosen, reduction="sum", prior=None):
        super().__init__()
        self.pick = InputChoice(3, n_chosen, reduction, prior=prior, label="pick")

    def forward(self, x):
        return self.pick([x, 10 * x, 100 * x])


def value(y: torch.Tensor) -> float:
    return float(y.detach())


class Neg(nn.Module):
    def forward(self, x):
        return -x


# -- 1. InputChoice of several inputs under GDAS, and of any number -----------------------------


def test_gdas_sums_two_distinct_inputs_and_every_alpha_gets_a_gradient():
    torch.manual_seed(0)
    space = SearchSpaceModel(Pick(2))
    space.arch.use(GumbelWeighting(1.0))
    x = torch.ones(1, 1)
    seen = Counter()
    for _ in range(40):
        y = space(x)
        seen[round(value(y))] += 1
        torch.testing.assert_close(y.detach(), torch.full((1, 1), float(round(value(y)))))
    assert set(seen) == {11, 101, 110}, seen  # two distinct inputs, never one (1, 10, 100) nor one twice
    space.zero_grad()
    space(x).sum().backward()
    grad = space.arch.alpha("pick").grad
    assert grad is not None and bool((grad != 0).all()), grad  # the relaxed top-k reaches every alpha


def test_gdas_concatenates_two_inputs_for_the_next_layer():
    torch.manual_seed(0)
    net = nn.Sequential(Pick(2, "concat"), nn.Linear(2, 1))
    space = SearchSpaceModel(net)
    space.arch.use(GumbelWeighting(1.0))
    for _ in range(10):
        assert space(torch.ones(3, 1)).shape == (3, 1)  # 2 features: two inputs concatenated


def test_gdas_draws_k_inputs_without_replacement_by_softmax_alpha():
    """The Gumbel top-k is an exact sample without replacement from softmax(alpha)."""
    torch.manual_seed(0)
    space = SearchSpaceModel(Pick(2))
    space.arch.use(GumbelWeighting(5.0))
    p = [0.7, 0.2, 0.1]
    with torch.no_grad():
        space.arch.alpha("pick").copy_(torch.tensor(p).log())
    n = 3000
    with torch.no_grad():
        counts = Counter(round(value(space(torch.ones(1, 1)))) for _ in range(n))
    pair = {11: (0, 1), 101: (0, 2), 110: (1, 2)}
    for total, (a, b) in pair.items():
        expected = p[a] * p[b] / (1 - p[a]) + p[b] * p[a] / (1 - p[b])
        assert abs(counts[total] / n - expected) < 0.03, (total, counts[total] / n, expected)


def test_input_choice_of_any_number_under_random_sampling_darts_and_fixed_arch():
    torch.manual_seed(0)
    space = SearchSpaceModel(Pick(None))
    assert space.architecture == {"pick": [0, 1, 2]}  # the default reads every input (NNI's [:None])
    x = torch.ones(1, 1)
    generator = torch.Generator().manual_seed(0)
    sizes = set()
    for _ in range(30):  # random sampling (SPOS, random search): a non-empty subset
        arch = space.sample_random_arch(generator)
        sizes.add(len(arch["pick"]))
        total = sum((1, 10, 100)[i] for i in arch["pick"])
        assert value(space(x)) == total == value(freeze(space, arch)(x))
    assert sizes == {1, 2, 3}
    space.set_architecture({"pick": [2]})
    assert value(space(x)) == 100.0
    with pytest.raises(SpaceError, match="at least 1 distinct"):
        space.set_architecture({"pick": []})

    space.arch.use(Weighting())  # DARTS: every input, weighted by softmax(alpha)
    with torch.no_grad():
        space.arch.alpha("pick").copy_(torch.tensor([2.0, 0.0, 0.1]))
    w = F.softmax(space.arch.alpha("pick"), -1)
    torch.testing.assert_close(space(x), (w[0] + 10 * w[1] + 100 * w[2]).reshape(1, 1))
    assert space.export() == {"pick": [0]}  # the inputs weighted at least as a uniform mix would
    with torch.no_grad():
        space.arch.alpha("pick").copy_(torch.tensor([1.0, 0.0, 1.0]))
    assert space.export() == {"pick": [0, 2]}

    with fixed_arch({"pick": [0, 2]}):
        fixed = Pick(None)
    assert value(fixed(x)) == 101.0


def test_gdas_refuses_an_input_choice_of_any_number_naming_strategy_and_label():
    space = SearchSpaceModel(Pick(None))
    with pytest.raises(SpaceError, match=r"gdas .*'pick'.*n_chosen=None"):
        space.arch.use(GumbelWeighting(1.0))
    assert space.architecture == {"pick": [0, 1, 2]}  # the refused weighting was not taken


ANY_INPUTS = """
from torch import nn
from archnas.space import InputChoice


class Net(nn.Module):
    def __init__(self, input_shape, n_classes):
        super().__init__()
        self.a = nn.Conv2d(input_shape[0], 4, 3, padding=1)
        self.b = nn.Conv2d(input_shape[0], 4, 1)
        self.pick = InputChoice(2, None, label="skip")
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, n_classes))

    def forward(self, x):
        return self.head(self.pick([self.a(x), self.b(x)]))


def build(input_shape, n_classes):
    return Net(input_shape, n_classes)
"""


def test_a_gdas_run_over_an_input_choice_of_any_number_is_one_clear_error(tmp_path, capsys, monkeypatch):
    (tmp_path / "any_inputs.py").write_text(ANY_INPUTS)
    monkeypatch.syspath_prepend(str(tmp_path))
    capsys.readouterr()
    code = main(["--import", "any_inputs", "--config", str(REPO / "confs" / "gdas.yaml"), f"common.results_dir={tmp_path / 'res'}",
                 "--exp-name", "e", "common.tensorboard=false", "dataset.limit_train=200", "dataset.limit_test=20",
                 "nas.search.trainer.epochs=1", "nas.search.space={factory: 'any_inputs:build'}"])
    err = capsys.readouterr().err
    sys.modules.pop("any_inputs", None)
    errors = [line for line in err.splitlines() if line.startswith("archnas: error:")]
    assert code == 2 and "Traceback" not in err and len(errors) == 1, err[-3000:]
    assert "gdas cannot search the InputChoice 'skip' of n_chosen=None" in errors[0]


def test_a_weighting_that_samples_one_input_for_two_is_refused():
    class OneInput(Weighting):  # a third-party sampler that ignores n_chosen
        def weights(self, store):
            return {label: ArchWeights(torch.tensor([1.0, 0.0, 0.0]), chosen=[0]) for label in store.specs}

    space = SearchSpaceModel(Pick(2))
    space.arch.use(OneInput())
    with pytest.raises(SpaceError, match=r"'pick' takes 2 distinct inputs out of 3, but OneInput chose \[0\]"):
        space(torch.ones(1, 1))


# -- 2. Cell(merge_op="loose_end"): the supernet computes what its frozen network does ----------


class LooseEnds(nn.Module):
    """A loose-end cell whose next layer takes any number of nodes: it sums the cell's node-wide
    channel groups (a layer sized for all nodes fails at a fixed architecture, as NNI documents)."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.cell = Cell(OrderedDict([("conv", nn.Conv2d(4, 4, 3, padding=1)), ("id", nn.Identity())]),
                         num_nodes=3, num_predecessors=1, merge_op="loose_end", label="c")
        self.head = nn.Conv2d(4, 2, 1)

    def forward(self, x):
        out = self.cell(self.stem(x))
        n, c, h, w = out.shape
        return self.head(out.view(n, c // 4, 4, h, w).sum(1)), c


def test_loose_end_supernet_equals_its_frozen_network_at_several_architectures():
    torch.manual_seed(0)
    space = SearchSpaceModel(LooseEnds()).eval()
    x = torch.randn(2, 3, 6, 6)
    widths = set()
    archs = [
        {"c/input_1_0": 0, "c/input_2_0": 0, "c/input_3_0": 0},  # every node a loose end
        {"c/input_1_0": 0, "c/input_2_0": 1, "c/input_3_0": 2},  # a chain: only node 3
        {"c/input_1_0": 0, "c/input_2_0": 1, "c/input_3_0": 1},  # node 1 feeds both: 2 and 3
        {"c/input_1_0": 0, "c/input_2_0": 0, "c/input_3_0": 2},  # 1 and 3
    ]
    for inputs in archs:
        for ops in ("conv", "id"):
            arch = {**inputs, "c/op_1_0": ops, "c/op_2_0": "conv", "c/op_3_0": "id"}
            space.set_architecture(arch)
            net = freeze(space, arch)
            assert not net._forward_pre_hooks and not net._forward_hooks  # the space's binding hooks are not copied
            loose = [n for n in (1, 2, 3) if n not in inputs.values()]
            assert space.model.cell.output_node_indices == loose == net.cell.output_node_indices
            (y, c), (y_frozen, c_frozen) = space(x), net(x)
            assert c == c_frozen == 4 * len(loose)
            torch.testing.assert_close(y, y_frozen, rtol=0, atol=0)
            widths.add(c)
    assert widths == {4, 8, 12}


def test_loose_end_cell_built_at_an_architecture_sizes_its_next_layer_as_nni_documents():
    arch = {"c/input_1_0": 0, "c/input_2_0": 1, "c/input_3_0": 1, "c/op_1_0": "conv", "c/op_2_0": "id",
            "c/op_3_0": "conv"}

    class Sized(nn.Module):
        def __init__(self):
            super().__init__()
            self.cell = Cell(OrderedDict([("conv", nn.Conv2d(4, 4, 3, padding=1)), ("id", nn.Identity())]),
                             num_nodes=3, num_predecessors=1, merge_op="loose_end", label="c")
            self.head = nn.Conv2d(len(self.cell.output_node_indices) * 4, 2, 1)  # NNI's example

        def forward(self, x):
            return self.head(self.cell(x))

    with fixed_arch(arch):
        net = Sized()
    assert net.head.in_channels == 8 and net(torch.randn(1, 4, 5, 5)).shape == (1, 2, 5, 5)
    space = SearchSpaceModel(Sized())  # in the space, sized for all nodes (NNI: range(...) at first)
    assert space.model.head.in_channels == 12
    space.arch.use(Weighting())  # soft weights read every node: all of them, as NNI's one-shot does
    assert space.model.cell.output_node_indices == [1, 2, 3]
    assert space(torch.randn(1, 4, 5, 5)).shape == (1, 2, 5, 5)


# -- 3. resample, the wrapped model, the state dict, numpy indices -------------------------------


class Two(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = LayerChoice([nn.Identity(), Neg()], label="act")
        self.b = LayerChoice([nn.Identity(), Neg()], label="act")  # the same decision
        self.scale = LayerChoice(OrderedDict([("one", nn.Identity()), ("two", nn.Linear(1, 1, bias=False))]),
                                 label="scale")
        with torch.no_grad():
            self.scale["two"].weight.fill_(2.0)

    def forward(self, x):
        return self.scale(self.b(x) + self.a(x))


def test_resample_sets_the_path_the_module_runs():
    space = SearchSpaceModel(Two())
    x = torch.ones(1, 1)
    assert value(space(x)) == 2.0  # the default: identity, one
    memo = {"act": 1}
    new = space.model.a.resample(memo)
    assert new == {} and memo == {"act": 1}
    assert space.architecture == {"act": 1, "scale": "one"} and value(space(x)) == -2.0  # both choices of "act"
    new = space.model.scale.resample(memo, torch.Generator().manual_seed(0))
    assert set(new) == {"scale"} and memo["scale"] == new["scale"] == space.architecture["scale"]
    assert value(space(x)) == (-4.0 if new["scale"] == "two" else -2.0)
    with pytest.raises(SpaceError, match="'scale'"):
        space.model.scale.resample({"scale": "three"})

    alone = LayerChoice([nn.Identity(), Neg()], label="alone")  # in no search-space model
    assert value(alone(x)) == 1.0
    alone.resample({"alone": 1})
    assert value(alone(x)) == -1.0 and alone.export({}) == {"alone": 1}


def test_the_wrapped_model_called_directly_runs_the_architecture_of_the_space():
    torch.manual_seed(0)
    net = Two()
    space = SearchSpaceModel(net)
    x = torch.ones(1, 1)
    space.set_architecture({"act": 1, "scale": "two"})
    assert value(net(x)) == value(space(x)) == -4.0
    assert value(net.a(x)) == -1.0  # a choice on its own too: the architecture set on the space
    space.arch.use(GumbelWeighting(1.0))
    for _ in range(5):  # one sample per call of the model: both choices of "act" agree
        assert round(abs(value(net(x))), 4) in (2.0, 4.0)  # (not 0: -1 + 1)
    with pytest.raises(SpaceError, match="'act' was called on its own while the strategy's GumbelWeighting"):
        net.a(x)


def test_the_architecture_is_in_the_state_dict_and_old_state_dicts_still_load():
    torch.manual_seed(0)
    space = SearchSpaceModel(Two())
    space.set_architecture({"act": 1, "scale": "two"})
    buffer = io.BytesIO()
    torch.save(space.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    loaded = SearchSpaceModel(Two())
    loaded.load_state_dict(state)
    assert loaded.architecture == {"act": 1, "scale": "two"}
    assert value(loaded(torch.ones(1, 1))) == value(space(torch.ones(1, 1))) == -4.0

    old = {k: v for k, v in state.items() if k != "_extra_state"}  # saved before the architecture was kept
    fresh = SearchSpaceModel(Two())
    fresh.load_state_dict(old)  # strict: no missing key
    assert fresh.architecture == fresh.default_architecture()

    space.arch.use(Weighting())  # a strategy weighs the candidates: no architecture to keep
    fresh.set_architecture({"act": 1, "scale": "one"})
    fresh.load_state_dict(space.state_dict())
    assert fresh.architecture == {"act": 1, "scale": "one"}

    other = SearchSpaceModel(nn.Sequential(LayerChoice([nn.Identity(), Neg(), nn.ReLU()], label="act")))
    with pytest.raises(SpaceError, match="another space"):
        other.load_state_dict({**other.state_dict(), "_extra_state": state["_extra_state"]})


def test_get_network_by_indexes_takes_any_integer():
    space = SearchSpaceModel(Two())
    x = torch.ones(1, 1)
    for indices in (np.array([1, 1]), [np.int32(1), np.int64(1)], [torch.tensor(1), 1]):
        assert value(space.get_network_by_indexes(indices)(x)) == -4.0
    space.forward_architecture = np.array([1, 0])
    assert space.architecture == {"act": 1, "scale": "one"}
    for bad in ([True, 0], [1.0, 0], [np.bool_(True), 0], [torch.tensor(True), 0], [2, 0]):
        with pytest.raises(SpaceError, match="is not an integer in"):
            space.get_network_by_indexes(bad)
