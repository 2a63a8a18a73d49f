"""A search over NAS-Bench-201 through the `archnas` command: darts and gdas end to end on
digits, a run SIGKILLed mid-search that resumes to the same alphas, architecture and eval
weights, and a fine-tuning eval that inherits the supernet's weights."""

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

from archnas.training.checkpoint import read_checkpoint

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
TINY = ["common.tensorboard=false", "common.log_every_steps=1", "dataset.limit_train=240", "dataset.limit_test=120",
        "nas.search.space={name: nb201, C: 4, N: 1}", "nas.search.loader.train_batch=40",
        "nas.search.trainer.epochs=2", "nas.eval.loader.train_batch=40", "nas.eval.trainer.epochs=2"]
SEED = int(os.environ.get("ARCHNAS_KILL_SEED", time.time_ns() % 100_000))
PROGRESS = re.compile(r"search epoch (\d+)/\d+: step (\d+)/(\d+)")


def command(config: str, results: Path, *extra: str) -> list[str]:
    return [sys.executable, str(REPO / "scripts" / "main.py"), "--config", str(REPO / "confs" / config), "--exp-name",
            "nb", f"common.results_dir={results}", *TINY, *extra]


@pytest.mark.parametrize("config", ["darts_nb201.yaml", "gdas_nb201.yaml"])
def test_search_then_retrain_on_nb201(tmp_path, config):
    out = subprocess.run(command(config, tmp_path), capture_output=True, text=True, env=ENV, cwd=REPO, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    exp = tmp_path / "nb"
    arch = yaml.safe_load((exp / "search" / "arch.yaml").read_text())
    assert arch["space"] == "nb201" and len(arch["arch"]) == 6
    assert json.loads((exp / "search" / "arch.json").read_text())["arch"] == arch["arch"]
    assert yaml.safe_load((exp / "eval" / "arch.yaml").read_text())["arch"] == arch["arch"]
    result = json.loads((exp / "result.json").read_text())
    assert result["eval"]["params"] > 0 and result["search"]["final_desc"].endswith("arch.yaml")
    record = json.loads((exp / "search" / "metrics.jsonl").read_text().splitlines()[-1])
    assert set(record["alphas"]) == set(arch["arch"]) and "arch_val_loss" in record
    from archnas.model.model_file import load_model_file

    model = load_model_file(exp / "eval" / "model_last.pt").model  # rebuilt from the space and the architecture
    assert sum(p.numel() for p in model.parameters()) == result["eval"]["params"]


def test_tune_fine_tunes_the_weights_the_supernet_trained(tmp_path):
    out = subprocess.run(command("darts_nb201.yaml", tmp_path, "nas.eval.mode=tune", "nas.eval.trainer.epochs=0"),
                         capture_output=True, text=True, env=ENV, cwd=REPO, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    exp = tmp_path / "nb"
    supernet = read_checkpoint(exp / "search" / "checkpoint_last.pt")["state"]["model"]
    tuned = torch.load(exp / "eval" / "model_last.pt", weights_only=True)["state_dict"]
    assert torch.equal(tuned["stem.0.weight"], supernet["model.stem.0.weight"])  # 0 epochs: the inherited weights


@pytest.mark.slow
def test_a_search_killed_mid_way_resumes_bit_identical(tmp_path):
    """SIGKILL at a step drawn from SEED (printed on failure: ARCHNAS_KILL_SEED replays it)."""
    straight = command("darts_nb201.yaml", tmp_path / "straight", "common.deterministic=true",
                       "common.checkpoint.every_steps=1")
    assert subprocess.run(straight, env=ENV, cwd=REPO, capture_output=True, timeout=600).returncode == 0
    killed = command("darts_nb201.yaml", tmp_path / "killed", "common.deterministic=true",
                     "common.checkpoint.every_steps=1")
    step = random.Random(SEED).randint(2, 5)  # 3 steps per epoch, 2 epochs
    proc = subprocess.Popen(killed, cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:
        m = PROGRESS.search(line)
        if m and (int(m[1]) - 1) * int(m[3]) + int(m[2]) >= step:
            proc.kill()
            break
    proc.wait(timeout=600)
    assert proc.returncode == -signal.SIGKILL, f"the search ended before step {step} (seed {SEED})"
    assert subprocess.run(killed, env=ENV, cwd=REPO, capture_output=True, timeout=600).returncode == 0, f"seed {SEED}"
    a, b = tmp_path / "straight" / "nb", tmp_path / "killed" / "nb"
    alphas = [read_checkpoint(e / "search" / "checkpoint_last.pt")["state"]["arch_params"] for e in (a, b)]
    assert alphas[0].keys() == alphas[1].keys() and all(torch.equal(alphas[0][k], alphas[1][k]) for k in alphas[0]), \
        f"seed {SEED}"
    assert (a / "search" / "arch.yaml").read_text() == (b / "search" / "arch.yaml").read_text()
    weights = [torch.load(e / "eval" / "model_last.pt", weights_only=True)["state_dict"] for e in (a, b)]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0]), f"seed {SEED}"
