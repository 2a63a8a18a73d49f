"""Model files are enough for inference: a fresh process with torch and archnas, and nothing of the
run's config or data pipeline, loads model_best.pt and gets the test predictions the eval recorded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from archnas.cli import main
from archnas.config import load_config
from archnas.data import build_data
from archnas.model.model_file import InputError, load_model_file

REPO = Path(__file__).resolve().parents[1]
TINY = str(REPO / "tests" / "fixtures" / "confs" / "tiny_darts.yaml")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
RUN = ["--config", TINY, "--no-search", "nas.eval.final_desc=DARTS_V2", "nas.eval.trainer.epochs=3",
       "dataset.limit_train=600"]


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    """A finished tiny eval, and its test split exported as raw uint8 pixels and labels."""
    tmp = tmp_path_factory.mktemp("model_file")
    assert main([*RUN, "--exp-name", "mf", f"common.results_dir={tmp}"]) == 0
    conf = load_config([TINY], [])  # the test split does not depend on limit_train
    test = build_data(conf.dataset, conf.nas.eval.loader, seed=conf.common.seed, device=torch.device("cpu"),
                      cache_dir=conf.common.cache_dir).parts["test"]
    np.save(tmp / "images.npy", test.images.numpy())
    np.save(tmp / "labels.npy", test.labels.numpy())
    return tmp / "mf" / "eval", tmp


def test_a_fresh_process_reproduces_the_recorded_test_predictions(evaluated):
    ev, tmp = evaluated
    recorded = json.loads((ev / "metrics.json").read_text())
    # one fresh process: the Python API (numpy, torch and archnas only), then the command line
    code = ("import sys, numpy as np, torch, archnas\n"
            "m = archnas.load_model_file(sys.argv[1])\n"
            "hits = (m.predict(np.load(sys.argv[2])) == torch.from_numpy(np.load(sys.argv[3]))).sum()\n"
            "print(int(hits), m.info['test_correct'], 'sklearn' in sys.modules)\n"
            "from archnas.cli import main\n"
            "sys.exit(main(['predict', sys.argv[4], sys.argv[2], '--labels', sys.argv[3], '--json']))\n")
    out = subprocess.run([sys.executable, "-c", code, str(ev / "model_last.pt"), str(tmp / "images.npy"),
                          str(tmp / "labels.npy"), str(ev / "model_best.pt")],
                         capture_output=True, text=True, env=ENV, cwd=tmp, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    api, cli = out.stdout.splitlines()
    hits, saved, sklearn = api.split()
    assert int(hits) == int(saved) == recorded["test_correct"] and sklearn == "False"  # no data pipeline
    result = json.loads(cli)
    assert result["images"] == recorded["test_images"] == 120
    assert result["correct"] == recorded["test_correct_best_val"] > 60  # well above chance (12 of 120)
    assert {r["class"] for r in result["predictions"]} <= {str(d) for d in range(10)}


def test_the_file_carries_what_inference_needs(evaluated):
    ev, _ = evaluated
    raw = torch.load(ev / "model_best.pt", weights_only=True)
    assert raw["version"] == 2 and raw["input"]["shape"] == [1, 8, 8] and raw["dataset"] == "digits"
    assert raw["classes"] == [str(d) for d in range(10)] and len(raw["input"]["mean"]) == len(raw["input"]["std"]) == 1
    conf = load_config([TINY], [])
    data = build_data(conf.dataset, conf.nas.eval.loader, seed=conf.common.seed, device=torch.device("cpu"),
                      cache_dir=conf.common.cache_dir)
    assert tuple(raw["input"]["mean"]) == data.info.mean and tuple(raw["input"]["std"]) == data.info.std
    assert {"chosen_by", "epoch", "val_top1", "test_top1", "test_correct", "test_images"} <= set(raw["info"])
    trained = load_model_file(ev / "model_best.pt")
    x = data.parts["test"].images[:5]
    # the same normalization the eval's loaders apply, for pixels and for floats in [0, 1]
    batch = next(iter(data.loader("test", training=False)))[0][:5]
    assert torch.equal(trained.preprocess(x), batch)
    assert torch.allclose(trained.preprocess(x.float() / 255), batch, atol=1e-6)
    assert torch.equal(trained.predict(x[0]), trained.predict(x)[:1])  # one [C, H, W] image
    assert torch.equal(trained.predict(x[:, 0]), trained.predict(x))  # [N, H, W] for one channel
    with pytest.raises(InputError, match=r"\[N, 1, 8, 8\]"):
        trained.predict(torch.zeros(2, 3, 8, 8, dtype=torch.uint8))


def test_predict_reads_image_files_and_reports_bad_input(evaluated, capsys):
    ev, tmp = evaluated
    images = np.load(tmp / "images.npy")[:3]
    paths = []
    for i, image in enumerate(images):
        paths.append(str(tmp / f"digit{i}.png"))
        Image.fromarray(image[0]).save(paths[-1])
    assert main(["predict", str(ev / "model_best.pt"), *paths, str(tmp / "images.npy")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 + 120 and lines[0].startswith(paths[0] + "\t")
    assert [line.split("\t")[1] for line in lines[:3]] == [line.split("\t")[1] for line in lines[3:6]]
    # bad input: one message, exit code 2
    np.save(tmp / "wrong.npy", np.zeros((2, 3, 8, 8), dtype=np.uint8))
    for argv, message in (([str(tmp / "wrong.npy")], "the model takes [N, 1, 8, 8]"),
                          ([str(tmp / "missing.png")], "no such file"),
                          ([paths[0], "--labels", str(tmp / "labels.npy")], "120 labels for 1 images"),
                          ([paths[0], "--batch", "0"], "--batch 0"), ([paths[0], "--bogus"], "--bogus")):
        assert main(["predict", str(ev / "model_best.pt"), *argv]) == 2
        err = capsys.readouterr().err
        assert err.count("archnas: error:") == 1 and message in err, err
    assert main(["predict", str(tmp / "images.npy"), paths[0]]) == 2
    assert "not a readable archnas model file" in capsys.readouterr().err
