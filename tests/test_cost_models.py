"""The cost-model registry (archnas.latency.registry): the built-in models are entries, the expected
cost under choice probabilities is the exact cost at one-hot probabilities and differentiates to
the per-choice table, and a plugin's cost model serves a spos search as a limit and as the Pareto
axis through the `archnas` command."""

from __future__ import annotations

import csv
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

import archnas.hub  # noqa: F401
from archnas.config.schema import CostConf
from archnas.errors import ConfigError
from archnas.latency import (
    CostModel,
    CostTable,
    Limits,
    SpaceCosts,
    cost_model,
    cost_model_names,
    exact_cost_models,
    latency_models,
)
from archnas.latency.table import option_count, random_rows, row_to_arch
from archnas.space import SearchSpaceModel, create_space, freeze
from archnas.stats import model_stats

REPO = Path(__file__).resolve().parents[1]
PLUGINS = REPO / "tests" / "fixtures" / "plugins"
sys.path.insert(0, str(PLUGINS))
from my_space import build as build_my_space  # noqa: E402

SHAPE = [1, 8, 8]

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny ops: see conftest.one_thread


def nb201() -> SearchSpaceModel:
    return SearchSpaceModel(create_space("nb201", input_shape=tuple(SHAPE), n_classes=10, C=4, N=1))


def one_hot(space: SearchSpaceModel, row: list[int]) -> dict[str, torch.Tensor]:
    probs = {}
    for (label, spec), k in zip(space.specs.items(), row):
        p = torch.zeros(option_count(spec), dtype=torch.float64)
        p[k] = 1.0
        probs[label] = p.requires_grad_()
    return probs


def test_the_built_in_models_are_registry_entries():
    assert cost_model_names()[:4] == ("params", "macs", "cpu_ms", "ort_ms")
    assert exact_cost_models()[:2] == ("params", "macs") and latency_models()[:2] == ("cpu_ms", "ort_ms")


def test_expected_macs_is_the_exact_cost_at_one_hot_probabilities_and_its_gradient_is_the_table():
    space = nb201()
    costs = SpaceCosts(space.specs, lambda arch: freeze(space, arch), SHAPE, held_out=5)
    macs = costs.model("macs")
    assert macs.exact and macs.uses_table
    for row in random_rows(space.specs, 6, random.Random(11)):
        arch = row_to_arch(space.specs, row)
        probs = one_hot(space, row)
        expected = macs.expected(probs)
        counted = model_stats(freeze(space, arch), SHAPE)["macs"]
        assert expected.item() == macs.cost(arch) == counted
        grads = torch.autograd.grad(expected, list(probs.values()))
        for label, grad in zip(probs, grads):
            row_of_table = macs.table.deltas[macs.table.labels.index(label)]
            assert grad.tolist() == row_of_table, label
    # at uniform probabilities it is the mean over every architecture of the space (enumerated)
    uniform = {label: torch.full((option_count(spec),), 1.0 / option_count(spec), dtype=torch.float64)
               for label, spec in space.specs.items()}
    assert macs.expected(uniform).item() == pytest.approx(costs.statistics("macs")["mean"], rel=1e-9)


def test_a_measured_models_expected_cost_is_its_tables_prediction():
    """A latency table is a prediction, and the expectation of that prediction is what a soft
    latency term uses (a made-up table: no timing in a unit test)."""
    space = nb201()
    rng = random.Random(5)
    table = CostTable("cpu_ms", list(space.specs), 1.25,
                      [[0.0] + [rng.uniform(-0.1, 0.5) for _ in range(4)] for _ in space.specs])
    model = CostModel(cost_model("cpu_ms"), space.specs, table)
    for row in random_rows(space.specs, 4, rng):
        assert model.expected(one_hot(space, row)).item() == pytest.approx(table.predict_row(row), abs=1e-12)
    probs = {label: torch.softmax(torch.randn(5, dtype=torch.float64), 0).requires_grad_() for label in space.specs}
    value = model.expected(probs)
    value.backward()
    assert [p.grad.tolist() for p in probs.values()] == table.deltas


def test_a_count_over_coupled_choices_has_no_expected_cost():
    """my_space's width choice changes every layer after it: its macs are counted, not a table."""
    space = SearchSpaceModel(build_my_space(SHAPE, 10))
    macs = SpaceCosts(space.specs, lambda arch: freeze(space, arch), SHAPE, held_out=5).model("macs")
    probs = {label: torch.ones(option_count(spec)) / option_count(spec) for label, spec in space.specs.items()}
    with pytest.raises(ConfigError, match="'macs': this space's cost is not additive over its choices"):
        macs.expected(probs)


def test_expected_cost_names_missing_labels_and_wrong_shapes():
    space = nb201()
    params = SpaceCosts(space.specs, lambda arch: freeze(space, arch), SHAPE, held_out=2).model("params")
    probs = one_hot(space, [0] * len(space.specs))
    first = next(iter(probs))
    with pytest.raises(ValueError, match=f"probabilities for {first} are missing"):
        params.expected({k: v for k, v in probs.items() if k != first})
    with pytest.raises(ValueError, match=rf"probabilities of '{first}' have shape \(3,\); expected \(5,\)"):
        params.expected({**probs, first: torch.ones(3)})


@pytest.mark.parametrize("conf,match", [
    (CostConf(limits={"flops": 5}), "nas.search.cost.limits.flops: unknown cost model 'flops'; expected one of "
                                    "params, macs, cpu_ms, ort_ms"),
    (CostConf(limits={"macs": -1}), r"nas.search.cost.limits.macs: -1; a limit must be positive"),
    (CostConf(max_macs=5, limits={"macs": 6}), r"nas.search.cost.limits.macs: macs is limited twice \(also by "
                                               r"nas.search.cost.max_macs\)"),
])
def test_bad_limits_name_their_key(conf, match):
    with pytest.raises(ConfigError, match=match):
        Limits.from_conf(conf)


def test_limits_of_any_model_read_as_the_documented_keys():
    limits = Limits.from_conf(CostConf(max_params=9000, limits={"cpu_ms": 2.5, "macs": None}))
    assert limits.bounds == {"params": 9000.0, "cpu_ms": 2.5}
    assert limits.describe() == {"max_params": 9000.0, "limits.cpu_ms": 2.5}
    assert limits.reported("macs") == ["params", "macs", "cpu_ms"]


def conv_modules(net: nn.Module) -> int:
    return sum(isinstance(m, nn.Conv2d) for m in net.modules())


def test_a_plugin_cost_model_limits_a_spos_search_and_is_its_pareto_axis(tmp_path):
    """tests/fixtures/plugins/conv_count.py through the archnas command: `convs` is counted exactly
    (a table over nb201's edges), reported, held to its limit and the axis of pareto.csv."""
    limit = 13  # of 7 .. 25 over the space (C=4, N=1: every conv edge adds one conv in each of 3 cells)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(PLUGINS)]), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(REPO / "scripts" / "main.py"), "--import", "conv_count",
           "--config", str(REPO / "confs" / "spos_nb201.yaml"), "--exp-name", "sp", f"common.results_dir={tmp_path}",
           "common.tensorboard=false", "dataset.limit_train=240", "dataset.limit_test=120",
           "nas.search.space={name: nb201, C: 4, N: 1}", "nas.search.loader.train_batch=40",
           "nas.search.trainer.epochs=1", "nas.search.spos.bn_recalibration.batches=1",
           "nas.search.spos.evolution={population: 4, parents: 2, mutations: 2, crossovers: 2, generations: 2}",
           "nas.search.cost.max_params=null", "nas.search.cost.held_out=4",
           f"nas.search.cost.limits={{convs: {limit}}}", "nas.search.cost.pareto=convs", "--no-eval"]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    search = tmp_path / "sp" / "search"
    stats = json.loads((search / "latency_stats.json").read_text())
    assert stats["convs"]["unit"] == "convolutions" and stats["convs"]["exact"]
    assert (stats["convs"]["min"], stats["convs"]["max"]) == (7, 25)
    rows = list(csv.DictReader((search / "pareto.csv").open()))
    assert rows and list(rows[0])[3:6] == ["params", "macs", "convs"]
    assert all(int(r["convs"]) <= limit for r in rows)
    result = json.loads((search / "search_result.json").read_text())
    assert result["metrics"]["pareto_cost"] == "convs" and result["metrics"]["limits"] == {"limits.convs": limit}
    arch = yaml.safe_load((search / "arch.yaml").read_text())["arch"]
    space = SearchSpaceModel(create_space("nb201", input_shape=(1, 8, 8), n_classes=10, C=4, N=1))
    chosen = conv_modules(freeze(space, arch))
    assert chosen == result["metrics"]["best_costs"]["convs"] <= limit
