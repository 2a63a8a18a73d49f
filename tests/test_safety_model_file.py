"""A model file is untrusted data (issue 22): it cannot make archnas import or call code of its
choosing, a damaged one is one `archnas: error:` line naming what is missing or mismatched (and
the archnas version that wrote it), and `archnas predict` refuses input the model would answer
with confident nonsense: float pixels outside [0, 1], NaN, a normalization of std 0, and images
over Pillow's decompression-bomb limit (also in an imagefolder dataset)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch
from PIL import Image

import archnas
from archnas.cli import main
from archnas.errors import UsageError
from archnas.hub.nb201 import all_nb201_archs
from archnas.descs import named_genotype
from archnas.model import Model, genotype_to_desc
from archnas.model.model_file import InputSpec, load_model_file, save_model_file
from archnas.space import create_space, fixed_arch
from archnas.utils.plugins import load_plugins
from test_bad_input import Harmful, cfg, imagefolder, run_row
from test_model import TINY as DESC_INFO, tiny_conf
from test_model_file import REPO

PLUGINS = REPO / "tests" / "fixtures" / "plugins"
ARCH = list(all_nb201_archs())[-1]  # every edge a convolution: the output depends on the input
BAD_FACTORIES = """
from logging import basicConfig  # a callable it imports: no file may name it through this plugin

def not_a_module(input_shape, n_classes):
    return 42

def raises(input_shape, n_classes):
    raise RuntimeError("the factory broke")
"""


def nb201_file(path: Path) -> Path:
    """A valid model file of the nb201 space (2 channels, 1 cell a stage) for [1, 8, 8] images, 3 classes."""
    with fixed_arch(ARCH):
        net = create_space("nb201", input_shape=(1, 8, 8), n_classes=3, C=2, N=1)
    space = {"name": "nb201", "factory": None, "params": {"C": 2, "N": 1}, "input_shape": [1, 8, 8],
             "n_classes": 3, "arch": ARCH}
    save_model_file(path, net, {"chosen_by": "test"}, input_spec=InputSpec((1, 8, 8), (0.5,), (0.25,)),
                    classes=["a", "b", "c"], dataset="test", space=space)
    return path


def desc_file(path: Path) -> Path:
    """A valid model file of a desc-built network (DARTS_V2, 3 tiny cells) for [3, 8, 8] images, 10 classes."""
    net = Model(genotype_to_desc(named_genotype("DARTS_V2"), tiny_conf(), DESC_INFO), droppath=False, affine=True)
    save_model_file(path, net, {}, input_spec=InputSpec((3, 8, 8), (0.5,) * 3, (0.25,) * 3),
                    classes=[str(i) for i in range(10)], dataset="test")
    return path


def edited(src: Path, dst: Path, edit: Callable[[dict[str, Any]], Any]) -> Path:
    """A copy of model file `src` with `edit` applied to its contents (still weights_only-loadable)."""
    data = torch.load(src, weights_only=True)
    edit(data)
    torch.save(data, dst)
    return dst


def as_factory(spec: str, **params: Any) -> Callable[[dict[str, Any]], None]:
    def edit(data: dict[str, Any]) -> None:
        data["space"].update(name=None, factory=spec, params=params)
    return edit


def one_error(err: str) -> str:
    """The one `archnas: error:` line of stderr (asserting there is exactly one, and no traceback)."""
    errors = [line for line in err.splitlines() if line.startswith("archnas: error:")]
    assert len(errors) == 1 and "Traceback" not in err, err[-3000:]
    return errors[0]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("safety")
    nb201_file(tmp / "nb201.pt")
    desc_file(tmp / "desc.pt")
    np.save(tmp / "gray.npy", np.random.default_rng(0).integers(0, 256, (4, 1, 8, 8), dtype=np.uint8))
    np.save(tmp / "rgb.npy", np.random.default_rng(0).integers(0, 256, (4, 3, 8, 8), dtype=np.uint8))
    return tmp


def test_valid_files_predict(files, capsys):
    for model, images in (("nb201.pt", "gray.npy"), ("desc.pt", "rgb.npy")):
        assert main(["predict", str(files / model), str(files / images)]) == 0, capsys.readouterr().err
        assert len(capsys.readouterr().out.splitlines()) == 4


@pytest.mark.timeout(120)
def test_a_model_file_cannot_import_or_call_code_of_its_choosing(files, tmp_path):
    """The acceptance case: `logging:basicConfig` told to empty a victim file, and a module not yet
    imported (its import would leave a marker file), through `archnas predict` and
    `archnas.load_model_file`, each in a fresh process: nothing imported, nothing changed, exit 2."""
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    marker = tmp_path / "imported.txt"
    (tmp_path / "evil_mod.py").write_text(f"open({str(marker)!r}, 'w').write('imported')\n\n"
                                          "def build(**kwargs):\n    raise SystemExit('ran')\n")
    logging_file = edited(files / "nb201.pt", tmp_path / "logging.pt",
                          as_factory("logging:basicConfig", filename=str(victim), filemode="w"))
    module_file = edited(files / "nb201.pt", tmp_path / "module.pt", as_factory("evil_mod:build"))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(tmp_path)]), "OMP_NUM_THREADS": "1"}
    script = textwrap.dedent("""
        import json, logging, sys
        import archnas
        from archnas.cli import main
        from archnas.errors import UsageError
        out = {"predict": [], "load": []}
        for path in sys.argv[2:]:
            out["predict"].append(main(["predict", path, sys.argv[1]]))
            try:
                archnas.load_model_file(path)
                out["load"].append("loaded")
            except UsageError as exc:
                out["load"].append(str(exc))
        out["imported"] = "evil_mod" in sys.modules
        out["logging_handlers"] = len(logging.getLogger().handlers)
        print(json.dumps(out))
    """)
    run = subprocess.run([sys.executable, "-c", script, str(files / "gray.npy"), str(logging_file), str(module_file)],
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=100)
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.splitlines()[-1])
    assert out["predict"] == [2, 2] and not out["imported"] and out["logging_handlers"] == 0, out
    assert "--import logging" in out["load"][0] and "--import evil_mod" in out["load"][1], out
    assert "Traceback" not in run.stderr and run.stderr.count("archnas: error:") == 2, run.stderr[-3000:]
    assert victim.read_text() == "precious\n" and not marker.exists()


def test_a_factory_resolves_only_in_a_loaded_plugin_and_only_to_its_own_functions(files, tmp_path, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(PLUGINS))
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "h4_bad_factories.py").write_text(BAD_FACTORIES)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    with fixed_arch({"width": 8, "depth": 1, "block0": "conv3", "skip0": 0, "block1": "pool", "skip1": 1}):
        from my_space import build
        net = build((1, 8, 8), 3)
    space = {"name": None, "factory": "my_space:build", "params": {}, "input_shape": [1, 8, 8], "n_classes": 3,
             "arch": {"width": 8, "depth": 1, "block0": "conv3", "skip0": 0, "block1": "pool", "skip1": 1}}
    mine = tmp_path / "my_space.pt"
    save_model_file(mine, net, {}, input_spec=InputSpec((1, 8, 8), (0.5,), (0.25,)), classes=["a", "b", "c"],
                    space=space)
    # the user's own plugin, loaded: its factory builds the network
    assert main(["predict", "--import", "my_space", str(mine), str(files / "gray.npy")]) == 0, capsys.readouterr().err
    assert load_model_file(mine, plugins=["my_space"]).predict(np.load(files / "gray.npy")).shape == (4,)
    # a loaded plugin's imported callable, and factories that do not make a module
    cases = [(as_factory("h4_bad_factories:basicConfig", filename=str(victim), filemode="w"),
              r"h4_bad_factories has no callable 'basicConfig' of its own"),
             (as_factory("h4_bad_factories:not_a_module"), r"returned a int, not an nn\.Module"),
             (as_factory("h4_bad_factories:raises"), r"failed at .*h4_bad_factories\.py:\d+: RuntimeError: the factory broke")]
    for i, (edit, message) in enumerate(cases):
        bad = edited(files / "nb201.pt", tmp_path / f"bad{i}.pt", edit)
        capsys.readouterr()
        assert main(["predict", "--import", "h4_bad_factories", str(bad), str(files / "gray.npy")]) == 2
        assert re.search(message, one_error(capsys.readouterr().err))
    assert victim.read_text() == "precious\n"


def test_a_plugin_space_names_its_plugin(files, tmp_path, monkeypatch):
    """A file of a space that a plugin registered records the plugin: without it, the message names it."""
    monkeypatch.syspath_prepend(str(PLUGINS))
    load_plugins(["my_plugin"])
    with fixed_arch({"act": "gelu"}):
        net = create_space("gelu_or_relu", input_shape=(1, 8, 8), n_classes=3, width=4)
    path = tmp_path / "plugin_space.pt"
    save_model_file(path, net, {}, input_spec=InputSpec((1, 8, 8), (0.5,), (0.25,)), classes=["a", "b", "c"],
                    space={"name": "gelu_or_relu", "factory": None, "params": {"width": 4}, "input_shape": [1, 8, 8],
                           "n_classes": 3, "arch": {"act": "gelu"}})
    assert load_model_file(path).predict(np.load(files / "gray.npy")).shape == (4,)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(PLUGINS)]), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-m", "archnas", "predict", str(path), str(files / "gray.npy")],
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=100)
    assert out.returncode == 2 and "--import my_plugin" in one_error(out.stderr)


def _pop(*keys: str) -> Callable[[dict[str, Any]], None]:
    def edit(data: dict[str, Any]) -> None:
        target = data
        for key in keys[:-1]:
            target = target[key]
        del target[keys[-1]]
    return edit


def _set(value: Any, *keys: str) -> Callable[[dict[str, Any]], None]:
    def edit(data: dict[str, Any]) -> None:
        target = data
        for key in keys[:-1]:
            target = target[key]
        target[keys[-1]] = value
    return edit


DAMAGED = [  # (id, the file it damages, the edit, what the error line must say)
    ("no mean", "desc.pt", _pop("input", "mean"), r"input has no mean"),
    ("no input shape", "nb201.pt", _pop("input", "shape"), r"input has no shape"),
    ("input shape the network does not take", "desc.pt",
     lambda d: d["input"].update(shape=[1, 8, 8], mean=[0.5], std=[0.25]),
     r"its network does not take the input the file records \(input\.shape \[1, 8, 8\]\)"),
    ("input shape and space disagree", "nb201.pt", _set([1, 16, 16], "input", "shape"),
     r"space\.input_shape \[1, 8, 8\] .* and input\.shape \[1, 16, 16\] .* disagree"),
    ("a missing weight", "desc.pt", lambda d: d["state_dict"].pop(sorted(d["state_dict"])[0]),
     r"state_dict does not fit the network the file describes: missing "),
    ("a wrongly shaped weight", "nb201.pt", _set(torch.zeros(5, 8), "state_dict", "classifier.weight"),
     r"wrong shape classifier\.weight \[5, 8\] \(the network's is \[3, 8\]\)"),
    ("an unexpected weight", "nb201.pt", _set(torch.zeros(1), "state_dict", "extra.weight"), r"unexpected extra\.weight"),
    ("fewer class names than outputs", "nb201.pt", _set(["a"], "classes"), r"classes: 1 class names for the network's 3 "),
    ("std 0", "nb201.pt", _set([0.0], "input", "std"), r"input\.std \[0\.0\]: .* must be positive"),
    ("a space without its input shape", "nb201.pt", _pop("space", "input_shape"), r"space has no input_shape"),
    ("an unregistered space", "nb201.pt", _set("nb999", "space", "name"), r"space 'nb999' is not registered"),
    ("a space's huge width", "nb201.pt", lambda d: d["space"]["params"].update(C=10 ** 6),
     r"wrong shape stem\.0\.weight \[2, 1, 3, 3\] \(the network's is \[1000000, 1, 3, 3\]\)"),
    ("a desc that is not one", "desc.pt", _set({"cells": 3}, "desc"), r"bad\.pt: desc: .*missing"),
    ("no network", "desc.pt", _pop("desc"), r"it holds no network"),
    ("weights that are not tensors", "nb201.pt", _set("weights", "state_dict"), r"state_dict: expected"),
]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name,source,edit,message", DAMAGED, ids=[d[0] for d in DAMAGED])
def test_a_damaged_model_file_is_one_message(files, tmp_path, capsys, name, source, edit, message):
    bad = edited(files / source, tmp_path / "bad.pt", edit)
    images = files / ("rgb.npy" if source == "desc.pt" else "gray.npy")
    capsys.readouterr()
    assert main(["predict", str(bad), str(images)]) == 2
    line = one_error(capsys.readouterr().err)
    assert re.search(message, line) and line.endswith(f"(written by archnas {archnas.__version__})"), line
    with pytest.raises(UsageError, match=message):
        load_model_file(bad)


def test_a_harmful_pickle_is_refused_in_one_line(files, tmp_path, capsys):
    harmful = tmp_path / "harmful.pt"
    torch.save({"format": "archnas-model", "version": 2, "x": Harmful()}, harmful)
    array = tmp_path / "harmful_images.pt"
    torch.save({"x": Harmful()}, array)
    for argv in ([str(harmful), str(files / "gray.npy")], [str(files / "nb201.pt"), str(array)]):
        assert main(["predict", *argv]) == 2
        line = one_error(capsys.readouterr().err)
        assert "posix.system" in line and "weights_only" not in line, line  # not torch's advice to load it anyway


@pytest.mark.parametrize("pixels,message", [
    (np.full((2, 1, 8, 8), 200.0, np.float32), r"values from 200 to 200: expected floats in \[0, 1\].*divide them by 255"),
    (np.full((2, 1, 8, 8), np.nan, np.float32), r"NaN or infinite values: expected floats in \[0, 1\]"),
    (np.full((2, 1, 8, 8), np.inf, np.float32), r"NaN or infinite values"),
    (np.full((2, 1, 8, 8), -0.5, np.float32), r"values from -0\.5 to -0\.5: expected floats in \[0, 1\]"),
], ids=["0..255 floats", "NaN", "inf", "negative"])
def test_predict_refuses_floats_outside_0_1(files, tmp_path, capsys, pixels, message):
    np.save(tmp_path / "images.npy", pixels)
    assert main(["predict", str(files / "nb201.pt"), str(tmp_path / "images.npy")]) == 2
    assert re.search(message, one_error(capsys.readouterr().err))
    with pytest.raises(UsageError, match=message):
        load_model_file(files / "nb201.pt").predict(pixels)
    ok = np.full((2, 1, 8, 8), 0.5, np.float32)  # floats in [0, 1] still predict
    assert load_model_file(files / "nb201.pt").predict(ok).shape == (2,)


@pytest.mark.parametrize("side", [40, 64], ids=["over the limit (Pillow warns)", "over twice the limit (Pillow raises)"])
def test_decompression_bombs_are_refused(files, tmp_path, capsys, monkeypatch, side):
    """Pillow's limit lowered to 1000 pixels: a 40x40 or 64x64 PNG (a few hundred bytes) stands for
    a 30000x30000 one, in predict and in an imagefolder dataset."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    bomb = tmp_path / "bomb.png"
    Image.fromarray(np.zeros((side, side), np.uint8)).save(bomb)
    assert main(["predict", str(files / "nb201.pt"), str(bomb)]) == 2
    assert re.search(r"bomb\.png: .*over Pillow's decompression-bomb limit of 1,000 pixels", one_error(capsys.readouterr().err))
    row = cfg("dataset.name=imagefolder", "dataset.dataroot={tmp}/data", "common.cache_dir={tmp}/cache",
              prepare=imagefolder({"a": 2, "b": 2}), match="")
    row.prepare(tmp_path)
    Image.fromarray(np.zeros((side, side, 3), np.uint8)).save(tmp_path / "data" / "train" / "b" / "1.png")
    code, err = run_row(row, tmp_path, capsys)
    assert code == 2 and re.search(r"b/1\.png: .*over Pillow's decompression-bomb limit", one_error(err))
