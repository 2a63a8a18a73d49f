"""The main job end to end on a tiny DARTS config: files, TensorBoard, reruns, refusals, resume."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from accuracy import recomputed_test_top1

from archnas.cli import main
from archnas.config import load_config
from archnas.descs.dataset_info import DatasetInfo
from archnas.descs.desc_io import load_desc, save_desc
from archnas.descs.genotypes import named_genotype, parse_genotype
from archnas.model import genotype_to_desc
from archnas.model.model_file import load_model_file

REPO = Path(__file__).resolve().parents[1]
TINY = str(REPO / "tests" / "fixtures" / "confs" / "tiny_darts.yaml")
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # see test_resume.py: one thread for tiny models


def run_main(tmp: Path, *extra: str) -> int:
    return main(["--config", TINY, "--exp-name", "tiny", f"common.results_dir={tmp}", *extra])


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One finished tiny run shared by the read-only tests below."""
    tmp = tmp_path_factory.mktemp("e2e")
    assert run_main(tmp) == 0
    return tmp / "tiny"


def test_artifacts(finished: Path, capsys):
    search, ev = finished / "search", finished / "eval"
    for name in ("config.yaml", "run.json", "log.txt", "metrics.jsonl", "split.json", "full_model_desc.yaml",
                 "final_model_desc.yaml", "genotype.txt", "search_result.json", "checkpoint_last.pt"):
        assert (search / name).is_file(), name
    for name in ("config.yaml", "run.json", "metrics.jsonl", "full_model_desc.yaml", "model_best.pt", "model_last.pt",
                 "metrics.json", "checkpoint_last.pt"):
        assert (ev / name).is_file(), name
    # plain YAML, loadable safely, and a genotype in the DARTS format
    assert isinstance(yaml.safe_load((search / "final_model_desc.yaml").read_text()), dict)
    final = load_desc(search / "final_model_desc.yaml")
    assert all(len(node.edges) == 2 for cell in final.cells for node in cell.nodes)
    parse_genotype((search / "genotype.txt").read_text())
    run = json.loads((search / "run.json").read_text())
    assert {"start_time", "command", "git_commit", "versions", "host", "device"} <= set(run)
    # the eval metrics and the model files, which load without the config
    metrics = json.loads((ev / "metrics.json").read_text())
    assert metrics["test_top1"] == pytest.approx(recomputed_test_top1(finished), abs=1e-9)  # model_last.pt's
    assert metrics["params"] > 0 and metrics["macs"] > 0
    model = load_model_file(ev / "model_last.pt").model
    logits, aux = model(torch.zeros(2, 1, 8, 8))
    assert logits.shape == (2, 10) and aux is None
    result = json.loads((finished / "result.json").read_text())
    assert result["eval"]["test_top1"] == metrics["test_top1"]


def test_search_records_and_tensorboard(finished: Path):
    records = [json.loads(line) for line in (finished / "search" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    alphas = records[-1]["alphas"]["regular"]
    assert len(alphas["softmax"]) == 5 and all(len(row) == 8 for row in alphas["softmax"].values())
    assert {"alpha_entropy_regular", "argmax_skip_connect_regular", "argmax_none_reduction", "arch_val_loss"} <= set(records[-1])
    acc = EventAccumulator(str(finished / "search" / "tb"), size_guidance={"scalars": 0})
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train_loss", "val_loss", "train_top1", "val_top1", "lr"} <= tags
    assert "alphas/regular/n0_in0/sep_conv_3x3" in tags and "alphas/reduction/n1_in2/none" in tags
    assert len(acc.Scalars("alphas/regular/n0_in0/sep_conv_3x3")) == 2
    ev = EventAccumulator(str(finished / "eval" / "tb"), size_guidance={"scalars": 0})
    ev.Reload()
    assert {"train_loss", "val_loss", "train_top1", "val_top1", "lr"} <= set(ev.Tags()["scalars"])


def test_rerun_skips_finished_phases(finished: Path, capsys):
    stamp = (finished / "eval" / "model_last.pt").stat().st_mtime_ns
    assert run_main(finished.parent) == 0
    out = capsys.readouterr().out
    assert "search already finished" in out and "eval already finished" in out and "test accuracy" in out
    assert (finished / "eval" / "model_last.pt").stat().st_mtime_ns == stamp


def test_changed_search_config_is_refused(finished: Path, capsys):
    assert run_main(finished.parent, "nas.search.model_desc.n_nodes=3") == 2
    err = capsys.readouterr().err
    assert "nas.search.model_desc.n_nodes" in err and "--force" in err


def test_eval_refuses_to_resume_against_a_different_architecture(tmp_path, capsys):
    assert run_main(tmp_path, "nas.eval.trainer.epochs=1") == 0
    exp = tmp_path / "tiny"
    # The search result changes under an eval checkpoint (same config): the eval must not resume.
    (exp / "eval" / "metrics.json").unlink()
    conf = load_config([TINY])
    other = genotype_to_desc(named_genotype("DARTS_V2"), conf.nas.search.model_desc, DatasetInfo(10, 1, (8, 8)))
    save_desc(other, exp / "search" / "final_model_desc.yaml")
    marker = json.loads((exp / "search" / "search_result.json").read_text())
    marker["final_desc_fingerprint"] = other.fingerprint()
    (exp / "search" / "search_result.json").write_text(json.dumps(marker))
    capsys.readouterr()
    assert run_main(tmp_path, "nas.eval.trainer.epochs=1") == 2
    assert "fingerprint" in capsys.readouterr().err


def test_no_search_with_a_named_genotype(tmp_path, capsys):
    assert run_main(tmp_path, "--no-search", "nas.eval.final_desc=DARTS_V2", "nas.eval.trainer.epochs=1") == 0
    assert not (tmp_path / "tiny" / "search").exists()
    full = load_desc(tmp_path / "tiny" / "eval" / "full_model_desc.yaml")
    assert [e.op_desc.name for e in full.cells[0].nodes[0].edges] == ["sep_conv_3x3", "sep_conv_3x3"]


# -- kill at a random point and resume --------------------------------------------------------------

SEED = int(os.environ.get("ARCHNAS_KILL_SEED", time.time_ns() % 100_000))
PROGRESS = re.compile(r"(search|eval) epoch (\d+)/\d+: step (\d+)/(\d+)")


def _cmd(results: Path) -> list[str]:
    return [sys.executable, str(REPO / "scripts" / "main.py"), "--config", TINY, "--exp-name", "tiny",
            f"common.results_dir={results}", "common.deterministic=true", "common.checkpoint.every_steps=2",
            "nas.search.trainer.epochs=3", "nas.eval.trainer.epochs=3"]


def _kill_at(cmd: list[str], phase: str, step: int) -> None:
    """Start the job and SIGKILL it when `phase` reports its `step`-th step (1-based, over epochs)."""
    proc = subprocess.Popen(cmd, cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:
        m = PROGRESS.search(line)
        if m and m.group(1) == phase and (int(m.group(2)) - 1) * int(m.group(4)) + int(m.group(3)) >= step:
            proc.kill()
            break
    proc.wait(timeout=600)
    assert proc.returncode == -signal.SIGKILL, f"the run ended before {phase} step {step} (seed {SEED})"


def _outcome(exp: Path) -> dict:
    metrics = json.loads((exp / "eval" / "metrics.json").read_text())
    state = torch.load(exp / "eval" / "model_last.pt", weights_only=True)["state_dict"]
    return {
        "final_desc": (exp / "search" / "final_model_desc.yaml").read_text(),
        "metrics": {k: v for k, v in metrics.items() if not k.endswith("time") and k != "config"},
        "weights": state,
    }


@pytest.mark.slow
def test_killed_main_job_resumes_bit_identical(tmp_path):
    """Killed once in the search and once in the eval of the resumed run, it ends as one run does."""
    rng = random.Random(f"{SEED}:main_job")
    reference = subprocess.run(_cmd(tmp_path / "ref"), cwd=REPO, env=ENV, capture_output=True, text=True, timeout=900)
    assert reference.returncode == 0, reference.stdout[-3000:]
    # after the first checkpoint (every 2 steps), before the end: 3 epochs of 3 search steps (120
    # search-train images / 40) and of 6 eval steps (240 / 40)
    search_step, eval_step = rng.randint(3, 3 * 3 - 1), rng.randint(3, 3 * 6 - 1)
    where = f"(seed {SEED}, killed in search at step {search_step} and in eval at step {eval_step})"
    _kill_at(_cmd(tmp_path / "run"), "search", search_step)
    _kill_at(_cmd(tmp_path / "run"), "eval", eval_step)
    resumed = subprocess.run(_cmd(tmp_path / "run"), cwd=REPO, env=ENV, capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stdout[-3000:]
    assert "resumed from" in resumed.stdout, f"{where}: nothing was resumed"
    ref, run = _outcome(tmp_path / "ref" / "tiny"), _outcome(tmp_path / "run" / "tiny")
    assert run["final_desc"] == ref["final_desc"], where
    assert run["metrics"] == ref["metrics"], where
    assert ref["weights"].keys() == run["weights"].keys()
    assert all(torch.equal(ref["weights"][k], run["weights"][k]) for k in ref["weights"]), where


def test_search_combinations_keep_the_best_and_resume(tmp_path, capsys):
    sweep = ["nas.search.combinations.enabled=true", "nas.search.combinations.n_nodes=[1, 2]",
             "nas.search.trainer.epochs=1", "nas.eval.trainer.epochs=1"]
    assert run_main(tmp_path, "--no-eval", *sweep) == 0
    search = tmp_path / "tiny" / "search"
    rows = json.loads((search / "combinations.json").read_text())
    assert [(r["n_cells"], r["n_nodes"]) for r in rows] == [(3, 1), (3, 2)]
    best = max(rows, key=lambda r: r["best_val_top1"])
    final = load_desc(search / "final_model_desc.yaml")
    assert len(final.cells[0].nodes) == best["n_nodes"]
    # an interrupted sweep resumes: a finished combination is not searched again
    (search / "search_result.json").unlink()
    (search / "combos" / "r2_c3_n2" / "search_result.json").unlink()
    stamp = (search / "combos" / "r2_c3_n1" / "final_model_desc.yaml").stat().st_mtime_ns
    capsys.readouterr()
    assert run_main(tmp_path, "--no-eval", *sweep) == 0
    out = capsys.readouterr().out
    assert out.count("combos/r2_c3_n1 already finished") == 1 and "combos/r2_c3_n2 already finished" not in out
    assert (search / "combos" / "r2_c3_n1" / "final_model_desc.yaml").stat().st_mtime_ns == stamp
    assert json.loads((search / "combinations.json").read_text()) == rows
