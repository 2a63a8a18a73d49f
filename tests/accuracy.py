"""The test accuracy a finished experiment reports, recomputed from its files: the eval config it
recorded, its model_last.pt and the test split, so a test can check the number rather than its range."""

from __future__ import annotations

from pathlib import Path

import torch

from archnas.config import load_config
from archnas.data import build_data
from archnas.model.model_file import load_model_file


def recomputed_test_top1(exp: Path) -> float:
    conf = load_config([str(exp / "eval" / "config.yaml")])
    data = build_data(conf.dataset, conf.nas.eval.loader, seed=conf.common.seed, device=torch.device("cpu"),
                      cache_dir=conf.common.cache_dir)
    model = load_model_file(exp / "eval" / "model_last.pt").model
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for images, labels in data.loader("test", training=False):
            out = model(images)
            logits = out[0] if isinstance(out, tuple) else out
            correct += int((logits.argmax(1) == labels).sum())
            total += len(labels)
    return correct / total
