"""Named stages: a plugin's stage (tests/fixtures/plugins/onnx_check.py, one module) runs after the
eval with its own folder, marker, section (`nas.onnx_check`) and `result.json` entry, and leaves the
eval's entry byte-identical; `--stages`, `--skip`, `--no-search` and `--no-eval` pick the stages that
run, reusing the finished results the picked ones read; a stage the recipe lacks is one usage error.

One tiny experiment (search and eval, onnx_check skipped) is made once through the `archnas` command;
every test reruns a copy of it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from archnas.cli import main
from archnas.export.onnx import ort_session
from archnas.model.model_file import load_model_file

REPO = Path(__file__).resolve().parents[1]
PLUGINS = REPO / "tests" / "fixtures" / "plugins"
TINY = str(REPO / "tests" / "fixtures" / "confs" / "tiny_darts.yaml")
BASE = ["common.tensorboard=false", "common.log_every_steps=0", "nas.search.trainer.bilevel_order=first",
        "nas.search.trainer.epochs=1", "nas.eval.trainer.epochs=1", "nas.extra_stages=[onnx_check]"]


def archnas(root: Path, *extra: str) -> subprocess.CompletedProcess:
    """The `archnas` command on the experiment `root/tiny`, with the onnx_check stage's plugin."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(PLUGINS)]), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "archnas", "--import", "onnx_check", "--config", TINY, "--exp-name", "tiny",
               f"common.results_dir={root}", f"common.cache_dir={root.parent / 'cache'}", *BASE, *extra]
    return subprocess.run(command, capture_output=True, text=True, env=env, cwd=root.parent, timeout=600)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def result(exp: Path) -> dict:
    return json.loads((exp / "result.json").read_text())


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """results/ holding tiny/ with search and eval finished and the onnx_check skipped (`--skip onnx_check`)."""
    root = tmp_path_factory.mktemp("stages") / "results"
    out = archnas(root, "--skip", "onnx_check")
    assert out.returncode == 0, out.stderr[-3000:]
    return root


@pytest.fixture
def exp(finished: Path, tmp_path: Path) -> Path:
    root = tmp_path / "results"
    shutil.copytree(finished, root)
    return root / "tiny"


def test_skip_leaves_the_stage_out(finished):
    exp = finished / "tiny"
    assert list(result(exp)) == ["algorithm", "search", "eval", "plot"]
    assert not (exp / "onnx_check").exists()
    assert (exp / "search" / "search_result.json").is_file() and (exp / "eval" / "metrics.json").is_file()


def test_export_runs_after_eval_and_leaves_the_eval_entry_byte_identical(exp):
    before = result(exp)
    eval_marker = digest(exp / "eval" / "metrics.json")
    out = archnas(exp.parent)
    assert out.returncode == 0, out.stderr[-3000:]
    after = result(exp)
    assert list(after) == ["algorithm", "search", "eval", "onnx_check", "plot"]
    assert json.dumps(after["eval"]) == json.dumps(before["eval"])
    assert digest(exp / "eval" / "metrics.json") == eval_marker  # reused, not rerun
    export = after["onnx_check"]
    assert export["format"] == "onnx" and export["test_top1"] == before["eval"]["test_top1"]
    assert export["params"] == before["eval"]["params"] and export["peak_memory"] > 0
    # the stage's own marker, recording its own section, and an ONNX graph that computes the eval's model
    marker = json.loads((exp / "onnx_check" / "export.json").read_text())
    assert marker["config"]["nas"] == {"algo": "darts", "onnx_check": {"model": "model_last.pt", "format": "onnx"}}
    trained = load_model_file(exp / "eval" / "model_last.pt")
    images = torch.randint(0, 256, (2, *trained.required_spec().shape), dtype=torch.uint8)
    session = ort_session((exp / "onnx_check" / "model.onnx").read_bytes(), threads=1)
    (logits,) = session.run(None, {"input": trained.preprocess(images).numpy()})
    torch.testing.assert_close(torch.from_numpy(logits), trained.logits(images), rtol=1e-4, atol=1e-5)
    assert "darts search, eval, onnx_check and plot finished" in out.stderr + out.stdout


@pytest.mark.slow
def test_the_stage_s_section_shapes_it(exp):
    """Another `nas.onnx_check.format` is another result: a finished export is refused, not reused."""
    out = archnas(exp.parent, "--stages", "onnx_check")
    assert out.returncode == 0, out.stderr[-3000:]
    refused = archnas(exp.parent, "nas.onnx_check.format=json")
    line = refused.stderr.strip().splitlines()[-1]
    assert refused.returncode == 2 and "nas.onnx_check.format" in line
    assert "export.json records a finished onnx_check phase" in line
    assert json.loads((exp / "onnx_check" / "export.json").read_text())["format"] == "onnx"


@pytest.mark.slow
def test_stages_eval_runs_only_the_eval_reusing_the_finished_search(exp):
    search = {p.name: digest(p) for p in (exp / "search").iterdir() if p.is_file()}
    shutil.rmtree(exp / "eval")
    out = archnas(exp.parent, "--stages", "eval")
    assert out.returncode == 0, out.stderr[-3000:]
    assert list(result(exp)) == ["algorithm", "eval"]
    assert (exp / "eval" / "metrics.json").is_file() and not (exp / "onnx_check").exists()
    assert {p.name: digest(p) for p in (exp / "search").iterdir() if p.is_file()} == search  # read, not run
    cells = json.loads((exp / "eval" / "metrics.json").read_text())
    assert cells["test_top1"] == result(exp)["eval"]["test_top1"]


def test_a_stage_whose_input_has_not_finished_says_so(exp):
    (exp / "eval" / "metrics.json").unlink()  # an eval that was interrupted
    out = archnas(exp.parent, "--stages", "onnx_check")
    assert out.returncode == 2 and out.stderr.strip().splitlines()[-1].startswith(
        "archnas: error: onnx_check: there is no finished eval in"), out.stderr[-3000:]
    assert not (exp / "onnx_check").exists()


def test_no_eval_leaves_out_only_the_stages_of_nas_eval(exp):
    """--no-eval skips the eval (section nas.eval), not a stage of its own section that reads it:
    the onnx_check runs on the finished eval, which is read back, never rerun."""
    eval_marker = digest(exp / "eval" / "metrics.json")
    out = archnas(exp.parent, "--no-eval")
    assert out.returncode == 0, out.stderr[-3000:]
    assert list(result(exp)) == ["algorithm", "search", "onnx_check", "plot"]
    assert (exp / "onnx_check" / "model.onnx").is_file() and digest(exp / "eval" / "metrics.json") == eval_marker


@pytest.fixture
def export_registered(monkeypatch):
    """The plugin imported in this process, and gone from the registries and modules afterwards."""
    from archnas.config import schema
    from archnas.nas import registry

    monkeypatch.setattr(registry, "_STAGES", dict(registry._STAGES))
    monkeypatch.setattr(schema, "_STAGE_SECTIONS", dict(schema._STAGE_SECTIONS))
    monkeypatch.syspath_prepend(str(PLUGINS))
    sys.modules.pop("onnx_check", None)
    yield
    sys.modules.pop("onnx_check", None)


@pytest.mark.parametrize("flags, message", [
    (["--stages", "eval,exprt"], "--stages: no stage named 'exprt'; the stages of darts are search, eval, onnx_check, plot"),
    (["--skip", "ranking"], "--skip: no stage named 'ranking'; the stages of darts are search, eval, onnx_check, plot"),
    (["nas.extra_stages=[onnx_check,onnx_check]"], "nas.extra_stages: 'onnx_check' is named twice or is already a "
                                                   "stage of darts (search, eval)"),
    (["nas.onnx_check.formt=json"], "unknown config key 'nas.onnx_check.formt'"),
    (["--no-search", "--no-eval", "--skip", "onnx_check"],
     "--skip onnx_check --no-search --no-eval: that leaves none of the stages of darts (search, eval, onnx_check, plot), so "
     "nothing would run"),
])
def test_a_stage_the_recipe_lacks_is_one_usage_error(tmp_path, capsys, export_registered, flags, message):
    code = main(["--import", "onnx_check", "--config", TINY, f"common.results_dir={tmp_path}", *BASE, *flags])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("archnas: error: ") and message in err[0], err
    assert not any(tmp_path.iterdir())


def test_algos_check_stage_names_against_every_recipe(tmp_path, capsys):
    assert main(["--algos", "darts,manual", "--stages", "pretrain", f"common.results_dir={tmp_path}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["archnas: error: --stages: no stage named 'pretrain'; the stages of darts, manual are search, eval, plot"]
    assert not tmp_path.exists() or not any(tmp_path.iterdir())
    assert main(["--algos", "manual", "--skip", "eval", f"common.results_dir={tmp_path}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["archnas: error: --algos with --skip eval: that leaves none of the stages (eval, plot) to run, so nothing "
                   "would run; drop one of them"]


def test_register_stage_refuses_a_taken_name_or_no_section(export_registered):
    from archnas.nas.phase import Phase
    from archnas.nas.registry import register_stage

    for name, section in (("eval", "nas.eval"), ("algorithm", "nas.eval"), ("plot", "")):
        cls = type("S", (Phase,), {"name": name, "section_key": section})
        with pytest.raises(ValueError, match=repr(name)):
            register_stage(cls)
