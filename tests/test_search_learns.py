"""A search that says whether it learned: the alphas' entropy at start and end in the log and in
search_result.json, the BatchNorm note once, the warm-up warning, and the bars check of a
finished run (`archnas.launch.check_run`, `scripts/check_search.py`)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from archnas.cli import main
from archnas.config import find_config_file
from archnas.launch.check_run import check_run, darts_genotype
from tiny_algos import TINY

REPO = Path(__file__).resolve().parents[1]
TINY_DARTS = str(REPO / "tests" / "fixtures" / "confs" / "tiny_darts.yaml")
OPS = ["none", "max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3",
       "dil_conv_5x5"]
ROWS = ["n0_in0", "n0_in1", "n1_in0", "n1_in1", "n1_in2"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("learns")
    assert main(["--config", TINY_DARTS, "--exp-name", "tiny", f"common.results_dir={tmp}", "common.log_every_steps=0",
                 "common.tensorboard=false", "nas.search.trainer.alpha_optimizer.lr=0.3", "nas.eval.trainer.epochs=1",
                 "nas.search.trainer.alpha_lr_schedule={type: cosine, min_lr: 0.03}"]) == 0
    return tmp / "tiny"


def test_the_log_and_the_result_say_how_far_the_alphas_moved(tiny_run):
    log = (tiny_run / "search" / "log.txt").read_text()
    moved = json.loads((tiny_run / "search" / "search_result.json").read_text())["metrics"]["alphas"]
    assert set(moved) == {"regular", "reduction"}
    records = [json.loads(line) for line in (tiny_run / "search" / "metrics.jsonl").read_text().splitlines()]
    for label, m in moved.items():
        assert m["max_entropy"] == pytest.approx(math.log(8))
        assert m["entropy_start"] == pytest.approx(math.log(8), abs=1e-3)  # DARTS initializes alphas near 0
        assert m["entropy_end"] == pytest.approx(records[-1]["alphas"][label]["entropy"])
        assert m["entropy_end"] < m["entropy_start"] - 0.01  # lr 0.3: they did move
        assert sum(m["argmax_share_end"].values()) == pytest.approx(1.0)
    # the alpha lr annealed over the search's 2 epochs, stepped with every step
    assert [r["alpha_lr"] for r in records] == pytest.approx([(0.3 + 0.03) / 2, 0.03])
    assert log.count("alphas: mean edge entropy regular") == 2  # every epoch ...
    end = f"regular {moved['regular']['entropy_start']:.4f} -> {moved['regular']['entropy_end']:.4f}"
    assert f"alphas moved over the search: mean edge entropy {end}" in log  # ... and at the end
    assert "argmax share regular skip_connect" in log
    assert log.count("val top-1 lags train top-1") == 1 and "running statistics" in log  # once
    assert "no architecture step" not in log
    split = json.loads((tiny_run / "search" / "split.json").read_text())
    assert split["dataset"] == "digits" and "load_digits" in split["source"]


def test_check_run_reads_a_finished_run_and_reports_every_bar(tiny_run, capsys):
    bars = {b.name: b for b in check_run(tiny_run, min_test_top1=0.0)}
    assert set(bars) == {"entropy regular", "entropy reduction", "no collapse regular", "no collapse reduction",
                         "stable genotype", "test accuracy", "time"}
    assert bars["test accuracy"].passed and bars["time"].passed
    assert "at the start" in bars["entropy regular"].detail and "x ln 8" in bars["entropy regular"].detail
    # a generous bar passes what a strict one fails, on the same files
    assert all(b.passed for b in check_run(tiny_run, max_entropy_ratio=1.0, max_parameterless_share=1.0,
                                           min_test_top1=0.0) if b.name.startswith(("entropy", "no collapse")))
    assert not any(b.passed for b in check_run(tiny_run, max_entropy_ratio=0.1) if b.name.startswith("entropy"))
    script = subprocess.run([sys.executable, str(REPO / "scripts" / "check_search.py"), str(tiny_run),
                             "--min-test-top1", "1.01"], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert script.returncode == 1 and "FAIL test accuracy" in script.stdout
    missing = subprocess.run([sys.executable, str(REPO / "scripts" / "check_search.py"), str(tiny_run / "nothing")],
                             capture_output=True, text=True, cwd=REPO, timeout=60)
    assert missing.returncode == 2 and missing.stderr.count("archnas: error:") == 1 and "Traceback" not in missing.stderr


def rows(winners: dict[str, str], strength: float = 0.6) -> dict[str, list[float]]:
    """Softmax rows whose argmax on each edge is `winners[edge]` with weight `strength`."""
    rest = (1 - strength) / (len(OPS) - 1)
    return {row: [strength if op == winners[row] else rest for op in OPS] for row in ROWS}


def report(winners: dict[str, str], strength: float = 0.6) -> dict:
    softmax = rows(winners, strength)
    probs = list(softmax.values())
    entropy = sum(-sum(p * math.log(p) for p in row) for row in probs) / len(probs)
    winners_list = [winners[r] for r in ROWS]
    return {"ops": OPS, "softmax": softmax, "entropy": entropy, "max_entropy": math.log(len(OPS)),
            "argmax_share": {op: winners_list.count(op) / len(ROWS) for op in OPS}}


def write_run(folder: Path, epochs: list[dict[str, dict]], test_top1: float = 0.97) -> Path:
    (folder / "search").mkdir(parents=True)
    (folder / "eval").mkdir()
    (folder / "search" / "metrics.jsonl").write_text(
        "".join(json.dumps({"epoch": i + 1, "alphas": alphas}) + "\n" for i, alphas in enumerate(epochs)))
    start = {label: {"entropy_start": math.log(8)} for label in epochs[-1]}
    (folder / "search" / "search_result.json").write_text(json.dumps({"metrics": {"alphas": start}}))
    (folder / "eval" / "metrics.json").write_text(json.dumps({"test_top1": test_top1}))
    return folder


GOOD = {"n0_in0": "sep_conv_3x3", "n0_in1": "sep_conv_5x5", "n1_in0": "dil_conv_3x3", "n1_in1": "max_pool_3x3",
        "n1_in2": "sep_conv_3x3"}


def test_the_bars_on_constructed_runs(tmp_path):
    good = {"regular": report(GOOD), "reduction": report(GOOD)}
    bars = {b.name: b for b in check_run(write_run(tmp_path / "good", [good, good]))}
    assert all(b.passed for b in bars.values()), bars
    assert "time" not in bars  # no run.json: the wall time is not known
    # near-uniform alphas: the genotype is noise
    flat = {"regular": report(GOOD, 0.13), "reduction": report(GOOD)}
    bars = {b.name: b for b in check_run(write_run(tmp_path / "flat", [flat, flat]))}
    assert not bars["entropy regular"].passed and bars["entropy reduction"].passed
    # skip-connect collapse: 3 of 5 edges parameterless (skip 2, none 1)
    collapsed = dict(GOOD, n0_in0="skip_connect", n1_in0="skip_connect", n1_in1="none")
    bars = {b.name: b for b in check_run(write_run(tmp_path / "skip", [good, {**good, "reduction": report(collapsed)}]))}
    assert not bars["no collapse reduction"].passed and bars["no collapse regular"].passed
    assert "60%" in bars["no collapse reduction"].detail
    # a genotype that still changes in the last epoch, and a test accuracy under the bar
    moved = {**good, "regular": report(dict(GOOD, n1_in1="sep_conv_5x5"))}
    bars = {b.name: b for b in check_run(write_run(tmp_path / "moving", [good, moved], test_top1=0.9))}
    assert not bars["stable genotype"].passed and "regular" in bars["stable genotype"].detail
    assert not bars["test accuracy"].passed


def test_darts_genotype_keeps_the_two_strongest_inputs_per_node_without_none():
    winners = dict(GOOD, n1_in0="none")
    r = report(winners)
    r["softmax"]["n1_in1"] = [0.3 if op == "max_pool_3x3" else 0.1 for op in OPS]  # weaker than n1_in2's 0.6
    genotype = darts_genotype(r)
    assert (1, 0, "none") not in genotype and len(genotype) == 4
    assert [g for g in genotype if g[0] == 1] == [(1, 1, "max_pool_3x3"), (1, 2, "sep_conv_3x3")]


def test_a_warmup_covering_the_whole_search_is_warned_about(tmp_path):
    assert main(["--config", str(find_config_file("pc_darts")), "--exp-name", "warm", "--no-eval",
                 f"common.results_dir={tmp_path}", *TINY, "nas.search.pc_darts.arch_warmup_epochs=1"]) == 0
    log = (tmp_path / "warm" / "search" / "log.txt").read_text()
    assert "no architecture step in any of the 1 search epochs (nas.search.pc_darts.arch_warmup_epochs = 1" in log
    moved = json.loads((tmp_path / "warm" / "search" / "search_result.json").read_text())["metrics"]["alphas"]
    assert all(m["entropy_end"] == m["entropy_start"] for m in moved.values())  # never trained
