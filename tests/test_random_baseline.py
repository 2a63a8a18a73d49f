"""The random baseline (`nas.eval.random_baseline.n_archs`): random architectures of the searched
space go through the eval itself (same epochs, split and seed scheme), the found architecture is
ranked among them in random_baseline.json, result.json and the --algos table, and a larger k or
a rerun trains no random architecture twice nor the eval again."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from archnas.cli import main
from archnas.launch.compare import write_summary
from archnas.nas.random_baseline import compare
from archnas.nas.runner import ExperimentResult

REPO = Path(__file__).resolve().parents[1]
NB201 = "|nor_conv_3x3~0|+|skip_connect~0|avg_pool_3x3~1|+|none~0|nor_conv_1x1~1|skip_connect~2|"
TINY = ["common.device=cpu", "common.tensorboard=false", "common.log_every_steps=0", "common.num_threads=1",
        "dataset.limit_train=160", "dataset.limit_test=40", "nas.search.space={name: nb201, C: 4, N: 1}",
        "nas.eval.loader.train_batch=40", "nas.eval.trainer.epochs=2", f"nas.eval.final_desc={NB201}"]

pytestmark = pytest.mark.usefixtures("one_thread")


def test_the_found_accuracy_is_ranked_among_the_random_ones_ties_in_its_favour():
    s = compare(0.9, [0.8, 0.9, 0.95, 0.7])
    assert s["random_mean"] == pytest.approx(0.8375) and s["rank"] == 2 and s["of"] == 5 and s["beats"] == 2
    assert s["random_median"] == pytest.approx(0.85)
    assert s["random_std"] == pytest.approx(((0.0375**2 + 0.0625**2 + 0.1125**2 + 0.1375**2) / 3) ** 0.5)
    assert compare(0.5, [0.6])["random_std"] is None


def run(tmp: Path, n: int, *extra: str) -> int:
    return main(["--config", str(REPO / "confs" / "manual.yaml"), "--exp-name", "b", f"common.results_dir={tmp}",
                 *TINY, f"nas.eval.random_baseline.n_archs={n}", *extra])


def test_random_architectures_go_through_the_same_eval_and_a_larger_k_trains_only_the_new_ones(tmp_path, capsys):
    assert run(tmp_path, 2) == 0
    exp = tmp_path / "b"
    found = json.loads((exp / "eval" / "metrics.json").read_text())
    base = json.loads((exp / "random_baseline" / "random_baseline.json").read_text())
    archs = [json.loads((exp / "random_baseline" / f"arch_00{i}" / "metrics.json").read_text()) for i in (1, 2)]
    split = (exp / "eval" / "split.json").read_text()
    for arch, record in zip(archs, base["archs"]):  # the eval's protocol: its epochs and its split
        assert arch["epochs"] == found["epochs"] == 2 and arch["test_images"] == found["test_images"]
        assert arch["test_top1"] == record["test_top1"] and arch["fingerprint"] != found["fingerprint"]
    assert (exp / "random_baseline" / "arch_001" / "split.json").read_text() == split
    assert base["found_test_top1"] == found["test_top1"] and base["n_archs"] == 2 and base["of"] == 3
    assert base["random_mean"] == pytest.approx(sum(a["test_top1"] for a in archs) / 2)
    assert base["rank"] == 1 + sum(a["test_top1"] > found["test_top1"] for a in archs)
    assert base["archs"][0]["row"] != base["archs"][1]["row"], "distinct architectures"
    result = json.loads((exp / "result.json").read_text())
    assert list(result) == ["algorithm", "eval", "random_baseline", "plot"] and "archs" not in result["random_baseline"]
    assert result["random_baseline"]["random_mean"] == base["random_mean"]
    stamps = {p: p.stat().st_mtime_ns for p in (exp / "eval" / "metrics.json",
                                                 *(exp / "random_baseline").glob("arch_*/metrics.json"))}
    capsys.readouterr()
    assert run(tmp_path, 3) == 0  # one more: the eval and the first two are read back
    out = capsys.readouterr().out
    assert out.count("already finished") == 3 and "random architecture 3/3: test top-1" in out, out[-2000:]
    assert stamps == {p: p.stat().st_mtime_ns for p in stamps}
    bigger = json.loads((exp / "random_baseline" / "random_baseline.json").read_text())
    assert bigger["archs"][:2] == base["archs"] and bigger["n_archs"] == 3
    assert "random baseline: the found architecture's test top-1" in out


def test_the_algos_table_shows_the_baseline_only_when_a_run_has_one(tmp_path):
    eval_summary = {"test_top1": 0.9, "params_without_aux": 10, "macs": 20, "train_time": 1.0, "peak_memory": None}
    baseline = {"random_mean": 0.85, "random_std": 0.01, "rank": 1, "of": 6}
    write_summary(tmp_path, [ExperimentResult("manual", tmp_path, {"eval": eval_summary, "random_baseline": baseline}),
                             ExperimentResult("darts", tmp_path, {"eval": eval_summary})])
    lines = (tmp_path / "summary.md").read_text().splitlines()
    assert lines[0].endswith("| random mean | random std | rank vs random |")
    assert lines[2].endswith("| 85.00% | 1.00% | 1/6 |") and lines[3].endswith("| - | - | - |")
    rows = list(csv.DictReader((tmp_path / "summary.csv").open()))
    assert rows[0]["random_rank"] == "1/6" and float(rows[0]["random_mean"]) == 0.85 and rows[1]["random_mean"] == ""


def test_a_search_under_a_limit_is_compared_with_random_architectures_within_it(tmp_path):
    """spos under max_params: the random architectures are drawn from those the search could pick
    (the space's 4,822 .. 23,302 parameters; about a third are within 7,000)."""
    spos = ["nas.search.trainer.epochs=1", "nas.search.loader.train_batch=40", "nas.search.cost.max_params=7000",
            "nas.search.spos.evolution={population: 4, parents: 2, mutations: 2, crossovers: 2, generations: 1}",
            "nas.search.spos.bn_recalibration.batches=1", "nas.eval.trainer.epochs=1"]
    assert main(["--config", str(REPO / "confs" / "spos_nb201.yaml"), "--exp-name", "s", f"common.results_dir={tmp_path}",
                 *TINY[:-2], *spos, "nas.eval.random_baseline.n_archs=3"]) == 0
    base = json.loads((tmp_path / "s" / "random_baseline" / "random_baseline.json").read_text())
    assert base["limits"] == {"max_params": 7000}
    assert [a["params_without_aux"] <= 7000 for a in base["archs"]] == [True] * 3, base["archs"]
