"""DEVELOPING's "A space" recipe, backed by its fixture: tests/fixtures/plugins/my_space.py (a user's
model with layer, input and value choices and a Repeat) searched and retrained through the `archnas`
command as a plugin factory, with darts and with spos."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
PLUGINS = REPO / "tests" / "fixtures" / "plugins"
TINY = ["common.tensorboard=false", "dataset.limit_train=200", "dataset.limit_test=100",
        "nas.search.space={factory: 'my_space:build', width: 4}", "nas.search.loader.train_batch=40",
        "nas.search.trainer.epochs=1", "nas.eval.loader.train_batch=40", "nas.eval.trainer.epochs=1"]


def run(tmp_path: Path, config: str, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(PLUGINS), str(REPO), os.environ.get("PYTHONPATH")]))}
    cmd = [sys.executable, "-m", "archnas", "--import", "my_space", "--config", str(REPO / "confs" / config),
           "--exp-name", "mine", f"common.results_dir={tmp_path}", *TINY, *extra]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=600)


@pytest.mark.parametrize("config, extra", [
    ("darts.yaml", ()),
    ("spos_nb201.yaml", ("nas.search.spos.evolution={population: 4, parents: 2, mutations: 2, crossovers: 2, "
                         "generations: 2}", "nas.search.spos.bn_recalibration.batches=1")),
])
def test_a_plugin_space_is_searched_and_retrained(tmp_path: Path, config: str, extra: tuple[str, ...]) -> None:
    out = run(tmp_path, config, *extra)
    assert out.returncode == 0, out.stderr[-3000:]
    exp = tmp_path / "mine"
    arch = yaml.safe_load((exp / "search" / "arch.yaml").read_text())["arch"]
    assert {"width", "depth", "block0", "skip0"} <= set(arch)
    retrained = yaml.safe_load((exp / "eval" / "arch.yaml").read_text())["arch"]
    assert retrained and all(arch[label] == choice for label, choice in retrained.items())  # the searched one
    result = json.loads((exp / "result.json").read_text())
    assert result["eval"]["params"] > 0 and 0.0 <= result["eval"]["test_top1"] <= 1.0
