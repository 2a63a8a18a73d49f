"""`archnas export` and the export stage: the final network of a `darts` result (DARTS cells) and of
a module-space result (`darts` over a small MobileNet space) in the four formats, each within 1e-4
of the trained network's logits on test images; the `pt` and `py` files run in a Python where
archnas cannot be imported; the stage runs at the end of an experiment that names it and
`--skip export` leaves it out; a parity failure is refused with nothing written.
(Unfinished runs, unknown formats and missing folders are rows of tests/test_bad_input.py.)
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from archnas.cli import main
from archnas.config import load_config
from archnas.export import formats
from archnas.export.network import Logits, parity_images
from archnas.model.model_file import load_model_file

REPO = Path(__file__).resolve().parents[1]
QUICK = ["common.tensorboard=false", "common.log_every_steps=0", "dataset.limit_train=160", "dataset.limit_test=80",
         "nas.search.loader.train_batch=40", "nas.eval.loader.train_batch=40", "nas.search.trainer.epochs=1",
         "nas.eval.trainer.epochs=1"]
CELLS = [str(REPO / "tests" / "fixtures" / "confs" / "tiny_darts.yaml"), "nas.search.trainer.bilevel_order=first"]
MOBILE = [str(REPO / "confs" / "darts_nb201.yaml"),
          "nas.search.space={name: mobilenet, search_ops: [MIB_k=3_t=3, MIB_k=5_t=3, identity], "
          "blocks_out_channels: [8, 16], blocks_count: [1, 2], blocks_stride: [1, 2], stem_channels: 8, "
          "head_channels: 16}"]
ENOT = [str(REPO / "confs" / "enot_mobilenet.yaml"),
        "nas.search.space={name: mobilenet, search_ops: [MIB_k=3_t=3, MIB_k=5_t=3, identity], "
        "blocks_out_channels: [8, 16], blocks_count: [1, 2], blocks_stride: [1, 2], stem_channels: 8, "
        "head_channels: 16}", "nas.search.enot.epochs=1", "nas.search.enot.bn_tune_batches=1",
        "nas.search.enot.bn_validation_tune_batches=1", "nas.search.cost.max_macs=200000"]
FINAL = {"cells": "eval", "mobile": "eval", "enot": "tune"}  # the stage whose network is exported
ALL = "onnx,torchscript,pt,py"
FILES = {"onnx": ["model.onnx"], "torchscript": ["model.torchscript"], "pt": ["model.pt2"],
         "py": ["model.py", "weights.pt"]}

pytestmark = pytest.mark.usefixtures("one_thread")

# What runs with archnas out of reach: `sys.modules["archnas"] = None` makes every import of it fail,
# and the interpreter runs isolated (-I: no PYTHONPATH, no user site) from a folder without it.
STANDALONE = """
import sys
sys.modules["archnas"] = None
import torch
try:
    import archnas
except ImportError:
    pass
else:
    raise SystemExit("archnas is importable")
x = torch.load(sys.argv[1], weights_only=True)
out = {}
for folder in sys.argv[2:]:
    sys.path.insert(0, folder + "/py")
    import model
    with torch.no_grad():
        out[folder] = {"py": model.load()(x), "pt": torch.export.load(folder + "/pt/model.pt2").module()(x),
                       "torchscript": torch.jit.load(folder + "/torchscript/model.torchscript")(x)}
    sys.path.pop(0)
    del sys.modules["model"]
torch.save(out, sys.argv[1] + ".out")
"""


def digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def run(config: list[str], results: Path, name: str, *extra: str) -> Path:
    code = main(["--config", config[0], f"common.results_dir={results}", "--exp-name", name, *config[1:], *QUICK,
                 *extra])
    assert code == 0
    return results / name


@pytest.fixture(scope="module")
def experiments(tmp_path_factory) -> dict[str, Path]:
    """A darts result on DARTS cells whose config ends with the export stage (py), one on a
    MobileNet space run with the stage named but skipped (`--skip export`), and an enot result
    (its final network is the tune stage's)."""
    results = tmp_path_factory.mktemp("export")
    cells = run(CELLS, results, "cells", "nas.extra_stages=[export]", "nas.export.formats=[py]")
    mobile = run(MOBILE, results, "mobile", "nas.extra_stages=[export]", "--skip", "export")
    enot = run(ENOT, results, "enot")
    return {"cells": cells, "mobile": mobile, "enot": enot}


@pytest.fixture(scope="module")
def exported(experiments, tmp_path_factory) -> dict[str, tuple[Path, list[str]]]:
    """Both results exported in every format by `archnas export`: the folder and the printed lines."""
    done = {}
    for which, exp in experiments.items():
        out, printed = tmp_path_factory.mktemp(f"exported_{which}"), io.StringIO()
        with contextlib.redirect_stdout(printed):
            assert main(["export", str(exp), "--format", ALL, "--out", str(out)]) == 0
        done[which] = (out, printed.getvalue().strip().splitlines())
    return done


def test_the_stage_ends_the_experiment_and_skip_leaves_it_out(experiments):
    cells, mobile = experiments["cells"], experiments["mobile"]
    result = json.loads((cells / "result.json").read_text())
    assert list(result) == ["algorithm", "search", "eval", "export", "plot"]
    stage = result["export"]
    assert stage["network"] == "eval/model_last.pt" and list(stage["formats"]) == ["py"]
    assert stage["formats"]["py"]["max_abs_diff"] <= 1e-4 and stage["images"] == 16
    bundle = json.loads((cells / "export" / "py" / "bundle.json").read_text())
    assert bundle["parity"]["max_abs_diff"] == stage["formats"]["py"]["max_abs_diff"]
    assert json.loads((cells / "export" / "export.json").read_text())["config"]["nas"]["export"] == \
        {"formats": ["py"], "images": 16}
    assert list(json.loads((mobile / "result.json").read_text())) == ["algorithm", "search", "eval", "plot"]
    assert not (mobile / "export").exists()


@pytest.mark.slow
@pytest.mark.parametrize("which", ["cells", "mobile", "enot"])
def test_every_format_matches_the_trained_network(experiments, exported, which):
    exp = experiments[which]
    out, lines = exported[which]
    stage = FINAL[which]
    assert lines[0] == f"archnas export: {stage}/model_last.pt of {exp}"
    eval_metrics = json.loads((exp / stage / "metrics.json").read_text())
    for name, line in zip(ALL.split(","), lines[1:], strict=True):
        bundle = json.loads((out / name / "bundle.json").read_text())
        diff = bundle["parity"]["max_abs_diff"]
        print(f"{which} {name}: max |logit difference| {diff:.3g}")
        assert line.startswith(f"{name}: {out / name} (max |logit difference| {diff:.3g} over 16 test images")
        assert 0 <= diff <= 1e-4 and bundle["parity"]["images"] == 16 and bundle["parity"]["split"] == "test"
        assert sorted(p.name for p in (out / name).iterdir()) == sorted([*FILES[name], "bundle.json"])
        assert bundle["format"] == name and bundle["files"] == FILES[name]
        assert bundle["cost"]["params"] == eval_metrics["params"] and bundle["cost"]["macs"] == eval_metrics["macs"]
        assert bundle["metrics"]["test_top1"] == eval_metrics["test_top1"] and bundle["stage"] == stage
        assert bundle["versions"]["torch"] == torch.__version__ and "archnas" in bundle["versions"]
        assert "git_commit" in bundle and bundle["config"]["nas"]["algo"] == ("enot" if which == "enot" else "darts")
        assert bundle["input"]["shape"] == [1, 8, 8] and len(bundle["classes"]) == 10
    arch = json.loads((out / "onnx" / "bundle.json").read_text())["architecture"]
    if which == "cells":
        assert arch["kind"] == "cells" and arch["genotype"] == (exp / "search" / "genotype.txt").read_text().strip()
    else:
        assert arch["kind"] == "modules" and arch["name"] == "mobilenet"
        assert arch["arch"] == json.loads((exp / "search" / "arch.json").read_text())["arch"]
    assert "onnxruntime" in json.loads((out / "onnx" / "bundle.json").read_text())["versions"]


@pytest.mark.slow
def test_pt_and_py_run_without_archnas(experiments, exported, tmp_path):
    """Both results' pt and py files (and the TorchScript one) run in a Python that cannot import
    archnas: the same logits as the trained network's, within 1e-4."""
    folders = [exported[which][0] for which in experiments]
    conf = load_config([str(experiments["cells"] / "eval" / "config.yaml")], [])
    x = parity_images(conf, 16)
    torch.save(x, tmp_path / "x.pt")
    script = tmp_path / "elsewhere" / "standalone.py"
    script.parent.mkdir()
    script.write_text(STANDALONE)
    done = subprocess.run([sys.executable, "-I", str(script), str(tmp_path / "x.pt"), *map(str, folders)],
                          capture_output=True, text=True, cwd=script.parent, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    out = torch.load(tmp_path / "x.pt.out", weights_only=True)
    for which, folder in zip(experiments, folders):
        with torch.no_grad():
            trained = Logits(load_model_file(experiments[which] / FINAL[which] / "model_last.pt").model).eval()(x)
        for name in ("pt", "py", "torchscript"):
            diff = float((out[str(folder)][name] - trained).abs().max())
            print(f"{which} {name} without archnas: max |logit difference| {diff:.3g}")
            assert diff <= 1e-4


def test_a_parity_failure_is_refused_and_writes_nothing(experiments, monkeypatch, capsys):
    """An exported model off by 1e-3 (TorchScript's loader made to add it): exit 2, one line with
    the number, and the experiment's files unchanged (no export/torchscript folder)."""
    exp = experiments["cells"]
    real = formats.format_named("torchscript")
    off = dataclasses.replace(real, load=lambda files: (lambda x: real.load(files)(x) + 1e-3))
    monkeypatch.setattr(formats, "FORMATS", tuple(off if f is real else f for f in formats.FORMATS))
    before = digests(exp)
    capsys.readouterr()
    assert main(["export", str(exp), "--format", "torchscript"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("archnas: error: export --format torchscript: the exported model's "
                                               "logits differ from the trained network's by up to 0.001"), err
    assert "nothing was written" in err[0]
    assert digests(exp) == before
