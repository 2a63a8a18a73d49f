"""The selection loop (archnas/nas/selection.py) through the `archnas` command: spos with Optuna's
NSGA-II over multiply-adds ends with a Pareto front, and killed after a checkpoint and rerun it
ends identical to an uninterrupted run; sampler settings that cannot work are one usage error."""

from __future__ import annotations

import csv
import json
import os
import random
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
# The tiny spos run of tests/test_spos.py, searched by NSGA-II: 4 generations of 4.
TINY = ["common.tensorboard=false", "common.log_every_steps=1", "dataset.limit_train=240", "dataset.limit_test=120",
        "nas.search.space={name: nb201, C: 4, N: 1}", "nas.search.loader.train_batch=40", "nas.search.trainer.epochs=2",
        "nas.search.spos.strategy=optuna_nsga2", "nas.search.spos.optuna_nsga2={population: 4, generations: 4}",
        "nas.search.spos.bn_recalibration.batches=2", "nas.search.cost.max_params=null",
        "nas.search.cost.pareto=macs", "--no-eval"]
GENERATION = re.compile(r"generation (\d+)/\d+: ")
KILL_SEED = int(os.environ.get("ARCHNAS_KILL_SEED", "0"))  # set and printed by conftest.py


def command(results: Path, *extra: str) -> list[str]:
    return [sys.executable, str(REPO / "scripts" / "main.py"), "--config", str(REPO / "confs" / "spos_nb201.yaml"),
            "--exp-name", "sp", f"common.results_dir={results}", *TINY, *extra]


def run(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, env=ENV, cwd=REPO, timeout=600)


def kill_at_generation(cmd: list[str], generation: int) -> int:
    """Run `cmd` and SIGKILL it when it logs that `generation` was scored (its checkpoint is being
    written or was written: either way the rerun must end as an uninterrupted run)."""
    proc = subprocess.Popen(cmd, cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:
        m = GENERATION.search(line)
        if m and int(m[1]) == generation:
            proc.kill()
            break
    proc.wait(timeout=600)
    return proc.returncode


@pytest.mark.slow  # about 25 s: three tiny spos runs, one of them killed
def test_optuna_nsga2_ends_with_a_pareto_front_and_a_killed_run_ends_identical(tmp_path):
    straight = run(command(tmp_path / "a"))
    assert straight.returncode == 0, straight.stderr[-3000:]
    a, b = tmp_path / "a" / "sp" / "search", tmp_path / "b" / "sp" / "search"
    rows = list(csv.DictReader((a / "pareto.csv").open()))
    assert len(rows) == 16 and sorted({r["generation"] for r in rows}) == ["0", "1", "2", "3"]
    front = [r for r in rows if r["on_front"] == "1"]
    assert front and max(float(r["accuracy"]) for r in front) == max(float(r["accuracy"]) for r in rows)
    assert min(float(r["macs"]) for r in front) == min(float(r["macs"]) for r in rows)
    assert len({r["arch"] for r in rows}) == 16, "NSGA-II never proposes an architecture twice"
    result = json.loads((a / "search_result.json").read_text())["metrics"]
    assert result["strategy"] == "optuna_nsga2" and result["pareto_front_size"] == len(front)

    kill = random.Random(f"{KILL_SEED}:selection").randint(2, 3)  # after the second or third generation
    where = f"ARCHNAS_KILL_SEED={KILL_SEED}, SIGKILL after generation {kill}"
    assert kill_at_generation(command(tmp_path / "b"), kill) == -signal.SIGKILL, where
    assert not (b / "search_result.json").exists(), where
    rerun = run(command(tmp_path / "b"))
    assert rerun.returncode == 0 and "resumed the search" in rerun.stdout + rerun.stderr, where
    for name in ("pareto.csv", "arch.yaml", "latency_stats.json"):
        assert (a / name).read_text() == (b / name).read_text(), (name, where)
    again = json.loads((b / "search_result.json").read_text())["metrics"]
    assert {**result, "search_time": 0} == {**again, "search_time": 0}, where


@pytest.mark.parametrize("override,message", [
    ("nas.search.spos.optuna_nsga2.population=1", "nas.search.spos.optuna_nsga2: need population >= 2"),
    ("nas.search.spos.strategy=grid", "nas.search.spos.grid.max_archs: the space has 15,625 architectures, more "
                                      "than the 10,000 a grid scores"),
])
def test_sampler_settings_that_cannot_work_exit_2_with_one_message_before_pretraining(tmp_path, override, message):
    out = run(command(tmp_path, override))
    assert out.returncode == 2, out.stdout[-2000:] + out.stderr[-2000:]
    assert message in out.stderr and "Traceback" not in out.stderr + out.stdout
    assert len([line for line in out.stderr.splitlines() if line.startswith("archnas: error")]) == 1
    assert not (tmp_path / "sp" / "pretrain").exists(), "judged before the supernet is pretrained"


def test_a_sampler_plugin_of_one_module_runs_through_the_archnas_command(tmp_path):
    """tests/fixtures/plugins/cheapest_first.py, loaded with --import: its name is a strategy, and
    the search scores what it proposes (the 12 cheapest architectures by multiply-adds, in order)."""
    plugins = REPO / "tests" / "fixtures" / "plugins"
    env = {**ENV, "PYTHONPATH": os.pathsep.join([str(plugins), str(REPO)])}
    cmd = [*command(tmp_path, "nas.search.spos.strategy=cheapest_first"), "--import", "cheapest_first"]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    search = tmp_path / "sp" / "search"
    macs = [float(r["macs"]) for r in csv.DictReader((search / "pareto.csv").open())]
    space_min = json.loads((search / "latency_stats.json").read_text())["macs"]["min"]
    assert len(macs) == 12 and macs == sorted(macs) and macs[0] == space_min
