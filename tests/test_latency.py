"""Cost models of search spaces (archnas.latency): exact per-choice tables where costs add up,
counting where choices are coupled, latency predictions with their measured error, limits."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import archnas.hub  # noqa: F401
from archnas.config.schema import CostConf
from archnas.errors import ConfigError
from archnas.latency import Limits, SpaceCosts, TimingProtocol
from archnas.latency.measure import cpu_ms, ort_ms
from archnas.latency.table import CostTable, arch_to_row, enumerate_rows, random_rows, row_to_arch
from archnas.space import SearchSpaceModel, create_space, freeze
from archnas.stats import model_stats

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "fixtures" / "plugins"))
from my_space import build as build_my_space  # noqa: E402

SHAPE = [1, 8, 8]
FAST = TimingProtocol(threads=1, warmup=1, repeats=3)


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny ops: see conftest.one_thread


def nb201(**kw) -> SearchSpaceModel:
    return SearchSpaceModel(create_space("nb201", input_shape=tuple(SHAPE), n_classes=10, C=4, N=1, **kw))


def test_the_summed_mac_table_equals_the_flop_counter_on_frozen_networks():
    """NAS-Bench-201's edges cost independently: base + one entry per edge is every network's count."""
    space = nb201()
    costs = SpaceCosts(space.specs, lambda arch: freeze(space, arch), SHAPE, held_out=5)
    macs, params = costs.model("macs"), costs.model("params")
    assert macs.uses_table and macs.exact and params.exact
    rng = random.Random(7)
    for row in random_rows(space.specs, 20, rng):
        arch = row_to_arch(space.specs, row)
        counted = model_stats(freeze(space, arch), SHAPE)
        assert (macs.cost(arch), params.cost(arch)) == (counted["macs"], counted["params"])


def test_a_coupled_space_is_counted_per_architecture_and_says_how_far_the_table_is_off():
    """my_space's width choice changes every layer after it: no per-choice table is exact."""
    space = SearchSpaceModel(build_my_space(SHAPE, 10))
    costs = SpaceCosts(space.specs, lambda arch: freeze(space, arch), SHAPE, held_out=10)
    macs = costs.model("macs")
    assert not macs.uses_table and not macs.table.check_result.exact
    assert macs.table.check_result.mape_percent > 0 and "coupled" in macs.method
    arch = row_to_arch(space.specs, random_rows(space.specs, 1, random.Random(3))[0])
    assert macs.cost(arch) == model_stats(freeze(space, arch), SHAPE)["macs"]
    stats = costs.statistics("macs")
    assert stats["exact"] and "enumerated" in stats["over"] and stats["min"] <= stats["median"] <= stats["max"]


def test_statistics_of_a_table_cost_enumerate_small_spaces_and_sample_large_ones():
    space = nb201()
    costs = SpaceCosts(space.specs, lambda arch: freeze(space, arch), SHAPE, held_out=3)
    full = costs.statistics("params")
    rows = enumerate_rows(space.specs, 20_000)
    values = costs.model("params").costs(rows)
    assert full["over"].startswith("enumerated") and len(rows) == 5 ** 6
    assert (full["min"], full["max"]) == (values.min(), values.max())
    assert full["mean"] == pytest.approx(values.mean()) and full["median"] == pytest.approx(np.median(values))
    assert costs.model("params").cost(full["arch_min"]) == full["min"]
    sampled = costs.statistics("params", enumerate_up_to=100, samples=500)
    assert sampled["over"].startswith("sampled") and (sampled["min"], sampled["max"]) == (full["min"], full["max"])


def test_vectorized_and_single_predictions_agree():
    space = nb201()
    table = CostTable.build("macs", space.specs, lambda arch: model_stats(freeze(space, arch), SHAPE)["macs"])
    rows = np.array(random_rows(space.specs, 50, random.Random(0)))
    assert table.predict_indices(rows).tolist() == [table.predict_row(r) for r in rows]
    arch = row_to_arch(space.specs, rows[0])
    assert arch_to_row(space.specs, arch) == rows[0].tolist()


def test_least_squares_recovers_an_additive_cost_exactly():
    space = nb201()
    true = CostTable("t", list(space.specs), 1.5, [[0.0] + [0.25 * (i + k) for k in range(1, 5)] for i in range(6)])
    fitted = CostTable.fit("t", space.specs, lambda arch: true.predict(space.specs, arch), n=60, seed=1)
    assert fitted.base == pytest.approx(1.5) and np.allclose(fitted.matrix, true.matrix)


def test_latency_is_predicted_with_its_error_on_held_out_architectures():
    space = nb201()
    costs = SpaceCosts(space.specs, lambda arch: freeze(space, arch), SHAPE, FAST, held_out=4)
    model = costs.model("cpu_ms")
    check = model.table.check_result
    assert model.uses_table and not model.exact and check.archs == 4 and np.isfinite(check.mape_percent)
    assert "MAPE" in model.method
    report = costs.report(["params", "cpu_ms"])
    assert report["timing"]["repeats"] == 3 and report["cpu_ms"]["min"] <= report["cpu_ms"]["max"]


def test_timings_run_a_network_in_pytorch_and_onnxruntime():
    pytest.importorskip("onnxruntime")
    net = freeze(nb201(), {label: "conv_3x3" for label in nb201().specs})
    for measure in (cpu_ms, ort_ms):
        ms = measure(net, SHAPE, FAST)
        assert 0 < ms < 1000
    assert torch.get_num_threads() == 1, "the measurement restores the thread count"


def test_a_limit_below_the_cheapest_architecture_names_the_minimum():
    space = nb201()
    costs = SpaceCosts(space.specs, lambda arch: freeze(space, arch), SHAPE, held_out=3)
    cheapest = costs.statistics("macs")["min"]
    Limits.from_conf(CostConf(max_macs=cheapest)).check_reachable(costs)
    with pytest.raises(ConfigError, match=f"nas.search.cost.max_macs: .* below .* {cheapest:,} multiply-adds"):
        Limits.from_conf(CostConf(max_macs=cheapest - 1)).check_reachable(costs)
    limits = Limits.from_conf(CostConf(max_params=costs.statistics("params")["min"] + 50))
    assert limits.allows(costs, costs.statistics("params")["arch_min"])
    assert not limits.allows(costs, costs.statistics("params")["arch_max"])


@pytest.mark.parametrize("conf,match", [
    (CostConf(pareto="flops"), "nas.search.cost.pareto: unknown cost model 'flops'"),
    (CostConf(latency="macs"), "nas.search.cost.latency: 'macs' is not a latency model"),
    (CostConf(latency="gpu_ms"), "nas.search.cost.latency: unknown cost model 'gpu_ms'"),
    (CostConf(max_params=0), "nas.search.cost.max_params: 0; a limit must be positive"),
])
def test_bad_cost_settings_are_named(conf, match):
    with pytest.raises(ConfigError, match=match):
        Limits.from_conf(conf)
