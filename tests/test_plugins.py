"""Plugins: a user's module, loaded with `--import` or from an `archnas.plugins` entry point,
registers ops, datasets, algorithms and spaces that the `archnas` command then runs; a plugin that
fails to import stops the command with one message and exit code 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from archnas.cli import main

REPO = Path(__file__).resolve().parents[1]
PLUGINS = REPO / "tests" / "fixtures" / "plugins"
DARTS = str(REPO / "confs" / "darts.yaml")
TINY = ["common.tensorboard=false", "common.log_every_steps=0", "nas.search.model_desc.n_cells=3",
        "nas.search.model_desc.n_nodes=2", "nas.search.model_desc.model_stems.init_node_ch=4",
        "nas.search.loader.train_batch=40", "nas.search.trainer.epochs=1", "nas.eval.model_desc.n_cells=3",
        "nas.eval.model_desc.model_stems.init_node_ch=4", "nas.eval.trainer.epochs=1"]


def test_an_imported_op_and_dataset_run_the_main_command_end_to_end(tmp_path, capsys, monkeypatch):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(PLUGINS)]), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "archnas", "--import", "my_plugin", "--config", DARTS, "dataset.name=stripes",
               "nas.search.model_desc.primitives=[conv_3x3_gelu, none]", f"common.results_dir={tmp_path}",
               "--exp-name", "plugin", *TINY]
    out = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    exp = tmp_path / "plugin"
    result = json.loads((exp / "result.json").read_text())
    assert "conv_3x3_gelu" in result["search"]["genotype"] and result["eval"]["test_images"] == 90
    best = torch.load(exp / "eval" / "model_best.pt", weights_only=True)
    assert best["dataset"] == "stripes" and best["classes"] == ["horizontal", "vertical", "diagonal"]
    # the model file names the plugin's op: predict needs the plugin too, and says so without it
    images = tmp_path / "images.npy"
    np.save(images, np.zeros((4, 8, 8), dtype=np.uint8))
    if "my_plugin" not in sys.modules:  # this process has not imported it: the op is unknown here
        assert main(["predict", str(exp / "eval" / "model_best.pt"), str(images)]) == 2
        assert "conv_3x3_gelu" in capsys.readouterr().err
    monkeypatch.syspath_prepend(str(PLUGINS))
    assert main(["predict", "--import", "my_plugin", str(exp / "eval" / "model_best.pt"), str(images)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4 and all(line.split("\t")[2] in ("horizontal", "vertical", "diagonal") for line in lines)
    # the plugin's space, named in a config
    assert main(["stats", "--import", "my_plugin", "--config", DARTS, "nas.search.space={name: gelu_or_relu, width: 4}",
                 "--space"]) == 0
    assert json.loads(capsys.readouterr().out)["macs"]["archs"] == 2  # act: gelu | relu


@pytest.fixture(autouse=True)
def registries_as_before(monkeypatch):
    """What a test's plugins register is gone after it: an algorithm's config section would
    otherwise be part of every later test's config, which Ray workers (without the plugin's
    temporary folder on their path) could not unpickle."""
    from archnas.config import schema
    from archnas.nas import registry

    monkeypatch.setattr(registry, "_ALGORITHMS", dict(registry._ALGORITHMS))
    monkeypatch.setattr(schema, "_SEARCH_SECTIONS", dict(schema._SEARCH_SECTIONS))


def _distribution(site: Path, module: str, body: str) -> None:
    """An installed distribution on `site` (what pip leaves): a module and its entry point."""
    (site / f"{module}.py").write_text(textwrap.dedent(body))
    info = site / f"{module}_dist-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}-dist\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[archnas.plugins]\n{module} = {module}\n")


def test_an_entry_point_plugin_is_loaded_without_a_flag(tmp_path, capsys, monkeypatch):
    args = ["--config", DARTS, "nas.algo=ep_test", "nas.search.ep_test.flag=true", "--print-config"]
    assert main(args) == 2  # not installed yet: its algorithm and section are unknown
    assert "nas.search.ep_test" in capsys.readouterr().err
    _distribution(tmp_path, "ep_test_plugin", """
        from dataclasses import dataclass

        from archnas.nas.registry import register_algorithm
        from archnas.nas.strategy import Strategy


        @dataclass
        class EpConf:
            flag: bool = False


        @register_algorithm
        class EpTest(Strategy):
            name = "ep_test"
            config_class = EpConf
        """)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main(args) == 0
    assert "algo: ep_test" in capsys.readouterr().out


def test_a_plugin_that_fails_to_import_is_one_message(tmp_path, capsys, monkeypatch):
    (tmp_path / "broken_plugin.py").write_text("import torch\n\nraise RuntimeError('the op table is missing')\n")
    (tmp_path / "needs_missing.py").write_text("import not_installed_anywhere  # noqa\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for module, message in (("broken_plugin", "RuntimeError: the op table is missing"),
                            ("no_such_plugin", "there is no module 'no_such_plugin'"),
                            ("needs_missing", "No module named 'not_installed_anywhere'")):
        assert main(["--import", module, "--config", DARTS, "--print-config"]) == 2
        captured = capsys.readouterr()
        assert captured.err.count("\n") == 1 and captured.err.startswith(f"archnas: error: --import {module}: ")
        assert message in captured.err and "Traceback" not in captured.err and not captured.out
    assert main(["stats", "--import", "broken_plugin", "--config", DARTS]) == 2  # subcommands load plugins too
    assert "broken_plugin.py:3" in capsys.readouterr().err  # where it failed
    _distribution(tmp_path, "ep_broken", "raise ValueError('bad plugin')\n")
    assert main(["--config", DARTS, "--print-config"]) == 2
    err = capsys.readouterr().err
    assert "entry point ep_broken = 'ep_broken' (archnas.plugins of ep_broken-dist)" in err and "bad plugin" in err



@pytest.mark.slow  # starting a local Ray takes 10-40 s on 2 cores
def test_ray_trial_workers_load_the_commands_plugins(tmp_path):
    """Random-search candidates on Ray train on the plugin's dataset with its op: each worker
    imports the `--import` modules of the command that started it."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(PLUGINS)]), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "archnas", "--import", "my_plugin", "--config", str(REPO / "confs" / "random.yaml"),
               "dataset.name=stripes", "nas.search.model_desc.primitives=[conv_3x3_gelu, skip_connect]",
               "common.ray.enabled=true", "common.ray.cpus_per_trial=1", "nas.search.random.n_archs=2",
               f"common.results_dir={tmp_path}", "--exp-name", "ray", *TINY]
    out = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert len(list((tmp_path / "ray" / "search").glob("candidate_*/trial.json"))) == 2  # both trained, on Ray
